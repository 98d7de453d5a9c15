"""Compiled layers on the RTL core (issue 10's acceptance): each PE kind x {uniform, CLAQ
mixed-width codebook} x {no outliers, outliers} x M in {1, 3}, on odd shapes (70 outputs, 300
inputs): the DRAM after the run (the output buffer and everything else) equals the functional
executor's bit for bit, and the core's cycles equal the cycle model's, instruction by
instruction. One Verilator build per config, every program in one run; a small layer per kind
under the Amaranth simulator as well. On a difference the message names the first instruction
whose events differ, both cycles, and the tokens it waited for."""

import numpy as np
import pytest

from arch.config import PE_KINDS
from arch.isa import MATMUL_OPCODE
from compiler.lower import lower, write_inputs
from quant.random_layer import codebook_layer, uniform_layer
from rtl.core import runs

from . import core_hdl, core_tb
from .cocotb_run import SimulatorMissing, hdl_simulators
from .configs import long_run, small
from .harness import seed

BUILT = [k for k in PE_KINDS if runs(MATMUL_OPCODE[k], small(k))]


def compiled(cfg, fmt, m, outliers, s, n=70, k=300):
    rng = np.random.default_rng(s)
    if fmt == "uniform":
        layer = uniform_layer(rng, n, k, 2, group_size=64, outliers=outliers)
    else:
        layer = codebook_layer(rng, n, k, (2, 3, 4), outliers=outliers)
    c = lower(layer, cfg, m)
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


@pytest.mark.rtl
@pytest.mark.parametrize("simulator", hdl_simulators())
@pytest.mark.parametrize("kind", BUILT)
def test_compiled_layers_on_the_hdl_simulator(kind, simulator):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small(kind)
    programs = {f"{fmt}_m{m}_outliers{o}": compiled(cfg, fmt, m, o, s)
                for fmt in ("uniform", "codebook") for m in (1, 3) for o in (0, 11)}
    try:
        results = core_hdl.run_programs(cfg, programs, simulator, seed=s)
    except SimulatorMissing as e:
        pytest.skip(str(e))
    for name, prog in programs.items():
        check(cfg, f"{kind} {name} (seed={s})", prog, results[name])


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
