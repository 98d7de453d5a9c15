"""The FPGA shell (`rtl.shell`): its register map (`arch.regs`) and generated page, the AXI4-Lite
register block under the Amaranth simulator (every register, refusals, unmapped addresses,
random channel order and back-pressure, checked by `verif.shell_tb.LiteMaster`), programs
loaded, run and read back through the shell against `verif.axi_ram.AxiRam`, bus errors ending
in `ErrCode.BUS`, the soft reset, and (marker `rtl`) compiled layers through the shell on
Verilator with cocotbext-axi's AXI RAM and AXI4-Lite master (`verif/cocotb_shell.py`)."""

import dataclasses
import itertools
import json
import random
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from arch import isa, regs
from arch.config import PE_KINDS
from arch.program import Program
from arch.regs import ErrCode
from rtl.shell import Shell
from sim.executor import Executor

from . import shell_tb
from .cocotb_run import SimulatorMissing, build_and_run
from .configs import small
from .core_hdl import write_cases
from .harness import seed
from .shell_host import fields, fields_value
from .test_core_compiled import compiled

ROOT = Path(__file__).resolve().parent.parent
OKAY, SLVERR, DECERR = 0, 2, 3
DEPTH = 64


def test_docs_page_is_current():
    page = (ROOT / "docs" / "shell.md").read_text()
    assert page == regs.reference_markdown(), "run `bitlut shell-doc` to regenerate docs/shell.md"


def test_the_isa_hash_follows_the_field_table():
    assert regs.isa_hash() == regs.isa_hash(dict(isa.FORMATS), list(isa.HEADER))
    wider = {op: [dataclasses.replace(f, width=f.width + 1) if f.name == "rows" else f
                  for f in fields_] for op, fields_ in isa.FORMATS.items()}
    assert regs.isa_hash(wider) != regs.isa_hash()
    header = [dataclasses.replace(f, name=f.name + "_") for f in isa.HEADER]
    assert regs.isa_hash(header=header) != regs.isa_hash()


def test_the_registers_fit_the_window_and_each_other():
    spans = sorted(r.offset for r in regs.REGS)
    assert len(set(spans)) == len(spans) and spans[-1] < 1 << regs.ADDR_BITS
    for r in regs.REGS:
        bits = sorted((f.offset, f.offset + f.width) for f in r.fields or ())
        assert all(a[1] <= b[0] for a, b in zip(bits, bits[1:], strict=False)), r.name
        assert all(hi <= regs.DATA_BITS for _, hi in bits), r.name
    # the program word is covered by the PROG_DATA registers, nothing more
    assert len(regs.PROG_DATA) * regs.DATA_BITS == isa.WORD_BITS


def test_every_register_reads_and_writes():
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut")
    rng = random.Random(s)

    async def host_fn(h, peek):
        # read-only registers: what they must hold, from outside the shell's code
        want = {"id": int.from_bytes(b"blut", "big"), "version": regs.VERSION,
                "isa": regs.isa_hash(), "tag": zlib.crc32(cfg.tag.encode()),
                "prog_depth": DEPTH, "status": 0, "err_index": 0, "cycles": 0}
        for name, value in want.items():
            assert await h.read(name) == value, name
            await h.write(name, value ^ 1, expect=SLVERR)       # refused, unchanged
            assert await h.read(name) == value, name
        assert await h.read("ctrl") == 0                          # w1 reads as zero
        # read-write registers: random values back, byte strobes honoured
        limits = {"prog_len": DEPTH, "prog_addr": DEPTH - 1}
        for r in regs.REGS:
            if r.access != "rw":
                continue
            top = limits.get(r.name, (1 << regs.DATA_BITS) - 1)
            # a register of fields keeps their bits only; the others read 0
            keep = (sum(((1 << f.width) - 1) << f.offset for f in r.fields) if r.fields
                    else (1 << regs.DATA_BITS) - 1)
            a, b = rng.randint(0, top), rng.getrandbits(regs.DATA_BITS)
            await h.write(r.name, a)
            assert await h.read(r.name) == a & keep, r.name
            if r.name in limits:
                await h.write(r.name, top + 1, expect=SLVERR)
                assert await h.read(r.name) == a, r.name
                continue
            await h.write(r.name, b, strb=0b0110)
            merged = (a & 0xFF0000FF) | (b & 0x00FFFF00)
            assert await h.read(r.name) == merged & keep, r.name
        # outside the map: DECERR, reads 0
        mapped = {r.offset for r in regs.REGS}
        for addr in sorted({0x14, 0x18, 0x50, 0xFC} - mapped):
            assert await h._read(addr) == (0, DECERR)
            assert await h._write(addr, 1, 0xF) == DECERR
        return True

    assert shell_tb.run(cfg, host_fn, prog_depth=DEPTH, seed=s)[0]


