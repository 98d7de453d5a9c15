"""Compiled layers on the RTL core (issue 10's acceptance): each PE kind x {uniform, CLAQ
mixed-width codebook} x {no outliers, outliers} x M in {1, 3}, on odd shapes (70 outputs, 300
inputs): the DRAM after the run (the output buffer and everything else) equals the functional
executor's bit for bit, and the core's cycles equal the cycle model's, instruction by
instruction. One Verilator build per config, every program in one run; a small layer per kind
under the Amaranth simulator as well. On a difference the message names the first instruction
whose events differ, both cycles, and the tokens it waited for.

Beside them, on the Amaranth simulator: the activation options (`pe.act_quant` token_group,
whose `vdeq`s carry `rowscale`, and smooth, whose program is token's) and saturating narrow
accumulators (`pe.saturate`), each against the executor."""

import dataclasses

import numpy as np
import pytest

from arch.config import PE_KINDS
from arch.isa import MATMUL_OPCODE, Opcode
from compiler.lower import lower, write_inputs
from quant.random_layer import codebook_layer, uniform_layer
from rtl.core import runs
from sim.executor import ExecError, Executor

from . import core_hdl, core_tb
from .cocotb_run import SimulatorMissing, hdl_simulators
from .configs import long_run, small
from .harness import seed

BUILT = [k for k in PE_KINDS if runs(MATMUL_OPCODE[k], small(k))]


def random_layer(rng, fmt, n, k, outliers):
    if fmt == "uniform":
        return uniform_layer(rng, n, k, 2, group_size=64, outliers=outliers)
    return codebook_layer(rng, n, k, (2, 3, 4), outliers=outliers)


def compiled(cfg, fmt, m, outliers, s, n=70, k=300):
    rng = np.random.default_rng(s)
    c = lower(random_layer(rng, fmt, n, k, outliers), cfg, m)
    write_inputs(c, rng.standard_normal((m, k)))
    return c.program


def check(cfg, name, prog, run=None):
    core_tb.assert_agrees(cfg, prog, run, name)


def test_the_core_drives_every_array():
    # the regression below covers every kind the core runs: all of them
    assert BUILT == list(PE_KINDS)


@pytest.mark.parametrize("kind", BUILT)
def test_a_small_compiled_layer_on_the_amaranth_simulator(kind):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small(kind)
    for fmt in ("uniform", "codebook"):
        prog = compiled(cfg, fmt, 2, 3, s, n=16, k=64)
        check(cfg, f"{kind} {fmt}", prog)


@pytest.mark.parametrize("fmt", ["codebook", pytest.param("uniform", marks=pytest.mark.slow)])
def test_token_group_layers_on_the_amaranth_simulator(fmt):
    """`pe.act_quant: token_group`: every k-step's `vdeq` multiplies by its own row scales
    (`rowscale`), and each k-step's outlier correction is scaled and folded in by two `vscale`s;
    bit- and cycle-equal on the small LUT core (the Verilator runs below add token_group
    programs on every kind)."""
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut", act_quant="token_group")
    prog = compiled(cfg, fmt, 3, 3, s, n=12, k=160)
    vdeqs = [i for i in prog.insns() if i.op is Opcode.VDEQ]
    assert vdeqs and all(i.args["rowscale"] for i in vdeqs)
    assert any(i.op is Opcode.VOUT for i in prog.insns())
    check(cfg, f"token_group {fmt} (seed={s})", prog)


def test_a_smooth_layer_is_the_token_program_on_the_core():
    """`pe.act_quant: smooth` asks nothing of the core: the host divides X by the migration
    scales before quantizing it, and the program is word for word the `token` one. The core
    runs it bit- and cycle-equal to the executor on X / s."""
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    rng = np.random.default_rng(s)
    layer = dataclasses.replace(random_layer(rng, "uniform", 12, 96, 2),
                                smooth=rng.uniform(0.5, 4, 96).astype(np.float32))
    token, smooth = small("lut"), small("lut", act_quant="smooth")
    c, ct = lower(layer, smooth, 2), lower(layer, token, 2)
    assert c.program.words == ct.program.words
    x = rng.standard_normal((2, 96)) * 3
    write_inputs(c, x)
    write_inputs(ct, x)
    assert not np.array_equal(c.program.read("x"), ct.program.read("x"))    # X / s, not X
    check(smooth, f"smooth (seed={s})", c.program)


