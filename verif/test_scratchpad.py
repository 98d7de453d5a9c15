"""The scratchpad (`rtl.scratchpad.Scratchpad`) against a byte array, in the Amaranth simulator:
random unaligned reads and writes on every port, one to three writers (three writers take the XOR
multi-write banks), the timing of the module docstring (a read presented in cycle t returns in
t + 1 and sees every write presented before t)."""

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator

from rtl.scratchpad import LATENCY, Scratchpad

from .harness import seed


class _Top(Elaboratable):
    def __init__(self, nbytes, writers, readers):
        self.sp = Scratchpad(nbytes, 4, name="sp")
        self.w = [self.sp.write_port(n) for n in writers]
        self.r = [self.sp.read_port(n) for n in readers]

    def elaborate(self, platform):
        m = Module()
        m.submodules.sp = self.sp
        return m


def _traffic(rng, nbytes, writers, readers, cycles):
    """Per cycle: the writes [(port, addr, bytes)] and reads [(port, addr)] presented. Writes of
    one cycle never touch the same byte (that is a race the programs may not contain)."""
    plan = []
    for _ in range(cycles):
        taken, writes, reads = set(), [], []
        for p, width in enumerate(writers):
            if rng.random() < 0.7:
                count = rng.randint(0, width)
                # Hot addresses: most writes land in the first 48 bytes, so the writers keep
                # meeting on the same words in consecutive cycles.
                top = 48 if rng.random() < 0.7 else nbytes
                addr = rng.randrange(0, top - width + 1)
                span = set(range(addr, addr + count))
                if not span & taken:
                    taken |= span
                    writes.append((p, addr, bytes(rng.randrange(256) for _ in range(count))))
        for p, width in enumerate(readers):
            if rng.random() < 0.8:
                top = 48 if rng.random() < 0.7 else nbytes
                reads.append((p, rng.randrange(0, top - width + 1)))
        plan.append((writes, reads))
    return plan


def _run(nbytes, writers, readers, s, cycles=300):
    rng = random.Random(s)
    top = _Top(nbytes, writers, readers)
    plan = _traffic(rng, nbytes, writers, readers, cycles)
    ref = bytearray(nbytes)
    seen = []

    async def bench(ctx):
        pending = []             # (port, addr, expected bytes, cycle due)
        for t, (writes, reads) in enumerate(plan + [([], [])] * (LATENCY + 1)):
            for w in top.w:
                ctx.set(w.count, 0)
            for p, addr, data in writes:
                w = top.w[p]
                ctx.set(w.addr, addr)
                ctx.set(w.data, int.from_bytes(data.ljust(w.nbytes, b"\0"), "little"))
                ctx.set(w.count, len(data))
            for r in top.r:
                ctx.set(r.en, 0)
            for p, addr in reads:
                r = top.r[p]
                ctx.set(r.addr, addr)
                ctx.set(r.en, 1)
                # Sees every write presented before this cycle, none of this cycle's.
                pending.append((p, addr, bytes(ref[addr:addr + r.nbytes]), t + LATENCY))
            for _, addr, data in writes:
                ref[addr:addr + len(data)] = data
            await ctx.tick()
            for p, addr, want, _ in [x for x in pending if x[3] == t + 1]:
                r = top.r[p]
                got = ctx.get(r.data).to_bytes(r.nbytes, "little")
                seen.append((t + 1, p, addr, got, want))
            pending = [x for x in pending if x[3] != t + 1]
            # A read port holds its data until its next read: the checks above read it in the
            # cycle it arrives, before any new read of that port could replace it.

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("writers, readers", [
    ((4,), (4, 1)),                 # one writer: a plain memory
    ((4, 3), (4, 2, 1)),            # two writers: the XOR banks
    ((4, 1, 2), (3, 4)),            # three writers
])
def test_reads_see_every_earlier_write(writers, readers):
    s = seed(7)
    print(f"seed {s} (BITLUT_SEED={s} reproduces)")
    seen = _run(96, writers, readers, s)
    assert len(seen) > 200
    bad = [x for x in seen if x[3] != x[4]]
    assert not bad, f"seed {s}: first of {len(bad)} wrong reads (cycle, port, addr, got, want): " \
                    f"{bad[0]}"


def test_a_read_in_the_cycle_after_a_write_sees_it():
    # Directed: writer 1 writes a word, writer 0 overwrites half of it in the next cycle, and a
    # read in each of the following cycles sees exactly the writes presented before it.
    top = _Top(32, (4, 4), (4,))
    w0, w1 = top.w
    r = top.r[0]
    got = []

    async def bench(ctx):
        steps = [((w1, 8, b"\x11\x22\x33\x44"), 8), ((w0, 10, b"\xaa\xbb"), 8),
                 (None, 8), (None, 8)]
        for write, addr in steps:
            for w in top.w:
                ctx.set(w.count, 0)
            if write:
                w, a, data = write
                ctx.set(w.addr, a)
                ctx.set(w.data, int.from_bytes(data, "little"))
                ctx.set(w.count, len(data))
            ctx.set(r.addr, addr)
            ctx.set(r.en, 1)
            await ctx.tick()
            got.append(ctx.get(r.data).to_bytes(4, "little"))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [bytes(4), b"\x11\x22\x33\x44", b"\x11\x22\xaa\xbb", b"\x11\x22\xaa\xbb"], got