def test_back_pressure_and_either_channel_order():
    # Stalls on every channel, both ways: AW and W come in random order with delays (the
    # master holds bready / rready low at random and checks valid and payload stay put).
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    rng = random.Random(s)
    values = [rng.getrandbits(regs.DATA_BITS) for _ in range(8)]

    async def host_fn(h, peek):
        for v in values:
            await h.write("dram_base", v)
            assert await h.read("dram_base") == v
        return True

    for stall in (0.0, 0.8):
        assert shell_tb.run(small("lut"), host_fn, prog_depth=DEPTH, seed=s, stall=stall)[0]


def _image(program, base):
    return b"\0" * base + bytes(program.dram)


def _expected(cfg, program):
    ex = Executor(cfg, program)
    ex.run()
    return ex.dram


@pytest.mark.slow
def test_a_compiled_layer_through_the_shell():
    # `make test-slow`: `make test` runs compiled layers through the shell on Verilator
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut")
    prog = compiled(cfg, "codebook", 2, 3, s, n=16, k=64)
    base = 4096 + 5            # an unaligned base: every row is realigned

    async def host_fn(h, peek):
        return await h.run_program(cfg, prog, base)

    out, ram = shell_tb.run(cfg, host_fn, _image(prog, base),
                            ram_bytes=base + len(prog.dram) + 4096, prog_depth=DEPTH, seed=s)
    print(f"through the shell: {out}")
    assert out.error is ErrCode.NONE, out
    got = ram.mem[base:base + len(prog.dram)]
    bad = np.flatnonzero(got != _expected(cfg, prog))
    assert bad.size == 0, f"{bad.size} bytes differ from the executor's, first at {bad[0]:#x}"
    assert ram.quiet


# Three one-burst loads, then two one-burst stores, each after its load: the n-th read burst
# is instruction n's and the n-th write burst instruction 3 + n's.
BUS_PROGRAM = """
load buf=act sram=0 dram=0 rows=1 row_bytes=16 dram_stride=16 signal=store
load buf=act sram=16 dram=64 rows=1 row_bytes=16 dram_stride=16 signal=store
load buf=act sram=32 dram=128 rows=1 row_bytes=16 dram_stride=16
store buf=act sram=0 dram=256 rows=1 row_bytes=16 dram_stride=16 wait=load
store buf=act sram=16 dram=320 rows=1 row_bytes=16 dram_stride=16 wait=load
finish
"""


@pytest.mark.parametrize("kind, n, index", [("read", 0, 0), ("read", 2, 2), ("write", 1, 4)])
def test_an_error_response_stops_the_core_with_bus(kind, n, index):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut")
    words = isa.assemble(BUS_PROGRAM, cfg)
    image = np.random.default_rng(s).integers(0, 256, 512, dtype=np.uint8)
    prog = Program(words, image, {})

    async def host_fn(h, peek):
        first = await h.run_program(cfg, prog, 0)
        again = await h.run()       # the error is gone: the same program runs to its end
        return first, again

    (first, again), ram = shell_tb.run(cfg, host_fn, bytes(image), prog_depth=DEPTH, seed=s,
                                       errors={(kind, n)})
    assert (first.error, first.err_index) == (ErrCode.BUS, index), first
    assert again.error is ErrCode.NONE, again
    # the second run stored the rows the first loads brought (sram 0 and 16)
    assert bytes(ram.mem[256:272]) == bytes(image[0:16])
    assert bytes(ram.mem[320:336]) == bytes(image[64:80])
    assert ram.quiet


