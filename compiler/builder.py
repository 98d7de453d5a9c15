"""Building a program with its dependency tokens derived, not written by hand.

The lowering emits instructions together with the memory regions each one reads and writes; the
builder finds every cross-unit hazard (read after write, write after read, write after write) and
turns it into a token: the producer signals the consumer's unit, the consumer waits on the
producer's unit. Units run their own queue in order, so a hazard between two instructions of one
unit needs nothing, and a consumer needs at most one wait per producer unit: the latest producer
it depends on (waiting for it covers every earlier one, because the producer's unit ran those
first). Token FIFOs are counters, so the k-th wait on the pair P->C must pair with the k-th
signal on it; emitting a signal on exactly the producer that the next new wait targets keeps that
pairing, because on each pair both sides advance monotonically in program order.

Double buffering is then only a matter of addresses: the lowering alternates two slots and the
tokens let loads of the next tile overlap compute on this one.
"""

from dataclasses import dataclass

from arch import isa
from arch.isa import Insn, Opcode
from arch.program import Program

BUCKET = 4096      # bytes per bucket of the access index: overlap checks stay local
DRAM = -1          # the space id of DRAM regions (scratchpads use their Buffer value)


@dataclass(frozen=True)
class Region:
    """Bytes [lo, hi) of scratchpad `space` (an `isa.Buffer`) or of "dram". The space is kept
    as a plain int (hashing amaranth enum members is slow on this hot path)."""
    space: object
    lo: int
    hi: int

    def __post_init__(self):
        space = self.space
        sid = DRAM if isinstance(space, str) and space == "dram" else int(space.value)
        object.__setattr__(self, "space", sid)

    def overlaps(self, other):
        return self.space == other.space and self.lo < other.hi and other.lo < self.hi


class ProgramBuilder:
    """Collects instructions and derives their tokens.

    `emit(op, reads, writes, **fields)` appends one instruction; `finish()` appends `finish`,
    encodes every word (validating it against the config) and returns the `Program`."""

    def __init__(self, config, program=None):
        self.cfg = config
        self.program = program or Program(words=[])
        self._insns = []             # [op, fields, wait mask, signal mask]
        self._units = []
        self._accesses = {}          # space -> list of (Region, index, is_write)
        # per (producer unit, consumer unit): index of the newest producer already waited for
        self._covered = {}

    def __len__(self):
        return len(self._insns)

    def _buckets(self, region):
        lo, hi = region.lo // BUCKET, max(region.lo, region.hi - 1) // BUCKET
        base = (region.space + 2) << 40          # one int key per (space, bucket)
        return range(base + lo, base + hi + 1)

    def emit(self, op, reads=(), writes=(), **fields):
        index = len(self._insns)
        u = isa.UNIT_OF[op]
        unit = -1 if u is None else u.value     # ints: hashing amaranth enums is slow here
        units = self._units
        deps = {}                     # producer unit -> newest producer index
        accesses = [(r, False) for r in reads] + [(w, True) for w in writes]
        for region, is_write in accesses:
            lo, hi = region.lo, region.hi
            for key in self._buckets(region):
                for other, j, other_write in self._accesses.get(key, ()):
                    if not (is_write or other_write) or other.lo >= hi or lo >= other.hi \
                            or other.space != region.space:
                        continue
                    punit = units[j]
                    if punit < 0 or punit == unit:
                        continue
                    if deps.get(punit, -1) < j:
                        deps[punit] = j
        wait = 0
        for punit, j in deps.items():
            if self._covered.get((punit, unit), -1) >= j:
                continue
            # The producer's own next signal to this unit must be j's, and not yet given.
            self._covered[(punit, unit)] = j
            self._insns[j][3] |= 1 << unit
            wait |= 1 << punit
        self._insns.append([op, fields, wait, 0])
        units.append(unit)
        for region, is_write in accesses:
            lo, hi = region.lo, region.hi
            for key in self._buckets(region):
                bucket = self._accesses.get(key)
                if bucket is None:
                    self._accesses[key] = [(region, index, is_write)]
                    continue
                # A newer access supersedes older ones it covers: a write covers everything
                # (later hazards are ordered through it), a read covers reads of its own unit
                # (its unit ran them first).
                bucket[:] = [a for a in bucket
                             if not (a[0].lo >= lo and a[0].hi <= hi
                                     and (is_write or (not a[2] and units[a[1]] == unit)))]
                bucket.append((region, index, is_write))
        return index

    def finish(self):
        """Append `finish`, encode, and return the program."""
        self._insns.append([Opcode.FINISH, {}, 0, 0])
        self._units.append(-1)
        words, insns = [], []
        for i, (op, fields, wait, signal) in enumerate(self._insns):
            insn = Insn(op, fields, wait, signal)
            words.append(isa.encode(insn, i, self.cfg))
            insns.append(insn)
        self.program.words = words
        # what decoding `words` gives back (tests check it), kept with a copy of the words so an
        # edited program is decoded afresh
        self.program.decoded = (list(words), insns)
        return self.program
