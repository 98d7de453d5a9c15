"""Lowering one quantized linear layer to an ISA program (DESIGN.md sections 3-5).

Ref: LUT Tensor Core (ISCA'25) §3.1 (precompute split from the lookup GEMM, Fig. 6), §3.3
(LMMA); VTA-style decoupled load / compute / store with dependency tokens.

Loop nest, output-stationary in an (mr x nw) output tile, the reduction streamed by k-steps:

    for each row block (mr tokens):          load sx
      for each column block (nw outputs):
        for each k-step s (scale group / codebook block, in lowered order):
          load x tile [mr, width(s)]          -> act slot s%2
          vsum (uniform, bitserial/mac)       -> sums slot
          load centroids (codebook)           -> codebook slot
          tbl (lut)                           -> table slot (+ sums)
          load weights [nw, width(s)]         -> weight slot
          cbx (codebook, bitserial/mac)       -> expanded weight slot
          load scale/zero records             -> scale slot
          lmma | bsmm | mma                   -> acc slot
          vdeq (first k-step assigns)         -> out tile
          load outlier records, vout          -> correction tile (if any in this block)
        vscale (+ correction)                 -> out tile
        store out tile                        -> y

Every slot alternates between two regions, and `compiler.builder` derives the tokens, so loads
of the next k-step overlap the compute of this one.

Under `pe.act_quant: token_group` (docs/numerics.md section 1) the row block loads no `sx`;
each k-step loads its own row scales [rows] behind its scale records, `vdeq` folds them in
(`rowscale`), an outlier list's correction is scaled by them and added to the tile per k-step
(`vscale` twice: O·sx, then out + O against a vector of ones), and the tile is stored without a
final `vscale`. Under `smooth` the program is the `token` one; the host divides X by the layer's
migration scales when it writes X (`write_inputs`). The tiling (mr, nw) is chosen by
`compiler.tiling` under the scratchpad capacities.
"""

from dataclasses import dataclass, field

import numpy as np

from arch import image as img
from arch.image import OUTLIER, PARAM
from arch.isa import MATMUL_OPCODE, Buffer, Deq, Mode, Opcode
from arch.numerics import (
    quantize_activations,
    quantize_activations_grouped,
    smooth_activations,
)
from arch.program import Program
from compiler import tiling as tiling_mod
from compiler.builder import ProgramBuilder, Region
from compiler.plan import codebook_image, plan_layer, weight_image, weight_image_bytes
from compiler.tiling import dma_shape


@dataclass
class Compiled:
    """A lowered layer: the program, its plan, the tiling, and what it will do."""
    program: Program
    plan: object
    tiling: object
    report: dict = field(default_factory=dict)


def lower(layer, config, tokens, tile=None, block_size=128, image=True, plan=None):
    """Compile `layer` (a `quant.layer.QLayer`) for `config` and `tokens` rows of activations.
    `tile` forces a `tiling.Tiling`; otherwise the cost model picks one. `image=False` leaves
    the weights out of the DRAM image (same program, for timing-only runs). Raises
    `LoweringError` (a `UserError`) when no tiling fits."""
    plan = plan or plan_layer(layer, config, block_size)
    if tile is None:
        tile = tiling_mod.choose(plan, config, tokens)
    else:
        tiling_mod.check(plan, config, tokens, tile)
    return _emit(plan, config, tokens, tile, image)


def _emit(plan, cfg, m, tile, with_weights=True):
    prog = Program(words=[], meta={"layer": plan.name, "tokens": m, "config": cfg.tag,
                                   "tiling": tile.as_dict(), "act_quant": cfg.pe.act_quant})
    emitter = emit_layer(ProgramBuilder(cfg, prog), plan, cfg, m, tile, with_weights)
    program = emitter.b.finish()
    prog.meta["row_block_ends"] = emitter.block_ends      # last instruction of each row block
    prog.meta["tiles"] = emitter.tile_ends        # [m0, rows, n0, n, last instruction] each
    report = tiling_mod.estimate(plan, cfg, m, tile)
    report.update({"layer": plan.name, "tokens": m, "instructions": len(program.words),
                   "tiling": tile.as_dict(), "weight_image_bytes": int(emitter.dram.weight_bytes)})
    return Compiled(program, plan, tile, report)