def test_refusals_while_running_and_the_soft_reset():
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut")
    # long loads on a slow bus: the soft reset comes while bursts are in flight
    words = isa.assemble("load buf=act sram=0 dram=0 rows=32 row_bytes=64 dram_stride=64\n" * 4
                         + "finish\n", cfg)
    image = np.zeros(4096, np.uint8)
    prog = Program(words, image, {})

    async def host_fn(h, peek):
        await h.identify(cfg)
        await h.load(prog.words, 0)
        await h.write("ctrl", fields_value("ctrl", start=1))
        status = fields("status", await h.read("status"))
        assert status["running"] and not status["done"], status
        for name in ("prog_len", "prog_addr", "dram_base", regs.PROG_DATA[-1]):
            await h.write(name, 1, expect=SLVERR)
        await h.write("ctrl", fields_value("ctrl", start=1), expect=SLVERR)
        assert await h.read("prog_len") == len(prog.words)
        await h.write("ctrl", fields_value("ctrl", reset=1))
        for _ in range(200):
            status = fields("status", await h.read("status"))
            if not status["running"]:
                break
        assert status == {"running": 0, "done": 0, "error": 0}, status
        assert await h.read("cycles") == 0
        # the program and the registers survived the reset: it runs again, to its end
        return await h.run()

    out, ram = shell_tb.run(cfg, host_fn, bytes(image), prog_depth=DEPTH, seed=s, stall=0.7)
    assert out.error is ErrCode.NONE, out
    assert ram.quiet


def test_the_interrupt_follows_done_while_enabled():
    cfg = small("lut")
    prog = Program(isa.assemble(BUS_PROGRAM, cfg), np.zeros(512, np.uint8), {})

    async def host_fn(h, peek):
        seen = [peek("irq")]
        await h.write("irq_enable", fields_value("irq_enable", done=1))
        await h.run_program(cfg, prog, 0)
        seen.append(peek("irq"))                            # done, enabled
        await h.write("irq_enable", 0)
        seen.append(peek("irq"))                            # done, disabled
        await h.write("irq_enable", fields_value("irq_enable", done=1))
        seen.append(peek("irq"))
        await h.write("ctrl", fields_value("ctrl", start=1))
        seen.append(peek("irq"))                            # running again
        return seen

    assert shell_tb.run(cfg, host_fn, bytes(prog.dram), prog_depth=DEPTH)[0] == [0, 1, 0, 1, 0]


def test_a_program_word_past_the_memory_is_refused():
    cfg = small("lut")

    async def host_fn(h, peek):
        await h.write("prog_addr", DEPTH - 1)
        for name in regs.PROG_DATA:
            await h.write(name, 7)                  # commits word DEPTH - 1
        assert await h.read("prog_addr") == DEPTH
        await h.write(regs.PROG_DATA[-1], 7, expect=SLVERR)
        assert await h.read("prog_addr") == DEPTH
        return True

    assert shell_tb.run(cfg, host_fn, prog_depth=DEPTH)[0]


@pytest.mark.rtl
@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k == "lut" else pytest.mark.slow)
                                  for k in PE_KINDS])
