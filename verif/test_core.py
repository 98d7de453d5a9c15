"""The RTL core against the functional executor (outputs, bit for bit) and the SimPy cycle model
(every instruction's dispatch, start, end and retire cycle, and the total), under the Amaranth
simulator: one micro-program per rule of docs/core.md, each also checked against the rule's
closed form, the error classes, and seeded random programs (BITLUT_SEED)."""

import numpy as np
import pytest

from arch import isa, timing
from arch.isa import Insn, Opcode, Unit
from bitlut.errors import UserError
from rtl.core import SUPPORTED, ErrCode
from sim.cycle import SimDeadlock, simulate
from sim.executor import ExecError, Executor

from . import core_hdl, core_tb
from . import core_programs as cp
from .cocotb_run import SimulatorMissing, hdl_simulators
from .configs import small
from .harness import seed

CFG = small("lut")
L, V, S = Unit.LOAD, Unit.VECTOR, Unit.STORE


def agree(prog, cfg=CFG):
    return core_tb.assert_agrees(cfg, prog)


def dma_cycles(rows, row_bytes):
    return timing.dram_transfer_cycles(CFG, timing.dram_bytes(CFG, rows, row_bytes))


# -- dispatch and the units --------------------------------------------------------------------
def micro(name):
    return agree(cp.MICRO[name](CFG))


def test_finish_alone_takes_no_cycle():
    rtl, _ = micro("finish")
    assert rtl.cycles == 0


def test_word_0_written_in_the_cycle_before_start():
    # Fetch reads word 0 ahead of the start (docs/core.md, Fetch and decode); a host write of
    # word 0 in the cycle before `start` must still be the word the core runs, not the
    # memory's old one (here 0, a `nop`).
    prog = cp.MICRO["token"](CFG)
    assert prog.words[0] != 0
    rtl = core_tb.run_core(CFG, prog, reverse_load=True)
    run, _ = core_tb.assert_agrees(CFG, prog, run=rtl)
    assert run.cycles == core_tb.run_core(CFG, prog).cycles


def test_a_saturating_mac_core_is_refused_in_one_line():
    # The MAC array clamps each K fold's running sum, not the exact sum once as the executor
    # does: a core that would mismatch is refused rather than built.
    from arch.config import ConfigError
    from rtl.core import Core
    cfg = small("mac", acc_bits=16, saturate=True)
    with pytest.raises(ConfigError, match=r"`pe.saturate` must be false for the RTL core's MAC "
                                          r"array .*, not true$") as e:
        Core(cfg)
    assert "\n" not in str(e.value)
    Core(small("mac", acc_bits=16))           # wrapping accumulators are fine


def test_nops_take_one_cycle_each():
    rtl, _ = micro("nops")
    assert rtl.cycles == 3


