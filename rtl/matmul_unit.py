"""The matmul unit of the core: the `lmma`, `bsmm` and `mma` sequencers around the LUT,
bit-serial and MAC PE arrays.

Ref: LUT Tensor Core (ISCA'25) §3.2.2 Fig. 9 (tables broadcast along N, weight indices along M,
one bit plane per cycle); bit_serial.md §4 (the weight-serial walk); SCALE-Sim (ISPASS'20) the
weight-stationary fold (`mma`); arch/image.py (the weight images and the scratchpad layouts);
sim/executor.py `_lmma`, `_bsmm`, `_mma` (the bit-exact semantics).

A unit module of `rtl.core` (see `rtl/vector_unit.py` for the interface). The PE array of the
config's kind is instantiated as it is (`LutPEArray(cfg)`, `BitSerialPEArray(cfg)`,
`MacPEArray(cfg)`), its output always ready, so it never stalls. `lmma` and `bsmm` are below;
`mma` walks weight-stationary folds instead (`_Mma`: R weight rows, the token rows, the drain;
`mma_fold_cycles` a fold, plus `OVERHEAD` once: `arch.timing.matmul_cycles`).

The `lmma` / `bsmm` sequencer walks the instruction's tiles, `ceil(rows / pe.rows)` row tiles
by `ceil(n / pe.cols)` column tiles, each `kgroups` groups of `planes` beats
(`arch.timing.matmul_planes`: lmma uniform `bits`, codebook one lookup; bsmm `bits`, the
centroid width in codebook mode), one beat a cycle. Each beat reads, in the same cycle:

- the source of its group for the tile's `pe.rows` token rows, one read port per row: the
  tables (`lmma`: `src + (r * kgroups + j) * E * entry_bytes`, `E` entries) or the int8
  activations (`bsmm`: `src + r * kgroups * g + j * g`, `g` bytes);
- the weights of its plane: a `planes` / `indices` image is read as a stream (consecutive beats
  of one row tile read consecutive bits, so one port reads the bytes around the beat's bit
  address and drops the bits before it); `bsmm`'s codebook centroids [n, kgroups * g] by one
  port per lane (the lane's g centroids of the group; the beat takes bit `plane` of each, the
  top plane a sign plane);
- the tile's accumulators for `accumulate = 1` (one `ACC` port per row, the array's `psum`,
  which it injects on the tile's first beat).

Token rows past `rows` and lanes past `n` read those of row 0 / lane 0 of the tile instead (or,
for the accumulators, the bytes after the row) and are not written back. Each tile's result is
written to the accumulators in the cycle it leaves the array, one `ACC` write port per row, only
the valid columns (`count`).

Timing: in the start cycle s the sequencer takes the fields (`SETUP`); beat b is read in cycle
s + SETUP + b, the scratchpads answer `SPAD_LATENCY` later, when the array takes the beat; the
last tile's result leaves the array its `pipeline_for(cfg).latency` after its last beat and is
written in that cycle, the instruction's last. So an instruction of B beats takes B +
`pe_latency` + `OVERHEAD` cycles: `arch.timing.matmul_cycles` with `timing.matmul_overhead` =
`OVERHEAD`.
"""

import operator

from amaranth.hdl import Cat, Const, Mux, ResetInserter, Signal, signed
from amaranth.lib import data

from arch.isa import Buffer, Mode, Opcode, Unit
from bitlut.formats import CODEBOOK_BITS

from .bitserial_pe import BitSerialPEArray
from .common import INSN
from .lut_pe import LutPEArray
from .mac_pe import MacPEArray
from .scratchpad import LATENCY as SPAD_LATENCY
from .table_unit import table_geometry

__all__ = ["OPCODES", "SETUP", "OVERHEAD", "mma_fold_cycles", "in_range", "build"]

OPCODES = (Opcode.LMMA, Opcode.BSMM, Opcode.MMA)

#: Cycles before the first beat's reads: the start cycle, in which the sequencer takes the fields.
SETUP = 1

#: Cycles a matmul adds to its beats and the array's pipeline depth (`timing.matmul_overhead`):
#: the sequencer's start and the scratchpad read before the first beat reaches the array.
OVERHEAD = SETUP + SPAD_LATENCY

ACC_BYTES = 4       # one int32 accumulator (arch.image.ACC)