@pytest.mark.parametrize("kind", [
    "lut", "bitserial",
    pytest.param("mac", marks=[pytest.mark.slow, pytest.mark.xfail(
        strict=True, reason="the MAC array clamps every PE row and every K fold's running sum "
        "in the accumulators, not the instruction's exact sum once")])])
def test_saturating_accumulators_on_the_amaranth_simulator(kind):
    """`pe.saturate` with int16 accumulators, a compiled layer on the core: the executor clamps
    each matmul's exact sum once, and so must the array. All codes are the largest (weight +3
    on the LUT's {-1, +1} planes, 3 on the bit-serial one's). Token row 0 is -1 on K's first
    half and +1 on its second, so its partial sums leave int16 half-way and come back (a clamp
    of every step would keep them); row 1 is -1 throughout, so its sums end past int16 and are
    clamped, at -2^15: the low bound, because the LUT path's halving (`vdeq` LUT) needs an even
    partial, and the executor refuses the odd 2^15 - 1."""
    n, k = 8, 256
    cfg = small(kind, acc_bits=16, saturate=True)
    layer = uniform_layer(np.random.default_rng(7), n, k, 2, group_size=k)    # one k-step
    layer.codes[:] = 3
    x = -np.ones((2, k))
    x[0, k // 2:] = 1
    # |partial| of row 0 half-way: 128 activations of 127 times 3, past int16's 2^15
    assert (k // 2) * 127 * 3 > 2**15
    c = lower(layer, cfg, 2)
    write_inputs(c, x)
    prog = c.program
    mms = [i for i in prog.insns() if i.op is MATMUL_OPCODE[kind]]
    assert mms and all(i.args["kgroups"] * cfg.pe.group == k for i in mms)   # one sums all K
    with pytest.raises(ExecError, match=r"accumulator must stay in int16"):
        Executor(cfg.replace(pe=dataclasses.replace(cfg.pe, saturate=False)), prog).run()
    check(cfg, f"{kind} saturate", prog)
    ys = {}
    for bits in (16, 32):
        ex = Executor(cfg.replace(pe=dataclasses.replace(cfg.pe, acc_bits=bits)), prog)
        ex.run()
        ys[bits] = dataclasses.replace(prog, dram=ex.dram).read("y")
    assert np.array_equal(ys[16][0], ys[32][0])         # row 0 came back: nothing clamped
    assert not np.any(ys[16][1] == ys[32][1])           # row 1: every output clamped


@pytest.mark.rtl
@pytest.mark.parametrize("simulator", hdl_simulators())
@pytest.mark.parametrize("kind", BUILT)
def test_compiled_layers_on_the_hdl_simulator(kind, simulator):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small(kind)
    programs = {f"{fmt}_m{m}_outliers{o}": compiled(cfg, fmt, m, o, s)
                for fmt in ("uniform", "codebook") for m in (1, 3) for o in (0, 11)}
    # token_group on the same build: the core's construction does not read pe.act_quant (its
    # vdeq runs `rowscale` whatever the config), only the compiler and the host do; a smaller
    # layer (two k-steps) keeps the run's added cycles to a few percent
    grouped = small(kind, act_quant="token_group")
    programs["token_group_codebook_m2_outliers11"] = compiled(grouped, "codebook", 2, 11, s,
                                                              n=23, k=160)
    try:
        results = core_hdl.run_programs(cfg, programs, simulator, seed=s)
    except SimulatorMissing as e:
        pytest.skip(str(e))
    for name, prog in programs.items():
        run_cfg = grouped if name.startswith("token_group") else cfg
        check(run_cfg, f"{kind} {name} (seed={s})", prog, results[name])


@pytest.mark.rtl
@pytest.mark.slow
def test_a_llama_shaped_slice_on_the_shipped_lut_core():
    """`make test-rtl-long`: 256 outputs x 688 inputs of a gate projection's shape pattern,
    mixed 2- and 4-bit CLAQ columns with outliers, at decode (M=1) on the shipped 2x64 LUT
    array, cycle-equal to the model."""
    if not long_run():
        pytest.skip("the long RTL regression: make test-rtl-long (BITLUT_RTL_LONG=1)")
    from arch import config
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = config.load("lut")
    rng = np.random.default_rng(s)
    layer = codebook_layer(rng, 256, 688, (2, 4), outliers=40)
    c = lower(layer, cfg, 1)
    write_inputs(c, rng.standard_normal((1, 688)))
    results = core_hdl.run_programs(cfg, {"slice": c.program}, "verilator", seed=s)
    check(cfg, f"llama slice (seed={s})", c.program, results["slice"])