def test_compiled_layers_through_the_shell_on_verilator(kind):
    """One Verilator build of the shell per kind (the LUT core in `make test`, the others in
    `make test-slow`); compiled layers of both weight formats loaded, started and read back
    over AXI (cocotbext-axi, random pauses on every channel), their DRAM equal to the
    executor's bit for bit; the core's cycle counter, read over AXI4-Lite, printed."""
    pytest.importorskip("cocotbext.axi")
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small(kind)
    programs = {f"{fmt}_m{m}_outliers{o}": compiled(cfg, fmt, m, o, s, n=40, k=200)
                for fmt, m, o in (("uniform", 1, 0), ("codebook", 3, 7))}
    depth = 256
    assert max(len(p.words) for p in programs.values()) <= depth
    base = 3 * 4096 - 36           # unaligned, and the images cross 4 KiB boundaries
    with tempfile.TemporaryDirectory() as tmp:
        cases, config = write_cases(tmp, cfg, programs)
        out = Path(tmp) / "results.json"
        try:
            build_and_run(Shell(cfg, depth), f"shell_{cfg.tag}_p{depth}", "verilator",
                          "verif.cocotb_shell",
                          {"BITLUT_SHELL_CASES": str(cases), "BITLUT_SHELL_CONFIG": str(config),
                           "BITLUT_SHELL_RESULTS": str(out), "BITLUT_SHELL_BASE": str(base),
                           "BITLUT_SEED": str(s)})
        except SimulatorMissing as e:
            pytest.skip(str(e))
        results = json.loads(out.read_text())
    for name, prog in programs.items():
        r = results[name]
        print(f"{name}: {r['cycles']} core cycles through the shell, {r['polls']} STATUS polls")
        assert (r["error"], r["err_index"]) == ("NONE", 0), (name, r)
        got = np.frombuffer(bytes.fromhex(r["dram"]), np.uint8)
        bad = np.flatnonzero(got != _expected(cfg, prog))
        assert bad.size == 0, (f"{name} (seed={s}): {bad.size} bytes differ from the "
                               f"executor's, first at {bad[0]:#x}" if bad.size else "")


@pytest.mark.parametrize("kind, op", [("read", "load"), ("write", "store")])
def test_a_bus_error_in_the_cycle_the_previous_command_completes(kind, op):
    # Without back-pressure the second command's first response follows the first command's
    # last one at once, so the error comes in the cycle the first command's done does: the
    # error is the second instruction's (its 8 one-burst rows come first).
    cfg = small("lut")
    words = isa.assemble(f"{op} buf=act sram=0 dram=0 rows=8 row_bytes=64 dram_stride=64\n"
                         f"{op} buf=act sram=512 dram=1024 rows=1 row_bytes=64 dram_stride=64\n"
                         "finish\n", cfg)
    prog = Program(words, np.zeros(2048, np.uint8), {})

    async def host_fn(h, peek):
        return await h.run_program(cfg, prog, 0)

    out, ram = shell_tb.run(cfg, host_fn, bytes(prog.dram), prog_depth=DEPTH, stall=0.0,
                            errors={(kind, 8)})
    assert (out.error, out.err_index) == (ErrCode.BUS, 1), out
    assert ram.quiet


def test_the_slave_performs_writes_at_least_two_cycles_apart():
    # The shell hands a committed program word to the core a cycle after its write
    # (rtl/shell.py), which is safe only because no write (a start) can follow in that cycle:
    # the response of a write must be accepted before the next one is performed. Both channels
    # are offered without a pause and the response taken at once, the fastest a master can go.
    from amaranth.sim import Simulator

    from rtl.shell import AxiLiteSlave
    dut = AxiLiteSlave()
    performed = []

    async def bench(ctx):
        bus = dut.bus
        for sig, v in ((bus.awvalid, 1), (bus.awaddr, regs.reg("dram_base").offset),
                       (bus.wvalid, 1), (bus.wdata, 0x1234), (bus.wstrb, 0xF), (bus.bready, 1)):
            ctx.set(sig, v)
        for _ in range(24):
            performed.append(bool(ctx.get(dut.we)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    cycles = [i for i, w in enumerate(performed) if w]
    assert len(cycles) >= 6, performed
    assert min(b - a for a, b in itertools.pairwise(cycles)) >= 2, cycles
