"""Programs for the core's tests: micro-programs that pin one rule of the timing contract each
(docs/core.md), and seeded random programs whose tokens `compiler.builder` derives.

Every builder returns an `arch.program.Program` with a DRAM image of `DRAM_BYTES` seeded bytes.
"""

import numpy as np

from arch import isa
from arch.isa import Buffer, Insn, Opcode, Unit
from arch.program import Program
from compiler.builder import ProgramBuilder, Region

__all__ = ["DRAM_BYTES", "program", "vsum", "load", "store", "mask", "random_program",
           "illegal_words", "MICRO", "cases"]

DRAM_BYTES = 4096


def mask(*units):
    return sum(1 << u.value for u in units)


def program(insns, words=None, seed=0, finish=True):
    """A program of `insns` (then `finish`), or of raw `words`, on a seeded DRAM image."""
    if words is None:
        words = [isa.encode(i) for i in insns]
    if finish:
        words = words + [isa.encode(Insn(Opcode.FINISH))]
    dram = np.random.default_rng(seed).integers(0, 256, DRAM_BYTES).astype(np.uint8)
    return Program(list(words), dram, {})


def vsum(rows=2, cols=20, act=0, sums=16, wait=(), signal=()):
    return Insn(Opcode.VSUM, dict(rows=rows, cols=cols, act=act, sums=sums),
                mask(*wait), mask(*signal))


def load(buf=Buffer.ACT, sram=0, dram=0, rows=1, row_bytes=64, stride=None, wait=(), signal=()):
    return Insn(Opcode.LOAD, dict(buf=buf, sram=sram, dram=dram, rows=rows, row_bytes=row_bytes,
                                  dram_stride=row_bytes if stride is None else stride),
                mask(*wait), mask(*signal))


def store(buf=Buffer.TABLE, sram=16, dram=2048, rows=1, row_bytes=8, stride=None, wait=(),
          signal=()):
    return Insn(Opcode.STORE, dict(buf=buf, sram=sram, dram=dram, rows=rows,
                                   row_bytes=row_bytes,
                                   dram_stride=row_bytes if stride is None else stride),
                mask(*wait), mask(*signal))


