"""Dependency tokens derived from declared regions (compiler.builder)."""

from arch import config, isa
from arch.isa import Buffer, Opcode, Unit
from compiler.builder import ProgramBuilder, Region

CFG = config.load("lut")
LOAD = dict(buf=Buffer.ACT, sram=0, dram=0, rows=1, row_bytes=16, dram_stride=16)
VSUM = dict(rows=1, cols=16, act=0, sums=0)


def bit(u):
    return 1 << u.value


def build(steps):
    b = ProgramBuilder(CFG)
    for op, reads, writes, fields in steps:
        b.emit(op, reads=reads, writes=writes, **fields)
    return b.finish().insns()


def act(lo, hi):
    return Region(Buffer.ACT, lo, hi)


def test_read_after_write_gets_one_token():
    insns = build([(Opcode.LOAD, [], [act(0, 16)], LOAD),
                   (Opcode.VSUM, [act(0, 16)], [Region(Buffer.TABLE, 0, 4)], VSUM)])
    assert insns[0].signal == bit(Unit.VECTOR) and insns[1].wait == bit(Unit.LOAD)


def test_disjoint_regions_need_no_token():
    insns = build([(Opcode.LOAD, [], [act(0, 16)], LOAD),
                   (Opcode.VSUM, [act(16, 32)], [Region(Buffer.TABLE, 0, 4)], VSUM)])
    assert insns[0].signal == 0 and insns[1].wait == 0


def test_write_after_read_orders_the_reload():
    insns = build([(Opcode.LOAD, [], [act(0, 16)], LOAD),
                   (Opcode.VSUM, [act(0, 16)], [Region(Buffer.TABLE, 0, 4)], VSUM),
                   (Opcode.LOAD, [], [act(0, 16)], LOAD)])
    assert insns[1].signal == bit(Unit.LOAD) and insns[2].wait == bit(Unit.VECTOR)


def test_one_wait_covers_earlier_producers():
    # two loads feed one consumer: it waits once, on the newer load; the older needs no signal
    insns = build([(Opcode.LOAD, [], [act(0, 16)], LOAD),
                   (Opcode.LOAD, [], [act(16, 32)], {**LOAD, "sram": 16}),
                   (Opcode.VSUM, [act(0, 32)], [Region(Buffer.TABLE, 0, 4)],
                    {**VSUM, "cols": 32})])
    assert [i.signal for i in insns[:2]] == [0, bit(Unit.VECTOR)]
    assert insns[2].wait == bit(Unit.LOAD)


def test_same_unit_hazard_needs_no_token():
    insns = build([(Opcode.LOAD, [], [act(0, 16)], LOAD),
                   (Opcode.LOAD, [], [act(0, 16)], LOAD)])
    assert all(i.wait == 0 and i.signal == 0 for i in insns)


def test_derived_program_runs_balanced():
    # a producer/consumer ping-pong over two slots runs without deadlock or leftover tokens
    from arch.program import Program
    from sim.executor import Executor
    b = ProgramBuilder(CFG, Program(words=[]))
    b.program.alloc("x", (64,), "int8")
    for t in range(8):
        slot = 16 * (t % 2)
        b.emit(Opcode.LOAD, writes=[act(slot, slot + 16)], **{**LOAD, "sram": slot})
        b.emit(Opcode.VSUM, reads=[act(slot, slot + 16)],
               writes=[Region(Buffer.TABLE, 4 * (t % 2), 4 * (t % 2) + 4)],
               **{**VSUM, "act": slot, "sums": 4 * (t % 2)})
    prog = b.finish()
    Executor(CFG, prog).run()
    assert isa.decode(prog.words[-1]).op is Opcode.FINISH


def test_carried_instructions_equal_decoding_the_words():
    import numpy as np

    from compiler.lower import lower
    from quant.random_layer import codebook_layer
    prog = lower(codebook_layer(np.random.default_rng(0), 40, 300, (2, 3, 4), outliers=5),
                 CFG, 3).program
    assert prog.insns() == [isa.decode(w, i) for i, w in enumerate(prog.words)]
    prog.words[1] = isa.encode(isa.Insn(Opcode.NOP))       # an edit invalidates the carry
    assert prog.insns()[1].op is Opcode.NOP