def mma_fold_cycles(cfg, rows):
    """Cycles one `mma` fold occupies the MAC array, as the sequencer walks it: R weight rows,
    `rows` token rows, then the array's `pipeline_for(cfg).latency` (its depth and the
    systolic skew) until the last result leaves, in whose cycle the next fold's weights are read.
    `arch.timing.matmul_cycles`' `2R + C + rows - 2 + pe_latency` with `pe_latency` the depth."""
    return cfg.pe.rows + rows + MacPEArray.pipeline_for(cfg).latency


def _mma_weight_port_bytes(cfg):
    """Bytes one lane reads for one weight: a b-bit code at any bit address, or a centroid."""
    pe = cfg.pe
    return max(-(-(7 + max(pe.weight_bits)) // 8), pe.centroid_bits // 8)


# -- geometry of one instruction: sizes as functions of the fields ----------------------------
def _codebook_bits(cfg):
    """The codebook code widths whose index fits a table of `cfg` (`cfg.codebook_group`)."""
    return [b for b in CODEBOOK_BITS if b <= cfg.pe.index_bits]


def _select(b, values, default):
    """A multiplexer on the field `b`: `values[b]` for each key, else `default`."""
    out = Const(default)
    for bits, value in values.items():
        out = Mux(b == bits, value, out)
    return out


def _tiles(count, size):
    """`ceil(count / size)` for a power-of-two `size`."""
    return (count + size - 1) >> (size.bit_length() - 1)


class _Geometry:
    """The sizes of matmul view `v` (`op`'s format) on `cfg`, as expressions of its fields
    (`mma`: `ok`, `group_bytes` and `weight_bytes` only, what `in_range` reads). `mul` forms
    the products of fields (`rtl.core`'s fetch stage registers them, `in_range`).

    Members
    -------
    ok : whether `bits` is one the array walks (uniform: a width of the array's `plane` field;
        lmma codebook: a width whose index fits the table; bsmm codebook: the centroid width).
    planes : beats per group (`arch.timing.matmul_planes`).
    group_bytes : source bytes of one token row's group (a table, or g activations).
    lane_bits : bits of one lane's weight word per beat in a streamed image.
    gather : 1 when the weights are bsmm's codebook centroids, read per lane.
    weight_bytes : bytes of the weight image (`arch.image.matmul_layout(...).nbytes`, or the
        centroids [n, kgroups * g]).
    """

    def __init__(self, op, v, cfg, mul=operator.mul):
        pe = cfg.pe
        uniform = v.mode == Mode.UNIFORM
        self.gather = Const(0)
        if op is Opcode.MMA:
            # `codes` [n, K] b bits each (`arch.image.matmul_layout`), or the centroids [n, K]
            # `cbx` wrote; the executor reads a codebook block's centroids whatever its `bits`
            k = v.kgroups * pe.group
            self.ok = Mux(uniform, v.bits <= max(pe.weight_bits), 1)
            self.group_bytes = Const(pe.group * pe.act_bits // 8)
            nk = mul(v.n, k)
            self.weight_bytes = Mux(uniform, (mul(nk, v.bits) + 7) >> 3,
                                    nk * (pe.centroid_bits // 8))
            return
        if op is Opcode.LMMA:
            eb = cfg.table_entry_bytes
            cb = {b: cfg.codebook_group(b) * b for b in _codebook_bits(cfg)}
            codebook_ok = Cat(*(v.bits == b for b in cb)).any() if cb else Const(0)
            self.ok = Mux(uniform, v.bits <= max(pe.weight_bits), codebook_ok)
            self.planes = Mux(uniform, v.bits, 1)
            self.group_bytes = Mux(uniform, cfg.table_entries * eb,
                                   _select(v.bits, {b: eb << w for b, w in cb.items()}, 0))
            self.lane_bits = Mux(uniform, pe.group, _select(v.bits, cb, 0))
            self.lane_widths = sorted({pe.group} | set(cb.values()))
        else:
            self.ok = Mux(uniform, v.bits <= max(pe.weight_bits), v.bits == pe.centroid_bits)
            self.planes = v.bits
            self.group_bytes = Const(pe.group)
            self.lane_bits = Const(pe.group)
            self.lane_widths = [pe.group]
            self.gather = ~uniform
        streamed = mul(mul(mul(_tiles(v.n, pe.cols) * pe.cols, v.kgroups), self.planes),
                       self.lane_bits)
        self.weight_bytes = Mux(self.gather,
                                mul(v.n, v.kgroups) * self.centroid_row_bytes(cfg, 1),
                                (streamed + 7) >> 3)

    @staticmethod
    def centroid_row_bytes(cfg, kgroups):
        """Bytes of one output's centroids over `kgroups` groups (bsmm codebook)."""
        return kgroups * cfg.pe.group * cfg.pe.centroid_bits // 8


def in_range(op, v, cfg, mul=operator.mul):
    """1 when the matmul's source, weights and accumulators lie inside their buffers (and its
    `bits` is one the array walks); `mul` forms the products of fields (`rtl.core`'s fetch
    stage registers them)."""
    geo = _Geometry(op, v, cfg, mul)
    src = "table" if op is Opcode.LMMA else "act"
    return (geo.ok
            & (v.src + mul(mul(v.rows, v.kgroups), geo.group_bytes) <= cfg.sram.bytes(src))
            & (v.wgt + geo.weight_bytes <= cfg.sram.bytes("weight"))
            & (v.dst + mul(v.rows, v.n) * ACC_BYTES <= cfg.sram.bytes("acc")))


# -- the unit -----------------------------------------------------------------------------------
def build(b):
    """Adds the matmul unit for `b.cfg`'s PE kind to the core being elaborated."""
    {"lut": _Lmma, "bitserial": _Bsmm, "mac": _Mma}[b.cfg.pe.kind](b).build()


class _Walk:
    """The tile walk of one matmul, column tiles inside row tiles: `rows_left` / `cols_left` are
    the token rows and outputs from the current tile on (so a tile's valid rows and columns are
    `min(left, size)`), `row_base` the ACC address of the tile's row 0, `col_off` the bytes from
    there to its first column."""

    def __init__(self, name, rows, cols):
        self.rows, self.cols = rows, cols
        self.rows_left = Signal(13, name=f"{name}_rows_left")
        self.cols_left = Signal(17, name=f"{name}_cols_left")
        self.row_base = Signal(32, name=f"{name}_acc_row")
        self.col_off = Signal(32, name=f"{name}_acc_col")
        self.last_col = self.cols_left <= cols
        self.last_row = self.rows_left <= rows
        self.last = self.last_col & self.last_row

    def load(self, m, v):
        m.d.sync += [self.rows_left.eq(v.rows), self.cols_left.eq(v.n),
                     self.row_base.eq(v.dst), self.col_off.eq(0)]

    def step(self, m, v):
        """Move to the next tile."""
        with m.If(self.last_col):
            m.d.sync += [self.cols_left.eq(v.n), self.col_off.eq(0),
                         self.rows_left.eq(self.rows_left - self.rows),
                         self.row_base.eq(self.row_base + v.n * (ACC_BYTES * self.rows))]
        with m.Else():
            m.d.sync += [self.cols_left.eq(self.cols_left - self.cols),
                         self.col_off.eq(self.col_off + ACC_BYTES * self.cols)]

    def acc_addr(self, v, r):
        """ACC address of tile row `r` (row 0 of the tile for a row past `rows`)."""
        row = Mux(r < self.rows_left, v.n * (ACC_BYTES * r), 0)
        return self.row_base + row + self.col_off


class _Matmul:
    """The sequencer, the scratchpad ports, the array and the write-back of one matmul opcode;
    a subclass names its `OP`, its `ARRAY`, its source buffer and its `feed` of the beat."""

    OP = ARRAY = SOURCE = None

    def __init__(self, b):
        self.b, self.m, self.cfg = b, b.m, b.cfg
        self.ctl = b.ctl[Unit.MATMUL]
        name = self.OP.name.lower()
        self.v = getattr(data.View(INSN, self.ctl["cur"].word), name)   # after the start cycle
        self.vs = getattr(data.View(INSN, self.ctl["insn"]), name)      # in the start cycle
        self.geo = _Geometry(self.OP, self.v, self.cfg)

    def build(self):
        m, b, pe = self.m, self.b, self.cfg.pe
        self.pe = self.ARRAY(self.cfg)
        m.submodules[self.ARRAY.__name__.lower()] = self.pe
        m.d.comb += self.pe.o.ready.eq(1)
        self.src_rd = [b.spad[self.SOURCE].read_port(self.source_bytes()) for _ in range(pe.rows)]
        # a beat's lane words start at any bit: read the bytes that hold them
        widest = pe.cols * max(self.geo.lane_widths)
        self.wgt_rd = b.spad[Buffer.WEIGHT].read_port(-(-(widest + 7) // 8))
        self.acc_rd = [b.spad[Buffer.ACC].read_port(pe.cols * ACC_BYTES) for _ in range(pe.rows)]
        self.acc_wr = [b.spad[Buffer.ACC].write_port(pe.cols * ACC_BYTES) for _ in range(pe.rows)]
        self.ports()
        self.sequencer()
        self.feed(self.pe.i.payload)
        self.write_back()
        with m.If(b.core.start & ~b.run_state):
            m.d.sync += [self.active.eq(0), self.beat_valid.eq(0)]

    def ports(self):
        """Further read ports of the subclass."""

    def source_bytes(self):
        raise NotImplementedError

    def sequencer(self):
        """The walk of the beats: (row tile, column tile, group, plane), one a cycle, and this
        beat's reads."""
        m, cfg, ctl, v, vs, geo = self.m, self.cfg, self.ctl, self.v, self.vs, self.geo
        pe = cfg.pe
        R = pe.rows
        self.active = active = Signal(name="mm_active")
        self.walk = walk = _Walk("mm_rd", R, pe.cols)
        plane = Signal.like(v.bits, name="mm_plane")
        group = Signal.like(v.kgroups, name="mm_group")
        self.wbit = wbit = Signal(32, name="mm_wbit")    # bit address of a streamed beat
        srow = Signal(32, name="mm_srow")                 # source address of tile row 0, group 0
        sgroup = Signal(32, name="mm_sgroup")             # bytes from there to the beat's group
        sstride = v.kgroups * geo.group_bytes             # source bytes of one token row
        with m.If(ctl["start"]):
            walk.load(m, vs)
            m.d.sync += [active.eq(1), plane.eq(0), group.eq(0), wbit.eq(vs.wgt << 3),
                         srow.eq(vs.src), sgroup.eq(0)]
        last_plane = plane == geo.planes - 1
        last_group = group == v.kgroups - 1
        self.group_end = Signal(name="mm_group_end")    # this beat ends its group
        self.tile_end = Signal(name="mm_tile_end")      # ... and its tile
        m.d.comb += [self.group_end.eq(active & last_plane),
                     self.tile_end.eq(active & last_plane & last_group)]
        with m.If(active):
            m.d.sync += [plane.eq(plane + 1), wbit.eq(wbit + pe.cols * geo.lane_bits)]
            with m.If(last_plane):
                m.d.sync += [plane.eq(0), group.eq(group + 1),
                             sgroup.eq(sgroup + geo.group_bytes)]
                with m.If(last_group):
                    m.d.sync += [group.eq(0), sgroup.eq(0)]
                    walk.step(m, v)
                    with m.If(walk.last_col):
                        # the next row tile reads the weights from their start again
                        m.d.sync += [wbit.eq(v.wgt << 3), srow.eq(srow + sstride * R)]
                    with m.If(walk.last):
                        m.d.sync += active.eq(0)
        for r, rp in enumerate(self.src_rd):
            row = Mux(r < walk.rows_left, sstride * r, 0)
            m.d.comb += [rp.addr.eq(srow + row + sgroup), rp.en.eq(active)]
        m.d.comb += [self.wgt_rd.addr.eq(wbit >> 3), self.wgt_rd.en.eq(active & ~geo.gather)]
        for r, rp in enumerate(self.acc_rd):
            m.d.comb += [rp.addr.eq(walk.acc_addr(v, r)), rp.en.eq(active & v.accumulate)]
        # what the array takes with the data, one cycle later
        self.beat_valid = Signal(name="mm_beat_valid")
        self.beat_first, self.beat_last = Signal(name="mm_first"), Signal(name="mm_last")
        self.beat_plane = Signal.like(plane, name="mm_beat_plane")
        self.beat_shift = Signal(3, name="mm_beat_shift")
        m.d.sync += [self.beat_valid.eq(active), self.beat_first.eq((plane == 0) & (group == 0)),
                     self.beat_last.eq(last_plane & last_group), self.beat_plane.eq(plane),
                     self.beat_shift.eq(wbit[:3])]

    def lane_words(self):
        """Each lane's word of a streamed beat (`geo.lane_bits` wide, zero-extended)."""
        words = self.wgt_rd.data >> self.beat_shift
        out = []
        for c in range(self.cfg.pe.cols):
            w = Const(0, max(self.geo.lane_widths))
            for width in self.geo.lane_widths:
                w = Mux(self.geo.lane_bits == width, words[c * width:(c + 1) * width], w)
            out.append(w)
        return out

    def feed_common(self, p):
        """The beat's control and the tile's accumulators (`psum`, used on its first beat)."""
        m, v = self.m, self.v
        m.d.comb += [self.pe.i.valid.eq(self.beat_valid), p.plane.eq(self.beat_plane),
                     p.first.eq(self.beat_first), p.last.eq(self.beat_last)]
        bits = 8 * ACC_BYTES
        for r, rp in enumerate(self.acc_rd):
            for c in range(self.cfg.pe.cols):
                old = rp.data[c * bits:(c + 1) * bits]
                m.d.comb += p.psum[r][c].eq(Mux(v.accumulate, old, 0))

    def write_back(self):
        """Each tile's result into the accumulators as it leaves the array; the last tile's
        write is the instruction's last cycle."""
        m, ctl, v, pe = self.m, self.ctl, self.v, self.cfg.pe
        o = self.pe.o
        walk = _Walk("mm_wr", pe.rows, pe.cols)
        with m.If(ctl["start"]):
            walk.load(m, self.vs)
        with m.If(o.valid):
            walk.step(m, v)
        cols = Mux(walk.last_col, walk.cols_left, pe.cols)
        for r, wp in enumerate(self.acc_wr):
            lanes = [Signal(signed(8 * ACC_BYTES), name=f"mm_res_{r}_{c}")
                     for c in range(pe.cols)]
            m.d.comb += [lane.eq(o.payload[r][c]) for c, lane in enumerate(lanes)]
            m.d.comb += [wp.addr.eq(walk.acc_addr(v, r)), wp.data.eq(Cat(*lanes)),
                         wp.count.eq(Mux(o.valid & (r < walk.rows_left), cols * ACC_BYTES, 0))]
        m.d.comb += ctl["last"].eq(o.valid & walk.last)


class _Lmma(_Matmul):
    """`lmma` on the `LutPEArray`: tables from the table buffer, a `planes` or `indices` image."""

    OP, ARRAY, SOURCE = Opcode.LMMA, LutPEArray, Buffer.TABLE

    def source_bytes(self):
        return table_geometry(self.cfg)["entries"] * self.cfg.table_entry_bytes

    def feed(self, p):
        m, cfg = self.m, self.cfg
        self.feed_common(p)
        m.d.comb += p.mode.eq(self.v.mode)
        for c, word in enumerate(self.lane_words()):
            m.d.comb += p.idx[c].eq(word)
        bits = 8 * cfg.table_entry_bytes
        for r, rp in enumerate(self.src_rd):
            for e in range(len(p.tables[r])):
                m.d.comb += p.tables[r][e].eq(rp.data[e * bits:(e + 1) * bits])


class _Bsmm(_Matmul):
    """`bsmm` on the `BitSerialPEArray`: int8 activations from the activation buffer, a `planes`
    image (uniform) or the centroids `cbx` wrote (codebook: the top plane is a sign plane)."""

    OP, ARRAY, SOURCE = Opcode.BSMM, BitSerialPEArray, Buffer.ACT

    def source_bytes(self):
        return self.cfg.pe.group * self.cfg.pe.act_bits // 8

    def ports(self):
        """One port per lane for the centroids: lane c's group j at `wgt + (nt * C + c) *
        row + j * g * cb` (row: one output's centroid bytes; lanes past `n` read lane 0)."""
        gbytes = _Geometry.centroid_row_bytes(self.cfg, 1)
        self.cb_rd = [self.b.spad[Buffer.WEIGHT].read_port(gbytes)
                      for _ in range(self.cfg.pe.cols)]

    def sequencer(self):
        super().sequencer()
        m, cfg, v, vs = self.m, self.cfg, self.v, self.vs
        pe = cfg.pe
        gbytes = _Geometry.centroid_row_bytes(cfg, 1)
        row = v.kgroups * gbytes                           # one output's centroids
        tile = Signal(32, name="mm_cb_tile")               # lane 0's centroids of the tile
        grp = Signal(32, name="mm_cb_group")               # bytes from there to the group
        with m.If(self.ctl["start"]):
            m.d.sync += [tile.eq(vs.wgt), grp.eq(0)]
        with m.If(self.group_end):
            m.d.sync += grp.eq(grp + gbytes)
            with m.If(self.tile_end):
                m.d.sync += [grp.eq(0), tile.eq(Mux(self.walk.last_col, v.wgt,
                                                    tile + row * pe.cols))]
        for c, rp in enumerate(self.cb_rd):
            lane = Mux(c < self.walk.cols_left, row * c, 0)
            m.d.comb += [rp.addr.eq(tile + lane + grp), rp.en.eq(self.active & self.geo.gather)]

    def feed(self, p):
        m, cfg, geo = self.m, self.cfg, self.geo
        pe = cfg.pe
        self.feed_common(p)
        m.d.comb += p.sign.eq(geo.gather & (self.beat_plane == pe.centroid_bits - 1))
        cbits = pe.centroid_bits
        for c, (word, rp) in enumerate(zip(self.lane_words(), self.cb_rd, strict=True)):
            planes = Cat(*(rp.data[k * cbits:(k + 1) * cbits].bit_select(self.beat_plane, 1)
                           for k in range(pe.group)))
            m.d.comb += p.w[c].eq(Mux(geo.gather, planes, word))
        abits = pe.act_bits
        for r, rp in enumerate(self.src_rd):
            for k in range(pe.group):
                m.d.comb += p.x[r][k].eq(rp.data[k * abits:(k + 1) * abits])


class _Folds:
    """The fold walk of one `mma`, K tiles inside N tiles: `k_left` / `cols_left` are the input
    features and outputs from the current fold on (a fold's valid weight rows and result
    columns are `min(left, size)`), `k_off` the fold's first feature, `col_off` the ACC bytes
    from a token row's start to the fold's first column."""

    def __init__(self, name, rows, cols):
        self.rows, self.cols = rows, cols
        self.k_left = Signal(17, name=f"{name}_k_left")
        self.cols_left = Signal(17, name=f"{name}_cols_left")
        self.k_off = Signal(17, name=f"{name}_k_off")
        self.col_off = Signal(32, name=f"{name}_acc_col")
        self.last_k = self.k_left <= rows
        self.last_col = self.cols_left <= cols
        self.last = self.last_k & self.last_col
        self.next_col_off = Mux(self.last_k, self.col_off + ACC_BYTES * cols, self.col_off)

    def load(self, m, k, n):
        m.d.sync += [self.k_left.eq(k), self.cols_left.eq(n), self.k_off.eq(0),
                     self.col_off.eq(0)]

    def step(self, m, k):
        """Move to the next fold (`k`: the instruction's input features)."""
        m.d.sync += self.col_off.eq(self.next_col_off)
        with m.If(self.last_k):
            m.d.sync += [self.k_left.eq(k), self.k_off.eq(0),
                         self.cols_left.eq(self.cols_left - self.cols)]
        with m.Else():
            m.d.sync += [self.k_left.eq(self.k_left - self.rows),
                         self.k_off.eq(self.k_off + self.rows)]


class _Mma:
    """`mma` on the `MacPEArray`: int8 activations [rows, K] from the activation buffer, `codes`
    [n, K] of `bits` bits (uniform) or the centroids [n, K] `cbx` wrote (codebook), int32
    accumulators [rows, n].

    The folds (`_Folds`) run back to back, each `mma_fold_cycles` of the array's own timing: weight
    row r of the fold (feature `k_off + r`, the fold's C outputs) is read in step r, one port per
    lane (a lane's weights are one row of the [n, K] image, so a weight row is a column of it);
    token row t's R features and its C accumulators in step R + t; then the array drains for
    its `pipeline_for(cfg).latency`, in whose last cycle the fold's last result leaves and the
    next fold's first weight row is read, which the array takes in the next cycle, the first
    with no activation in flight. The accumulators are the array's `psum`: the first K tile adds
    to them only for `accumulate = 1`, later K tiles always, so each fold's result is the running
    sum and is written over them as it leaves the array (the next K tile of the same outputs
    reads a row long after it was written). Features past K read zero activations (their
    weights are the bits after the row, times zero); lanes past `n` read lane 0's weights and
    the bytes after the row's accumulators, and are not written.
    """

    def __init__(self, b):
        self.b, self.m, self.cfg = b, b.m, b.cfg
        self.ctl = b.ctl[Unit.MATMUL]
        self.v = data.View(INSN, self.ctl["cur"].word).mma     # after the start cycle
        self.vs = data.View(INSN, self.ctl["insn"]).mma        # in the start cycle

    def build(self):
        m, b, pe = self.m, self.b, self.cfg.pe
        self.pe = MacPEArray(self.cfg)
        # the array keeps its weight-row count between beats: a run stopped part-way (an error
        # in dispatch) must not leave it half-loaded for the next
        m.submodules.macpearray = ResetInserter(b.core.start & ~b.run_state)(self.pe)
        m.d.comb += self.pe.o.ready.eq(1)
        self.wgt_rd = [b.spad[Buffer.WEIGHT].read_port(_mma_weight_port_bytes(self.cfg))
                       for _ in range(pe.cols)]
        self.act_rd = b.spad[Buffer.ACT].read_port(pe.rows * pe.act_bits // 8)
        self.acc_rd = b.spad[Buffer.ACC].read_port(pe.cols * ACC_BYTES)
        self.acc_wr = b.spad[Buffer.ACC].write_port(pe.cols * ACC_BYTES)
        self.sequencer()
        self.feed()
        self.write_back()
        with m.If(b.core.start & ~b.run_state):
            m.d.sync += [self.active.eq(0), self.w_valid.eq(0), self.x_valid.eq(0)]

    def sequencer(self):
        """The walk of the folds, a step a cycle, and this step's reads."""
        m, cfg, ctl, v, vs = self.m, self.cfg, self.ctl, self.v, self.vs
        pe = cfg.pe
        R, C = pe.rows, pe.cols
        k = v.kgroups * pe.group
        uniform = v.mode == Mode.UNIFORM
        ebits = Mux(uniform, v.bits, pe.centroid_bits)     # bits of one weight in the buffer
        lstride = k * ebits                                 # bits of one output's weights
        self.active = active = Signal(name="mma_active")
        self.folds = folds = _Folds("mma_rd", R, C)
        fold_steps = mma_fold_cycles(cfg, v.rows)
        step = Signal(range(mma_fold_cycles(cfg, 1 << len(v.rows))), name="mma_step")
        wbit = Signal(32, name="mma_wbit")        # bit address of lane 0's weight of the row
        nbase = Signal(32, name="mma_nbase")      # ... of lane 0's feature 0, this N tile
        arow = Signal(32, name="mma_arow")        # activations of the token row, the fold's K
        accrow = Signal(32, name="mma_accrow")    # accumulators of the row, the fold's columns
        loading = Signal(name="mma_loading")
        streaming = Signal(name="mma_streaming")
        m.d.comb += [loading.eq(active & (step < R)),
                     streaming.eq(active & (step >= R) & (step < R + v.rows))]
        with m.If(ctl["start"]):
            folds.load(m, vs.kgroups * pe.group, vs.n)
            m.d.sync += [active.eq(1), step.eq(0), wbit.eq(vs.wgt << 3), nbase.eq(vs.wgt << 3)]
        with m.If(active):
            m.d.sync += step.eq(step + 1)
        with m.If(loading):
            m.d.sync += wbit.eq(wbit + ebits)      # R rows on: the next K tile's first row
            with m.If(step == R - 1):
                m.d.sync += [arow.eq(v.src + folds.k_off), accrow.eq(v.dst + folds.col_off)]
        with m.If(streaming):
            m.d.sync += [arow.eq(arow + k), accrow.eq(accrow + v.n * ACC_BYTES)]
            with m.If((step == R + v.rows - 1) & folds.last):
                m.d.sync += active.eq(0)
        with m.If(active & (step == fold_steps - 1)):
            m.d.sync += step.eq(0)
            folds.step(m, k)
            with m.If(folds.last_k):
                m.d.sync += [wbit.eq(nbase + lstride * C), nbase.eq(nbase + lstride * C)]
        use_acc = v.accumulate | (folds.k_off != 0)
        self.shift = []
        for c, rp in enumerate(self.wgt_rd):
            addr = Signal(32, name=f"mma_wbit{c}")
            m.d.comb += [addr.eq(wbit + Mux(c < folds.cols_left, lstride * c, 0)),
                         rp.addr.eq(addr >> 3), rp.en.eq(loading)]
            shift = Signal(3, name=f"mma_wshift{c}")
            m.d.sync += shift.eq(addr[:3])
            self.shift.append(shift)
        m.d.comb += [self.act_rd.addr.eq(arow), self.act_rd.en.eq(streaming),
                     self.acc_rd.addr.eq(accrow), self.acc_rd.en.eq(streaming & use_acc)]
        # what the array takes with the data, one cycle later
        self.w_valid, self.x_valid = Signal(name="mma_w_valid"), Signal(name="mma_x_valid")
        self.x_rows = Signal.like(folds.k_left, name="mma_x_rows")    # the fold's features
        self.use_acc = Signal(name="mma_use_acc")
        m.d.sync += [self.w_valid.eq(loading), self.x_valid.eq(streaming),
                     self.x_rows.eq(folds.k_left), self.use_acc.eq(use_acc)]

    def feed(self):
        """The weight rows (codes zero-extended, centroids sign-extended) and the token rows
        (features past K zero, the old accumulators as `psum`) into the array."""
        m, cfg, v = self.m, self.cfg, self.v
        pe, p = cfg.pe, self.pe
        m.d.comb += [p.w.valid.eq(self.w_valid), p.i.valid.eq(self.x_valid)]
        wide = max(pe.weight_bits)
        mask = ((Const(1, wide + 1) << v.bits) - 1)[:wide]
        for c, (rp, shift) in enumerate(zip(self.wgt_rd, self.shift, strict=True)):
            word = rp.data >> shift
            code = word[:wide] & mask
            centroid = word[:pe.centroid_bits].as_signed()
            m.d.comb += p.w.payload.w[c].eq(Mux(v.mode == Mode.UNIFORM, code, centroid))
        abits = pe.act_bits
        for r in range(pe.rows):
            x = self.act_rd.data[r * abits:(r + 1) * abits].as_signed()
            m.d.comb += p.i.payload.x[r].eq(Mux(r < self.x_rows, x, 0))
        bits = 8 * ACC_BYTES
        for c in range(pe.cols):
            old = self.acc_rd.data[c * bits:(c + 1) * bits].as_signed()
            m.d.comb += p.i.payload.psum[c].eq(Mux(self.use_acc, old, 0))

    def write_back(self):
        """Each result row over its accumulators as it leaves the array, only the fold's valid
        columns; the last fold's last row is the instruction's last cycle."""
        m, ctl, v, pe = self.m, self.ctl, self.v, self.cfg.pe
        o = self.pe.o
        folds = _Folds("mma_wr", pe.rows, pe.cols)
        row = Signal.like(v.rows, name="mma_wr_row")
        addr = Signal(32, name="mma_wr_addr")
        with m.If(self.ctl["start"]):
            folds.load(m, self.vs.kgroups * pe.group, self.vs.n)
            m.d.sync += [row.eq(0), addr.eq(self.vs.dst)]
        last_row = row == v.rows - 1
        with m.If(o.valid):
            m.d.sync += [row.eq(row + 1), addr.eq(addr + v.n * ACC_BYTES)]
            with m.If(last_row):
                folds.step(m, v.kgroups * pe.group)
                m.d.sync += [row.eq(0), addr.eq(v.dst + folds.next_col_off)]
        cols = Mux(folds.last_col, folds.cols_left, pe.cols)
        lanes = [Signal(signed(8 * ACC_BYTES), name=f"mma_res_{c}") for c in range(pe.cols)]
        m.d.comb += [lane.eq(o.payload[c]) for c, lane in enumerate(lanes)]
        m.d.comb += [self.acc_wr.addr.eq(addr), self.acc_wr.data.eq(Cat(*lanes)),
                     self.acc_wr.count.eq(Mux(o.valid, cols * ACC_BYTES, 0)),
                     ctl["last"].eq(o.valid & last_row & folds.last)]
