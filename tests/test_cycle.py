"""The SimPy cycle model: same outputs as the functional executor, every cycle accounted, within
10% of the closed-form per-unit roofline on bandwidth- and compute-bound layers, deadlocks
reported."""

import dataclasses

import numpy as np
import pytest

from arch import config, isa
from arch.program import Program
from compiler.lower import lower, write_inputs
from quant.random_layer import codebook_layer, uniform_layer
from sim.cycle import SimDeadlock, simulate
from sim.executor import Executor

CONFIGS = {name: config.load(name) for name in ("lut", "bitserial", "mac")}


def compiled_case(pe, fmt, m, seed=0, n=70, k=300):
    rng = np.random.default_rng(seed)
    if fmt == "uniform":
        layer = uniform_layer(rng, n, k, 2, group_size=64, outliers=11)
    else:
        layer = codebook_layer(rng, n, k, (2, 3, 4), outliers=11)
    c = lower(layer, CONFIGS[pe], m)
    write_inputs(c, rng.standard_normal((m, k)))
    return c


@pytest.mark.parametrize("pe", sorted(CONFIGS))
@pytest.mark.parametrize("fmt", ["uniform", "codebook"])
@pytest.mark.parametrize("m", [1, 6])
def test_outputs_equal_the_functional_executor(pe, fmt, m):
    cfg = CONFIGS[pe]
    c = compiled_case(pe, fmt, m)
    ex = Executor(cfg, c.program)
    ex.run()
    res, model = simulate(cfg, c.program)
    assert np.array_equal(model.executor.dram, ex.dram)
    # every cycle of every unit is accounted exactly once
    for name, u in res.units.items():
        assert u.busy + u.idle + sum(u.wait_token.values()) + sum(u.full_token.values()) \
            + u.wait_dma_slot == res.cycles, name
    assert sum(u.insns for u in res.units.values()) == len(c.program.words) - 1
    # the dispatcher issues one instruction per cycle, so no run is shorter than the program
    assert res.cycles >= len(c.program.words) - 1


def bound_case(kind):
    """A layer that is purely bandwidth-bound (decode, one token) or compute-bound (many)."""
    cfg = CONFIGS["lut"]
    rng = np.random.default_rng(3)
    # big enough that the pipeline's fill and drain (first DRAM latency, last store) are a
    # small part of the run, as in a real layer
    n, k = (2048, 2048) if kind == "bandwidth" else (1024, 1024)
    layer = uniform_layer(rng, n, k, 2, group_size=128)
    m = 1 if kind == "bandwidth" else 64
    c = lower(layer, cfg, m)
    return cfg, c, layer, m


@pytest.mark.parametrize("kind", ["bandwidth", "compute"])
def test_within_ten_percent_of_the_roofline(kind):
    from arch import roofline
    cfg, c, layer, m = bound_case(kind)
    n, k = layer.shape
    bound = roofline.layer_bound(cfg, m, n, k, layer.kind, layer.bits,
                                 roofline.stored_weight_bytes(layer))
    assert bound.bound == ("memory" if kind == "bandwidth" else "compute")
    res, _ = simulate(cfg, c.program, data=False)
    assert res.cycles >= bound.cycles                     # nothing beats the roofline
    assert res.cycles <= bound.cycles * 1.10, (res.cycles, bound.cycles)
    # and the compiler's per-unit estimate agrees with the simulation too
    assert abs(res.cycles - c.report["cycles"]) <= 0.10 * res.cycles


def test_unlimited_bandwidth_is_compute_only():
    cfg, c, _, _ = bound_case("bandwidth")
    slow, _ = simulate(cfg, c.program, data=False)
    fast, _ = simulate(cfg, c.program, data=False, unlimited_bandwidth=True)
    assert fast.cycles < slow.cycles
    assert fast.dram_busy == 0


def test_planted_deadlock_is_reported_not_hung():
    cfg = CONFIGS["lut"]
    c = compiled_case("lut", "uniform", 1)
    insns = c.program.insns()
    i = next(j for j, s in enumerate(insns) if s.op is isa.Opcode.LMMA)
    # the matmul waits for a store that never signals it
    bad = dataclasses.replace(insns[i], wait=insns[i].wait | 1 << isa.Unit.STORE.value)
    words = list(c.program.words)
    words[i] = isa.encode(bad)
    prog = Program(words, c.program.dram, c.program.symbols)
    with pytest.raises(SimDeadlock, match=rf"deadlock at cycle \d+: .*matmul: insn {i} \(lmma\) "
                       r"waits for a token from store"):
        simulate(cfg, prog, data=False)


def test_stall_log_adds_up_to_the_stall_counters():
    from collections import Counter
    cfg = CONFIGS["lut"]
    c = compiled_case("lut", "codebook", 2)
    res, model = simulate(cfg, c.program, trace=True)
    insns = c.program.insns()
    got = Counter()
    for i, cause, t0, t1 in model.stall_log:
        assert t1 > t0
        got[(insns[i].unit.name.lower(), cause)] += t1 - t0
    want = {(u, k): v for u, cnt in res.units.items() for k, v in cnt.stalls().items()}
    assert got == want and want
    # recording the stalls leaves the timing alone
    assert simulate(cfg, c.program)[0].cycles == res.cycles


def test_energy_counts_the_events():
    cfg = CONFIGS["lut"]
    c = compiled_case("lut", "uniform", 1)
    res, _ = simulate(cfg, c.program, data=False)
    e = cfg.energy
    assert res.events["dram_bytes"] == res.dram_bytes
    assert res.energy_pj(cfg) >= res.dram_bytes * e.dram_byte_pj
