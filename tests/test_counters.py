"""One counter vocabulary (`arch.timing.COUNTERS`): what the functional executor counts running a
program, what the cycle model charges energy for, and what the compiler's estimate predicts are
the same numbers under the same names."""

from collections import Counter

import numpy as np
import pytest

from arch import config, isa, timing
from compiler.lower import lower, write_inputs
from quant.random_layer import codebook_layer, uniform_layer
from sim.cycle import simulate
from sim.executor import Executor

PE_WORK = ("lookups", "bitserial_steps", "macs")


@pytest.mark.parametrize("pe", ["lut", "bitserial", "mac"])
@pytest.mark.parametrize("fmt", ["uniform", "codebook"])
def test_executor_model_and_estimate_count_alike(pe, fmt):
    cfg = config.load(pe)
    rng = np.random.default_rng(5)
    if fmt == "uniform":
        layer = uniform_layer(rng, 90, 200, 2, group_size=64, outliers=3)
    else:
        layer = codebook_layer(rng, 90, 200, (2, 3, 4), outliers=3)
    c = lower(layer, cfg, 5)
    write_inputs(c, rng.standard_normal((5, 200)))
    stats = Executor(cfg, c.program).run()
    events = Counter()
    for insn in c.program.insns():
        events.update(timing.events(cfg, insn))
    assert set(events) <= set(timing.COUNTERS)
    for name in PE_WORK + ("table_entries",):
        assert events[name] == getattr(stats, name), name
    work = timing.MATMUL_COUNTER[isa.MATMUL_OPCODE[pe]]
    assert stats_nonzero(stats) == {work}
    assert c.report[work] == getattr(stats, work)
    res, _ = simulate(cfg, c.program, data=False)
    assert res.events == events
    # energy prices each counter by its own field of the energy table; a table entry's is
    # given for a 16-bit entry and scales with the config's entry width
    e = cfg.energy
    width = {"table_entries": cfg.table_entry_bits / 16}
    expect = sum(getattr(e, timing.ENERGY_FIELD[k]) * width.get(k, 1) * v
                 for k, v in events.items())
    assert res.energy_pj(cfg) == pytest.approx(
        expect + e.static_mw * 1e-3 * res.cycles * cfg.cycle_ns * 1e3)


def stats_nonzero(stats):
    return {name for name in PE_WORK if getattr(stats, name)}
