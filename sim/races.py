"""Data races: two instructions on different units that touch the same byte (at least one of them
writing it) with no chain of dependency tokens ordering them.

The result of such a program depends on timing (which unit reaches the byte first), so the
functional executor, the cycle model and the RTL core may each compute something different and
all be right. `bitlut exec` therefore refuses a racy program, as an input error naming both
instructions. Compiled programs are race-free (a test checks the compiler's matrix).

Ordering is the token discipline's happens-before, independent of any schedule: each unit runs
its instructions in program order, and the k-th wait of unit V on unit U consumes the token of
U's k-th signal to V, which U pushes when that instruction completes. Vector clocks over the five
units carry it (`RaceCheck.start` merges the clocks of the tokens an instruction waits for). Every
scratchpad byte and every DRAM byte keeps its last writer and, per unit, its last reader; an
access conflicts with a recorded one on another unit that its clock does not cover.
"""

from collections import deque

import numpy as np

from arch.isa import Buffer, Opcode, Unit
from bitlut.errors import UserError

# (opcode, field) of every scratchpad access that writes; all other accesses read. A
# read-modify-write (matmul accumulation, `vdeq first=0`, `vout`, `vscale`) counts as a write.
WRITES = {(Opcode.LOAD, "sram"), (Opcode.TBL, "tbl"), (Opcode.TBL, "sums"),
          (Opcode.GATHER, "dst"), (Opcode.CBX, "dst"), (Opcode.LMMA, "dst"),
          (Opcode.BSMM, "dst"), (Opcode.MMA, "dst"), (Opcode.VSUM, "sums"),
          (Opcode.VDEQ, "out"), (Opcode.VOUT, "out"), (Opcode.VSCALE, "out"),
          (Opcode.VSTAT, "acc"), (Opcode.VNORM, "src"), (Opcode.VQUANT, "dst"),
          (Opcode.VQUANT, "sx"), (Opcode.VEW, "dst"), (Opcode.VROPE, "src"),
          (Opcode.VKVQ, "dst"), (Opcode.VKVQ, "param"), (Opcode.VSMAX, "src"),
          (Opcode.VMV, "dst"), (Opcode.PACK, "dst")}
NUNITS = len(Unit)


class _Shadow:
    """Last writer (unit, sequence number) and each unit's last read of every byte (an array
    made on the unit's first read: DRAM is read by the load unit alone)."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.w_unit = np.full(nbytes, -1, np.int8)
        self.w_seq = np.zeros(nbytes, np.int32)
        self.r_seq = {}

    def reads(self, unit):
        if unit not in self.r_seq:
            self.r_seq[unit] = np.zeros(self.nbytes, np.int32)
        return self.r_seq[unit]


class RaceCheck:
    """Shadow memory and clocks for one run of the functional executor."""

    def __init__(self, sram_bytes, dram_bytes):
        self.mem = {buf: _Shadow(n) for buf, n in sram_bytes.items()}
        self.mem["dram"] = _Shadow(dram_bytes)
        self.unit_clock = {u: np.zeros(NUNITS, np.int64) for u in Unit}
        self.tokens = {}                           # (producer, consumer) -> deque of clocks
        self.insn_of = {u: [None] for u in Unit}   # unit -> "index (op)" by sequence number
        self.now = None                            # (insn index, op, unit, clock) running

    def start(self, i, insn, waits):
        """Instruction `i` starts on its unit, having popped one token from each unit of
        `waits`."""
        unit = insn.unit
        clock = self.unit_clock[unit].copy()
        for u in waits:
            clock = np.maximum(clock, self.tokens[(u, unit)].popleft())
        self.insn_of[unit].append(f"{i} ({insn.op.name.lower()})")
        clock[unit.value] = len(self.insn_of[unit]) - 1
        self.unit_clock[unit] = clock
        self.now = (i, insn.op, unit, clock)

    def signal(self, signals):
        """The running instruction completed and pushed a token to each unit of `signals`."""
        _, _, unit, clock = self.now
        for u in signals:
            self.tokens.setdefault((unit, u), deque()).append(clock)

    def access(self, where, index, write):
        """The running instruction reads (or writes) bytes `index` (a slice or an index array)
        of `where` (a `Buffer` or "dram"). Raises `ValueError` with the race's description."""
        i, op, unit, clock = self.now
        s = self.mem[where]
        name = where if where == "dram" else where.name.lower()
        wu, ws = s.w_unit[index], s.w_seq[index]
        other = (wu >= 0) & (wu != unit.value)
        if other.any():
            unordered = other & (clock[np.maximum(wu, 0)] < ws)
            if unordered.any():
                j = int(np.argmax(unordered))
                self._race(i, op, Unit(int(wu.flat[j])), int(ws.flat[j]), name, index, j,
                           "writes", "writes" if write else "reads")
        if write:
            for v, seqs in s.r_seq.items():
                if v == unit.value:
                    continue
                late = seqs[index] > clock[v]
                if late.any():
                    j = int(np.argmax(late))
                    self._race(i, op, Unit(v), int(seqs[index].flat[j]), name, index, j,
                               "reads", "writes")
            s.w_unit[index] = unit.value
            s.w_seq[index] = clock[unit.value]
        else:
            s.reads(unit.value)[index] = clock[unit.value]

    def _race(self, i, op, other_unit, seq, name, index, j, did, does):
        this, that = f"{i} ({op.name.lower()})", self.insn_of[other_unit][seq]
        addr = (index.start + j) if isinstance(index, slice) else int(np.asarray(index).flat[j])
        first, second = sorted([this, that], key=lambda t: int(t.split()[0]))
        raise RaceError(f"insns {first} and {second} must be ordered by a chain of dependency "
                        f"tokens, not race on {name} byte {addr:#x} (insn {that} {did} it, insn "
                        f"{this} {does} it): the result would depend on timing")


class RaceError(UserError):
    """A data race in a program (see the module docstring)."""


def sram_sizes(sram):
    """{Buffer: bytes} of the executor's scratchpads."""
    return {b: len(sram[b]) for b in Buffer}