def test_one_vsum_and_back_to_back():
    lanes, depth = CFG.timing.vector_lanes, CFG.timing.vector_latency
    busy = 2 * -(-20 // lanes) + depth                # rows * ceil(cols / lanes) + depth
    rtl, log = micro("vsum")
    assert log[0] == {"dispatch": 0, "start": 1, "end": 1 + busy}
    rtl, log = micro("vsum_back_to_back")
    assert log[1]["start"] == log[0]["end"]           # no bubble
    assert rtl.cycles == 1 + 2 * busy


def test_one_load():
    rtl, log = micro("load")
    setup, latency = CFG.timing.dma_setup, CFG.dram_latency_cycles
    assert log[0]["end"] == 1 + setup
    assert log[0]["retire"] == 1 + setup + latency + dma_cycles(1, 64) - 1
    assert rtl.cycles == log[0]["retire"] + 1


def test_a_token_across_units():
    _, log = micro("token")
    assert log[1]["start"] == log[0]["retire"] + 1    # visible the cycle after the push
    assert log[2]["start"] == log[1]["end"]


def test_a_full_instruction_queue():
    depth = CFG.queues.insn_depth
    _, log = micro("queue_full")
    first = 1                                          # the vsum that waits for the load
    # vsums first .. first + depth - 1 fill the queue; the next is dispatched in the cycle the
    # head leaves (a full queue accepts in that cycle), the one after when the next leaves
    assert log[first + depth]["dispatch"] == log[first]["start"]
    assert log[first + depth + 1]["dispatch"] == log[first + 1]["start"]


def test_a_full_token_counter():
    depth = CFG.queues.token_depth
    _, log = micro("counter_full")
    # the (depth+1)-th vsum ends when the first store pops its token, not before
    last, first_store = log[1 + depth], log[1 + depth + 1]
    busy = timing.unit_cycles(CFG, cp.vsum(rows=1, cols=16))
    assert last["end"] > last["start"] + busy
    assert last["end"] == first_store["start"] + 1


def test_outstanding_plus_one_loads():
    _, log = micro("outstanding_plus_one")
    assert log[CFG.dram.outstanding]["start"] == log[0]["retire"] + 1      # the first slot frees


def test_a_load_and_a_store_in_the_same_cycle():
    _, log = micro("load_and_store_tie")
    assert log[1]["start"] == log[2]["start"]           # both commands in the same cycle
    # the load holds the port first, then the store
    assert log[2]["retire"] == log[1]["retire"] + dma_cycles(1, 8)


def test_a_long_load_then_a_short_one():
    _, log = micro("long_then_short")
    assert log[1]["retire"] == log[0]["retire"] + dma_cycles(1, 3)   # in order, after it


def test_unaligned_multi_row_load_and_store_round_trip():
    micro("unaligned_round_trip")


# -- errors: the core stops, with the code and the index ---------------------------------------
@pytest.mark.parametrize("name", list(cp.illegal_words()))
def test_illegal_words_stop_the_core(name):
    word = cp.illegal_words()[name]
    prog = cp.program([], words=[isa.encode(Insn(Opcode.NOP)), word])
    with pytest.raises(UserError, match=r"insn 1"):   # the decoder or the executor refuses it
        Executor(CFG, prog).run()
    rtl = core_tb.run(CFG, prog)
    assert (rtl.error, rtl.err_index) == (ErrCode.ILLEGAL, 1)


def test_an_extent_past_its_buffer_stops_the_core():
    cap = CFG.sram.bytes("act")
    prog = cp.program([cp.load(sram=cap - 32, row_bytes=64)])
    rtl = core_tb.run(CFG, prog)
    assert (rtl.error, rtl.err_index) == (ErrCode.RANGE, 0)
    with pytest.raises(ExecError, match="must lie inside the act buffer"):
        Executor(CFG, prog).run()


def test_running_past_the_end_stops_the_core():
    prog = cp.program([cp.vsum()], finish=False)
    rtl = core_tb.run(CFG, prog)
    assert (rtl.error, rtl.err_index) == (ErrCode.OVERRUN, 1)


def test_a_deadlock_stops_the_core():
    prog = cp.program([cp.vsum(wait=[L])])
    rtl = core_tb.run(CFG, prog)
    assert (rtl.error, rtl.err_index) == (ErrCode.DEADLOCK, 0)
    with pytest.raises(SimDeadlock):
        simulate(CFG, prog)


def test_opcodes_not_built_stop_the_core():
    """Every opcode the core does not build stops it with `unsupported` at that word. The
    decoder's test is one membership check, and each case is a whole simulation (about 12 s),
    so the block's nine (docs/block.md) are covered by their lowest and highest opcode and two
    more drawn with the printed seed."""
    missing = [op for op in Opcode if op not in SUPPORTED]
    assert set(SUPPORTED) | set(missing) == set(Opcode)
    if len(missing) > 4:
        s = seed()
        inner = missing[1:-1]
        drawn = np.random.default_rng(s).choice(len(inner), 2, replace=False)
        missing = [missing[0], missing[-1]] + [inner[i] for i in sorted(drawn)]
        print(f"seed={s} (BITLUT_SEED): {', '.join(op.name.lower() for op in missing)}")
    for op in missing:
        fields = {f.name: (1 if f.kind == "count" else 0) for f in isa.FORMATS[op]}
        word = isa.encode(Insn(op, fields))
        rtl = core_tb.run(CFG, cp.program([], words=[word]))
        assert (rtl.error, rtl.err_index) == (ErrCode.UNSUPPORTED, 0), op


# -- random programs -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(4))
def test_random_programs(case):
    s = seed() * 100 + case
    print(f"seed={s} (BITLUT_SEED={seed()}, case {case})")
    prog = cp.random_program(CFG, np.random.default_rng(s))
    agree(prog)


# -- the same programs on Verilator (and Icarus where installed), one build -------------------
@pytest.mark.rtl
@pytest.mark.parametrize("simulator", hdl_simulators())
def test_core_on_hdl_simulator(simulator):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cases = cp.cases(CFG, s)
    try:
        runs = core_hdl.run_programs(CFG, cases, simulator, seed=s)
    except SimulatorMissing as e:
        pytest.skip(str(e))
    assert set(runs) == set(cases)
    for name, prog in cases.items():
        core_tb.assert_agrees(CFG, prog, runs[name], f"{name} (seed={s})")


# -- `bitlut exec`: a user checks their own program ----------------------------------------------
def _exec(tmp_path, prog, *extra):
    import dataclasses

    import yaml

    from tests.conftest import run_cli
    cfg_path = tmp_path / "small_lut.yaml"
    raw = {k: v for k, v in dataclasses.asdict(CFG).items() if k != "source"}
    cfg_path.write_text(yaml.safe_dump(raw))
    path = tmp_path / "p.prog"
    prog.save(path)
    return run_cli("exec", path, "--arch", cfg_path, *extra)


def test_exec_command_agrees_on_a_program(tmp_path):
    r = _exec(tmp_path, cp.MICRO["token"](CFG), "--rtl", "amaranth", "--trace", tmp_path / "t.json")
    assert r.returncode == 0, r.stdout + r.stderr
    res, _ = simulate(CFG, cp.MICRO["token"](CFG))
    lines = r.stdout.splitlines()
    assert any("cycle model" in x and f"{res.cycles:,} cycles" in x for x in lines)
    assert any("RTL core (amaranth)" in x and f"{res.cycles:,} cycles" in x
               and "outputs equal" in x for x in lines)
    assert "first instruction whose timing differs: none" in r.stdout
    assert lines[-1] == "agree"
    # the trace: both runs side by side, the same spans on each (3 instructions, 2 of them DMA)
    import json
    trace = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    spans = {pid: sorted((e["name"], e["ts"], e["dur"]) for e in trace
                         if e["ph"] == "X" and e["pid"] == pid) for pid in (1, 2)}
    assert len(spans[1]) == 3 + 2 and spans[1] == spans[2]


def test_exec_command_fails_when_the_core_cannot_run_it(tmp_path):
    # the LUT core has no bit-serial array: it stops, and exec says so and exits 1
    fields = {f.name: (1 if f.kind == "count" else 0) for f in isa.FORMATS[Opcode.BSMM]}
    prog = cp.program([Insn(Opcode.BSMM, fields)])
    r = _exec(tmp_path, prog, "--rtl", "amaranth")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "stopped: unsupported at insn 0 (bsmm)" in r.stdout
    assert r.stdout.splitlines()[-1] == "DISAGREE"


def test_exec_command_reports_a_bad_program_in_one_line(tmp_path):
    r = _exec(tmp_path, cp.program([cp.vsum(wait=[L])]))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "deadlock" in r.stderr