def random_program(cfg, rng, n=24):
    """`n` loads, vsums and stores over random regions; the builder derives the tokens from the
    regions each one reads and writes (RAW, WAR, WAW across units), as for compiled programs."""
    b = ProgramBuilder(cfg, Program(words=[]))
    act, table = cfg.sram.bytes("act"), cfg.sram.bytes("table")
    for _ in range(n):
        kind = rng.choice(["load", "vsum", "store", "store_act"], p=[0.4, 0.3, 0.2, 0.1])
        if kind == "load":
            rows = int(rng.integers(1, 4))
            rb = int(rng.integers(1, 150))
            stride = rb + int(rng.integers(0, 9))
            dram = int(rng.integers(0, DRAM_BYTES // 2 - rows * stride))
            sram = int(rng.integers(0, min(act, 2048) - rows * rb)) // 16 * 16
            b.emit(Opcode.LOAD, reads=[Region("dram", dram, dram + (rows - 1) * stride + rb)],
                   writes=[Region(Buffer.ACT, sram, sram + rows * rb)],
                   buf=Buffer.ACT, sram=sram, dram=dram, rows=rows, row_bytes=rb,
                   dram_stride=stride)
        elif kind == "vsum":
            rows, cols = int(rng.integers(1, 5)), int(rng.integers(1, 70))
            a = int(rng.integers(0, min(act, 2048) - rows * cols)) // 16 * 16
            s = int(rng.integers(0, min(table, 1024) // 4 - rows)) * 4
            b.emit(Opcode.VSUM, reads=[Region(Buffer.ACT, a, a + rows * cols)],
                   writes=[Region(Buffer.TABLE, s, s + 4 * rows)],
                   rows=rows, cols=cols, act=a, sums=s)
        else:
            buf = Buffer.ACT if kind == "store_act" else Buffer.TABLE
            rows, rb = int(rng.integers(1, 3)), int(rng.integers(1, 80))
            cap = min(act if buf is Buffer.ACT else table, 1024)
            sram = int(rng.integers(0, cap - rows * rb)) // 4 * 4
            dram = DRAM_BYTES // 2 + int(rng.integers(0, DRAM_BYTES // 2 - rows * rb - 8))
            b.emit(Opcode.STORE, reads=[Region(buf, sram, sram + rows * rb)],
                   writes=[Region("dram", dram, dram + rows * rb)],
                   buf=buf, sram=sram, dram=dram, rows=rows, row_bytes=rb, dram_stride=rb)
    prog = b.finish()
    prog.dram = rng.integers(0, 256, DRAM_BYTES).astype(np.uint8)
    prog.symbols = {}
    return prog


def _with(word, op, field, raw):
    """`word` with field `field` of `op`'s layout set to the raw value `raw`."""
    f = isa.LAYOUTS[op][field]
    mask_ = ((1 << f.width) - 1) << f.offset
    return (word & ~mask_) | (raw << f.offset)


def illegal_words():
    """{class: word} of one illegal word per rule of `isa.decode` (and the executor's `finish`
    rule), each made from a legal word by one change."""
    ld = isa.encode(load())
    fin = isa.encode(Insn(Opcode.FINISH))
    deq = isa.encode(Insn(Opcode.VDEQ, dict(rows=1, n=1, deq=0, first=1, acc=0, out=0, param=0,
                                            sums=0)))
    return {
        "unassigned opcode": 0,
        "unassigned opcode 31": _with(fin, Opcode.FINISH, "op", 31),
        "buffer 9": _with(ld, Opcode.LOAD, "buf", 9),
        "deq 3": _with(deq, Opcode.VDEQ, "deq", 3),
        "reserved bit": ld | 1 << (isa.WORD_BITS - 1),
        "zero count": _with(ld, Opcode.LOAD, "rows", 0),
        "own token": _with(ld, Opcode.LOAD, "wait", mask(Unit.LOAD)),
        "finish with a wait": _with(fin, Opcode.FINISH, "wait", mask(Unit.LOAD)),
    }


# -- one micro-program per rule of the contract (verif/test_core.py states what each pins) -----
L, V, S = Unit.LOAD, Unit.VECTOR, Unit.STORE


def _queue_full(cfg):
    depth = cfg.queues.insn_depth
    return program([load(signal=[V]), vsum(wait=[L])] + [vsum()] * (depth + 1))


def _counter_full(cfg):
    # the first store also waits for a slow load, so the vsums fill the vector->store counter
    depth = cfg.queues.token_depth
    vs = [vsum(rows=1, cols=16, act=16 * i, sums=4 * i, signal=[S]) for i in range(depth + 1)]
    st = [store(sram=4 * i, dram=2048 + 4 * i, row_bytes=4, wait=[V, L] if i == 0 else [V])
          for i in range(depth + 1)]
    return program([load(sram=1024, rows=4, row_bytes=1000, signal=[S])] + vs + st)


MICRO = {
    "finish": lambda cfg: program([]),
    "nops": lambda cfg: program([Insn(Opcode.NOP)] * 3),
    "vsum": lambda cfg: program([vsum()]),
    "vsum_back_to_back": lambda cfg: program([vsum(), vsum(act=64, sums=32)]),
    "load": lambda cfg: program([load(row_bytes=64)]),
    "token": lambda cfg: program([load(row_bytes=45, dram=3, signal=[V]),
                                  vsum(wait=[L], signal=[S]), store(wait=[V])]),
    "queue_full": _queue_full,
    "counter_full": _counter_full,
    "outstanding_plus_one": lambda cfg: program(
        [load(dram=8 * i, sram=16 * i, row_bytes=7) for i in range(cfg.dram.outstanding + 1)]),
    "load_and_store_tie": lambda cfg: program([vsum(signal=[L, S]), load(row_bytes=64, wait=[V]),
                                               store(row_bytes=8, wait=[V])]),
    "long_then_short": lambda cfg: program([load(rows=4, row_bytes=200, stride=203),
                                            load(sram=1024, row_bytes=3)]),
    "unaligned_round_trip": lambda cfg: program(
        [load(rows=3, row_bytes=100, dram=1, sram=32, stride=131, signal=[S]),
         store(buf=Buffer.ACT, sram=33, dram=2049, rows=2, row_bytes=150, stride=151,
               wait=[L])]),
}


def cases(cfg, seed, randoms=4):
    """{name: Program}: every micro-program and `randoms` random programs from `seed`."""
    out = {name: build(cfg) for name, build in MICRO.items()}
    for k in range(randoms):
        out[f"random{k}"] = random_program(cfg, np.random.default_rng(seed * 100 + k))
    return out