def emit_layer(builder, plan, cfg, m, tile, with_weights=True, prefix="", inputs=None):
    """Emit the loop nest of one layer into `builder` (and its program's DRAM image): its
    symbols are named `prefix` + `x`, `sx`, `y`, `w`, ..., except those `inputs` maps to an
    existing symbol (`{"x": name, "sx": name}`: a whole block reads a layer's input where the
    previous operator stored it). Returns the `_Emitter` (its `dram`, `tile_ends`,
    `block_ends`)."""
    prog = builder.program
    dram = _DramImage(prog, plan, cfg, m, tile, with_weights, prefix, inputs)
    slots = _scratchpad_slots(plan, cfg, tile, has_outliers=bool(dram.outliers))
    emitter = _Emitter(plan, cfg, prog, dram, slots, builder, tile.mr)
    if dram.has("ones"):          # token_group with outliers: the adder's unit scales
        emitter.load(Buffer.SCALE, slots["sx"][0], "ones", 0, img.ROW_SCALE.itemsize * tile.mr)
    emitter.block_ends = [emitter.row_block(m0, min(tile.mr, m - m0))
                          for m0 in range(0, m, tile.mr)]
    return emitter


# -- the DRAM image -------------------------------------------------------------------------------
class _DramImage:
    """The program's DRAM symbols: activations `x` (lowered, int8) and their row scales `sx`,
    outputs `y`, the weight images of every (n-block, k-step), the scale records `param`, the
    codebooks `cb` and the outlier lists, in the layouts of `arch.image`.

    Members: `nblocks` [(n0, n1)]; `weights` {(block, k-step): (offset, rows, row_bytes,
    bytes)}; `codebooks` {k-step: (offset, bytes)}; `outliers` {(block, k-step): [(offset,
    count)]} (a list longer than one `vout` holds is split); `weight_bytes`."""

    def __init__(self, prog, plan, cfg, m, tile, with_weights, prefix="", inputs=None):
        self.prog, self.plan, self.cfg = prog, plan, cfg
        self.prefix, self.inputs = prefix, dict(inputs or {})
        if "x" not in self.inputs:
            prog.alloc(self.name("x"), (m, plan.kp), "int8")
        # token: one scale per row; token_group: one per k-step and row, k-step-major, so that
        # one k-step's scales of a row block are one contiguous DMA row
        grouped = cfg.pe.act_quant == "token_group"
        if "sx" not in self.inputs:
            prog.alloc(self.name("sx"), (len(plan.ksteps), m) if grouped else (m,), "float32")
        if "y" not in self.inputs:
            prog.alloc(self.name("y"), (m, plan.n), "float32")
        self.nblocks = [(n0, min(plan.n, n0 + tile.nw)) for n0 in range(0, plan.n, tile.nw)]
        self._weights(with_weights)
        self._params()
        self.codebooks = self._codebooks() if plan.kind == "codebook" else {}
        need = tiling_mod.slot_bytes(plan, cfg, tile.mr, tile.nw)
        self.outliers = self._outliers(need["outlier"] // OUTLIER.itemsize)
        if grouped and self.outliers:
            prog.alloc(self.name("ones"), (tile.mr,), "float32")
            prog.write(self.name("ones"), np.ones(tile.mr, np.float32))

    def name(self, sym):
        """The program's name of this layer's symbol `sym`."""
        return self.inputs.get(sym, self.prefix + sym)

    def has(self, sym):
        return self.name(sym) in self.prog.symbols

    def addr(self, sym, off=0):
        return self.prog.symbols[self.name(sym)].addr + off

    def _weights(self, with_weights):
        plan, cfg = self.plan, self.cfg
        self.weights, off = {}, 0
        for bi, (n0, n1) in enumerate(self.nblocks):
            for ks in plan.ksteps:
                size = weight_image_bytes(plan, cfg, ks, n1 - n0)
                rows, rb = dma_shape(size)
                self.weights[(bi, ks.index)] = (off, rows, rb, size)
                off += -(-rows * rb // 64) * 64
        self.weight_bytes = off
        self.prog.alloc(self.name("w"), (off,), "uint8")
        if not with_weights:
            return
        view = self.prog.view(self.name("w"))
        for bi, (n0, n1) in enumerate(self.nblocks):
            for ks in plan.ksteps:
                off, _, _, size = self.weights[(bi, ks.index)]
                data = weight_image(plan, cfg, ks, n0, n1)
                assert len(data) == size
                view[off:off + size] = data

    def _params(self):
        plan = self.plan
        if plan.kind == "uniform":
            rec = img.param_records(self.cfg, plan.scales, plan.zeros,
                                    [ks.bits for ks in plan.ksteps])
        else:
            rec = img.block_param_records(plan.block_scale)
        self.prog.alloc(self.name("param"), (rec.nbytes,), "uint8")
        self.prog.write(self.name("param"), rec.view(np.uint8).ravel())

    def _codebooks(self):
        at, parts, off = {}, [], 0
        for ks in self.plan.ksteps:
            data = codebook_image(self.plan, self.cfg, ks).view(np.uint8).ravel()
            at[ks.index] = (off, len(data))
            parts.append(data)
            off += len(data)
        self.prog.alloc(self.name("cb"), (off,), "uint8")
        self.prog.write(self.name("cb"), np.concatenate(parts))
        return at

    def _outliers(self, cap):
        """The outlier lists of each (n-block, k-step), ordered by (row, lowered column) as in
        the plan: the order `vout` adds them (CLAQ §3.3 outlier reservation)."""
        plan = self.plan
        if plan.ol_vals is None or not len(plan.ol_vals):
            return {}
        at, recs, off = {}, [], 0
        kstep_of = np.searchsorted([ks.offset for ks in plan.ksteps], plan.ol_cols,
                                   side="right") - 1
        for bi, (n0, n1) in enumerate(self.nblocks):
            inb = (plan.ol_rows >= n0) & (plan.ol_rows < n1)
            for ks in plan.ksteps:
                sel = np.nonzero(inb & (kstep_of == ks.index))[0]
                if not len(sel):
                    continue
                r = img.outlier_records(plan.ol_rows[sel] - n0, plan.ol_cols[sel] - ks.offset,
                                        plan.ol_vals[sel])
                at[(bi, ks.index)] = [(off + c0 * OUTLIER.itemsize, min(cap, len(r) - c0))
                                      for c0 in range(0, len(r), cap)]
                recs.append(r)
                off += r.nbytes
        self.prog.alloc(self.name("outliers"), (off,), "uint8")
        self.prog.write(self.name("outliers"), np.concatenate(recs).view(np.uint8))
        return at


# -- scratchpad slots -----------------------------------------------------------------------------
class _Slots:
    """Double-buffered regions in one scratchpad, allocated once per program."""

    def __init__(self, config):
        self.cfg = config
        self.top = {}

    def alloc(self, buf, nbytes, count=2):
        base = self.top.get(buf, 0)
        size = tiling_mod.align(nbytes)
        self.top[buf] = base + size * count
        cap = self.cfg.sram.bytes(buf.name.lower())
        if self.top[buf] > cap:
            return None
        return [base + i * size for i in range(count)]


def _scratchpad_slots(plan, cfg, tile, has_outliers):
    """{role: [slot 0, slot 1]} addresses of every double-buffered region; the regions are the
    ones `tiling.buffer_pieces` sized (role None when the layer has no such region)."""
    pe, kind = cfg.pe, plan.kind
    mr, nw = tile.mr, tile.nw
    need = tiling_mod.slot_bytes(plan, cfg, mr, nw)
    wmax = max(ks.width for ks in plan.ksteps)
    s = _Slots(cfg)
    slots = {
        "act": s.alloc(Buffer.ACT, mr * wmax),
        "sums": s.alloc(Buffer.TABLE, img.SUMS.itemsize * mr),
        "tbl": s.alloc(Buffer.TABLE, need["table_one"]) if pe.kind == "lut" else None,
        "wgt": s.alloc(Buffer.WEIGHT, need["weight_one"]),
        "wexp": (s.alloc(Buffer.WEIGHT, need["expanded_one"])
                 if kind == "codebook" and pe.kind != "lut" else None),
        "cb": s.alloc(Buffer.CODEBOOK, need["codebook_one"]) if kind == "codebook" else None,
        "param": s.alloc(Buffer.SCALE, need["param"]),
        "sx": s.alloc(Buffer.SCALE, img.ROW_SCALE.itemsize * mr),
        "acc": s.alloc(Buffer.ACC, img.ACC.itemsize * mr * nw),
        "out": s.alloc(Buffer.OUT, img.OUT.itemsize * mr * nw),
        "cor": s.alloc(Buffer.OUT, img.OUT.itemsize * mr * nw),
        "ol": s.alloc(Buffer.OUTLIER, need["outlier"]) if has_outliers else None,
    }
    required = {"tbl": pe.kind == "lut", "wexp": kind == "codebook" and pe.kind != "lut",
                "cb": kind == "codebook", "ol": has_outliers}
    missing = [r for r, v in slots.items() if v is None and required.get(r, True)]
    assert not missing, f"tiling.check admitted a tiling that overflows {missing}"
    return slots


# -- the loop nest --------------------------------------------------------------------------------
@dataclass
class _KStep:
    """What the stages of one k-step of one output tile share: the k-step, the tile's block
    index, rows and outputs, the slot parity, and the regions the stages produce."""
    ks: object
    bi: int
    m0: int
    rows: int
    n: int
    p: int
    first: bool
    out: int                 # output tile slot
    cor: int                 # outlier correction slot
    act: int = 0
    xbytes: int = 0
    sums: int = 0
    cb: int = 0
    cb_bytes: int = 0
    tbl: int = 0
    tbl_bytes: int = 0
    wgt: int = 0
    wgt_bytes: int = 0
    param: int = 0
    param_bytes: int = 0
    acc: int = 0


class _Emitter:
    """Emits the loop nest of the module docstring, one method per stage; `compiler.builder`
    derives the tokens from the regions each stage declares."""

    def __init__(self, plan, cfg, prog, dram, slots, builder, mr):
        self.plan, self.cfg, self.prog, self.dram, self.slots = plan, cfg, prog, dram, slots
        self.b = builder
        self.kind, self.pe = plan.kind, cfg.pe
        self.mr = mr
        self.m = prog.symbols[dram.name("y")].shape[0]
        self.grouped = cfg.pe.act_quant == "token_group"
        self.t = 0                   # k-steps so far across the program (slot parity)
        self.tiles = 0               # output tiles so far (output slot parity)
        self.tile_ends = []          # [m0, rows, n0, n, index of its last instruction]
        self.vouts = 0               # outlier lists so far (their slot parity)

    @staticmethod
    def R(buf, addr, nbytes):
        return Region(buf, addr, addr + nbytes)

    def D(self, sym, off, nbytes):
        a = self.dram.addr(sym, off)
        return Region("dram", a, a + nbytes)

    def load(self, buf, sram, sym, off, nbytes):
        """A one-row DMA of `nbytes` at offset `off` of DRAM symbol `sym` into `sram`."""
        self.b.emit(Opcode.LOAD, reads=[self.D(sym, off, nbytes)],
                    writes=[self.R(buf, sram, nbytes)],
                    buf=buf, sram=sram, dram=self.dram.addr(sym, off), rows=1,
                    row_bytes=nbytes, dram_stride=nbytes)

    # -- the outer loops ----------------------------------------------------------------------
    def row_block(self, m0, rows):
        """One row block: its activation scales, then every output tile. Returns the index of
        its last instruction."""
        sx = self.slots["sx"][(m0 // self.mr) % 2]
        if not self.grouped:
            self.load(Buffer.SCALE, sx, "sx", img.ROW_SCALE.itemsize * m0,
                      img.ROW_SCALE.itemsize * rows)
        for bi, (n0, n1) in enumerate(self.dram.nblocks):
            last = self.output_tile(m0, rows, bi, n0, n1 - n0, sx)
        return last

    def output_tile(self, m0, rows, bi, n0, n, sx):
        """One (rows x n) output tile: the reduction over every k-step, then scale and store."""
        out, cor = self.slots["out"][self.tiles % 2], self.slots["cor"][self.tiles % 2]
        self.tiles += 1
        has_corr = False
        for si, ks in enumerate(self.plan.ksteps):
            c = _KStep(ks, bi, m0, rows, n, self.t % 2, si == 0, out, cor)
            self.t += 1
            has_corr |= self.kstep(c, first_vout=self.grouped or not has_corr)
        last = self.scale_and_store(m0, rows, n0, n, sx, out, cor, has_corr)
        self.tile_ends.append([m0, rows, n0, n, last])
        return last

    def kstep(self, c, first_vout):
        """The stages of one k-step, in the order the units consume them. Returns whether an
        outlier list was applied."""
        self.load_activations(c)
        if self.kind == "uniform" and self.pe.kind != "lut":
            self.row_sums(c)
        if self.kind == "codebook":
            self.load_codebook(c)
        if self.pe.kind == "lut":
            self.build_tables(c)
        self.load_weights(c)
        if self.kind == "codebook" and self.pe.kind != "lut":
            self.expand_codebook(c)
        self.load_params(c)
        self.matmul(c)
        self.dequantize(c)
        return self.outliers(c, first_vout)

    # -- the stages of one k-step ------------------------------------------------------------
    def load_activations(self, c):
        """The k-step's columns of the row block's lowered activations."""
        plan = self.plan
        c.act, c.xbytes = self.slots["act"][c.p], c.rows * c.ks.width
        off = c.m0 * plan.kp + c.ks.offset
        self.b.emit(Opcode.LOAD, reads=[self.D("x", off, (c.rows - 1) * plan.kp + c.ks.width)],
                    writes=[self.R(Buffer.ACT, c.act, c.xbytes)],
                    buf=Buffer.ACT, sram=c.act, dram=self.dram.addr("x", off), rows=c.rows,
                    row_bytes=c.ks.width, dram_stride=plan.kp)
        c.sums = self.slots["sums"][c.p]

    def row_sums(self, c):
        """Σx per row for the zero-point correction of unsigned codes (bit-serial, MAC)."""
        self.b.emit(Opcode.VSUM, reads=[self.R(Buffer.ACT, c.act, c.xbytes)],
                    writes=[self.R(Buffer.TABLE, c.sums, img.SUMS.itemsize * c.rows)],
                    rows=c.rows, cols=c.ks.width, act=c.act, sums=c.sums)

    def load_codebook(self, c):
        """The k-step's fixed-point centroids (CLAQ §3.2: one codebook per column)."""
        off, c.cb_bytes = self.dram.codebooks[c.ks.index]
        c.cb = self.slots["cb"][c.p]
        self.load(Buffer.CODEBOOK, c.cb, "cb", off, c.cb_bytes)

    def build_tables(self, c):
        """The table precompute (LUT Tensor Core §3.1, Fig. 6): signed sums of g activations
        (uniform, with Σx as a by-product, T-MAC §3.3) or centroid sums (codebook)."""
        ks, cfg = c.ks, self.cfg
        c.tbl = self.slots["tbl"][c.p]
        mode = Mode.UNIFORM if self.kind == "uniform" else Mode.CODEBOOK
        c.tbl_bytes = img.table_bytes(cfg, mode, c.rows, ks.kgroups, ks.bits)
        reads = [self.R(Buffer.ACT, c.act, c.xbytes)]
        writes = [self.R(Buffer.TABLE, c.tbl, c.tbl_bytes)]
        if mode is Mode.UNIFORM:
            writes.append(self.R(Buffer.TABLE, c.sums, img.SUMS.itemsize * c.rows))
            bits, cb = 1, 0
        else:
            reads.append(self.R(Buffer.CODEBOOK, c.cb, c.cb_bytes))
            bits, cb = ks.bits, c.cb
        self.b.emit(Opcode.TBL, reads=reads, writes=writes, mode=mode, bits=bits, rows=c.rows,
                    ngroups=ks.kgroups, act=c.act, tbl=c.tbl, cb=cb, sums=c.sums)

    def load_weights(self, c):
        """The (n-block, k-step) weight image (`arch.image` layout of the PE kind)."""
        off, rows, rb, c.wgt_bytes = self.dram.weights[(c.bi, c.ks.index)]
        c.wgt = self.slots["wgt"][c.p]
        self.b.emit(Opcode.LOAD, reads=[self.D("w", off, rows * rb)],
                    writes=[self.R(Buffer.WEIGHT, c.wgt, rows * rb)],
                    buf=Buffer.WEIGHT, sram=c.wgt, dram=self.dram.addr("w", off), rows=rows,
                    row_bytes=rb, dram_stride=rb)

    def expand_codebook(self, c):
        """Codes to centroids on chip for the arrays that multiply weights (bit-serial, MAC)."""
        e = self.slots["wexp"][c.p]
        ebytes = c.n * c.ks.width * (self.pe.centroid_bits // 8)
        self.b.emit(Opcode.CBX, reads=[self.R(Buffer.WEIGHT, c.wgt, c.wgt_bytes),
                                       self.R(Buffer.CODEBOOK, c.cb, c.cb_bytes)],
                    writes=[self.R(Buffer.WEIGHT, e, ebytes)],
                    n=c.n, cols=c.ks.width, bits=c.ks.bits, src=c.wgt, dst=e, cb=c.cb)
        c.wgt, c.wgt_bytes = e, ebytes

    def load_params(self, c):
        """Scale records: one per output channel (uniform) or one block scale (codebook)."""
        n0 = self.dram.nblocks[c.bi][0]
        if self.kind == "uniform":
            off = (c.ks.index * self.plan.n + n0) * PARAM.itemsize
        else:
            off = c.ks.index * PARAM.itemsize
        c.param_bytes = img.param_bytes(self.kind == "codebook", c.n)
        c.param = self.slots["param"][c.p]
        self.load(Buffer.SCALE, c.param, "param", off, c.param_bytes)
        if self.grouped:
            # the k-step's activation scales of these rows, right behind the records
            rs = img.ROW_SCALE.itemsize
            self.load(Buffer.SCALE, c.param + img.rowscale_offset(self.kind == "codebook", c.n),
                      "sx", rs * (c.ks.index * self.m + c.m0), rs * c.rows)
            c.param_bytes += rs * c.rows

    def matmul(self, c):
        """The block's lookups (LUT Tensor Core §3.3 LMMA), bit-serial steps or MACs into the
        accumulators."""
        pe, ks = self.pe, c.ks
        c.acc = self.slots["acc"][c.p]
        lut = pe.kind == "lut"
        src, src_bytes = (c.tbl, c.tbl_bytes) if lut else (c.act, c.xbytes)
        if self.kind == "uniform":
            bits, mode = ks.bits, Mode.UNIFORM
        else:
            bits, mode = (ks.bits if lut else pe.centroid_bits), Mode.CODEBOOK
        self.b.emit(MATMUL_OPCODE[pe.kind],
                    reads=[self.R(Buffer.TABLE if lut else Buffer.ACT, src, src_bytes),
                           self.R(Buffer.WEIGHT, c.wgt, c.wgt_bytes)],
                    writes=[self.R(Buffer.ACC, c.acc, img.ACC.itemsize * c.rows * c.n)],
                    rows=c.rows, n=c.n, kgroups=ks.kgroups, bits=bits, mode=mode,
                    accumulate=0, src=src, wgt=c.wgt, dst=c.acc)

    def dequantize(self, c):
        """Scale and zero correction after the group's accumulation (DESIGN.md section 3),
        accumulated into the output tile in k-step order."""
        if self.kind == "codebook":
            deq = Deq.BLOCK
        else:
            deq = Deq.LUT if self.pe.kind == "lut" else Deq.ZERO
        tile = img.OUT.itemsize * c.rows * c.n
        reads = [self.R(Buffer.ACC, c.acc, img.ACC.itemsize * c.rows * c.n),
                 self.R(Buffer.SCALE, c.param, c.param_bytes)]
        if deq is not Deq.BLOCK:
            reads.append(self.R(Buffer.TABLE, c.sums, img.SUMS.itemsize * c.rows))
        if not c.first:
            reads.append(self.R(Buffer.OUT, c.out, tile))
        self.b.emit(Opcode.VDEQ, reads=reads, writes=[self.R(Buffer.OUT, c.out, tile)],
                    rows=c.rows, n=c.n, deq=deq, first=int(c.first), acc=c.acc, out=c.out,
                    param=c.param, sums=c.sums, rowscale=int(self.grouped))

    def outliers(self, c, first):
        """The sparse fp16 correction of this (n-block, k-step) (CLAQ §3.3 outlier
        reservation), kept apart from the outputs in the correction tile. Returns whether any
        list was applied."""
        applied = False
        tile = img.OUT.itemsize * c.rows * c.n
        for off, count in self.dram.outliers.get((c.bi, c.ks.index), ()):
            lst = self.slots["ol"][self.vouts % 2]
            nbytes = count * OUTLIER.itemsize
            self.load(Buffer.OUTLIER, lst, "outliers", off, nbytes)
            reads = [self.R(Buffer.OUTLIER, lst, nbytes), self.R(Buffer.ACT, c.act, c.xbytes)]
            if not first:
                reads.append(self.R(Buffer.OUT, c.cor, tile))
            self.b.emit(Opcode.VOUT, reads=reads, writes=[self.R(Buffer.OUT, c.cor, tile)],
                        rows=c.rows, n=c.n, k=c.ks.width, count=count, first=int(first),
                        list=lst, act=c.act, out=c.cor)
            first, applied = False, True
            self.vouts += 1
        if applied and self.grouped:
            self.fold_correction(c)
        return applied

    def fold_correction(self, c):
        """token_group: this k-step's correction O, at its own activation scale, into the
        output tile: O = O·sx (the scales behind the records), then out = (out + O)·1."""
        tile = img.OUT.itemsize * c.rows * c.n
        rs = img.ROW_SCALE.itemsize * c.rows
        at = c.param + img.rowscale_offset(self.kind == "codebook", c.n)
        self.b.emit(Opcode.VSCALE, reads=[self.R(Buffer.OUT, c.cor, tile),
                                          self.R(Buffer.SCALE, at, rs)],
                    writes=[self.R(Buffer.OUT, c.cor, tile)],
                    rows=c.rows, n=c.n, add=0, out=c.cor, scale=at, corr=0)
        ones = self.slots["sx"][0]
        self.b.emit(Opcode.VSCALE, reads=[self.R(Buffer.OUT, c.out, tile),
                                          self.R(Buffer.OUT, c.cor, tile),
                                          self.R(Buffer.SCALE, ones, rs)],
                    writes=[self.R(Buffer.OUT, c.out, tile)],
                    rows=c.rows, n=c.n, add=1, out=c.out, scale=ones, corr=c.cor)

    # -- the end of an output tile ------------------------------------------------------------
    def scale_and_store(self, m0, rows, n0, n, sx, out, cor, has_corr):
        """y = (out + O) · sx per row, then the tile to DRAM. Returns the store's index."""
        plan = self.plan
        tile = img.OUT.itemsize * rows * n
        if not self.grouped:        # token_group: every k-step's scale is already applied
            reads = [self.R(Buffer.OUT, out, tile),
                     self.R(Buffer.SCALE, sx, img.ROW_SCALE.itemsize * rows)]
            if has_corr:
                reads.append(self.R(Buffer.OUT, cor, tile))
            self.b.emit(Opcode.VSCALE, reads=reads, writes=[self.R(Buffer.OUT, out, tile)],
                        rows=rows, n=n, add=int(has_corr), out=out, scale=sx, corr=cor)
        off = img.OUT.itemsize * (m0 * plan.n + n0)
        return self.b.emit(Opcode.STORE, reads=[self.R(Buffer.OUT, out, tile)],
                           writes=[self.D("y", off, img.OUT.itemsize * ((rows - 1) * plan.n + n))],
                           buf=Buffer.OUT, sram=out, dram=self.dram.addr("y", off), rows=rows,
                           row_bytes=img.OUT.itemsize * n, dram_stride=img.OUT.itemsize * plan.n)


# -- running a compiled layer on activations ------------------------------------------------------
def host_activations(plan, act_quant, x):
    """The host's quantization of float activations `x [M, K]` for `plan` under `act_quant`:
    (xq [M, K], sx), sx [M] (token; smooth, after dividing X by `plan.smooth`) or
    [M, k-steps] (token_group: one scale per row and k-step)."""
    if act_quant == "token_group":
        return quantize_activations_grouped(x, [ks.cols for ks in plan.ksteps])
    if act_quant == "smooth":
        x = smooth_activations(x, plan.smooth)
    return quantize_activations(x)


def write_inputs(compiled, x):
    """Quantize float activations `x [M, K]` (the host's job, `host_activations`) as the
    config's `pe.act_quant` says and write them, lowered, into the program's image. Returns
    (xq, sx)."""
    xq, sx = host_activations(compiled.plan, compiled.program.meta.get("act_quant", "token"), x)
    # token_group's scales are k-step-major in DRAM (one DMA row per k-step and row block)
    compiled.program.write("sx", np.ascontiguousarray(sx.T) if sx.ndim == 2 else sx)
    compiled.program.write("x", compiled.plan.lower_activations(xq))
    return xq, sx
