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
of the next k-step overlap the compute of this one. The tiling (mr, nw) is chosen by
`compiler.tiling` under the scratchpad capacities.
"""

from dataclasses import dataclass, field

import numpy as np

from arch.isa import Buffer, Deq, Mode, Opcode
from arch.program import Program
from compiler import tiling as tiling_mod
from compiler.builder import ProgramBuilder, Region
from compiler.plan import codebook_image, plan_layer, weight_image, weight_image_bytes
from sim.executor import BLOCK_PARAM, OUTLIER, PARAM

MAX_DMA_ROW = 32768          # bytes per DMA row we use (the field allows 65535)


@dataclass
class Compiled:
    """A lowered layer: the program, its plan, the tiling, and what it will do."""
    program: Program
    plan: object
    tiling: object
    report: dict = field(default_factory=dict)


def dma_shape(nbytes):
    """(rows, row_bytes) covering `nbytes` with rows of at most MAX_DMA_ROW bytes; the region
    is padded up to rows * row_bytes."""
    if nbytes <= MAX_DMA_ROW:
        return 1, max(nbytes, 1)
    rows = -(-nbytes // MAX_DMA_ROW)
    row_bytes = -(-nbytes // rows)
    return rows, row_bytes


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


def _emit(plan, cfg, m, tile, image=True):
    pe = cfg.pe
    kind = plan.kind
    prog = Program(words=[], meta={"layer": plan.name, "tokens": m, "config": cfg.tag,
                                   "tiling": tile.as_dict()})
    b = ProgramBuilder(cfg, prog)
    mr, nw = tile.mr, tile.nw
    ksteps = plan.ksteps
    wmax = max(ks.width for ks in ksteps)
    need = tiling_mod.slot_bytes(plan, cfg, mr, nw)

    # -- DRAM image -------------------------------------------------------------------------------
    prog.alloc("x", (m, plan.kp), "int8")
    prog.alloc("sx", (m,), "float32")
    prog.alloc("y", (m, plan.n), "float32")
    nblocks = [(n0, min(plan.n, n0 + nw)) for n0 in range(0, plan.n, nw)]
    wimg = {}
    woff = 0
    for bi, (n0, n1) in enumerate(nblocks):
        for ks in ksteps:
            size = weight_image_bytes(plan, cfg, ks, n1 - n0)
            rows, rb = dma_shape(size)
            wimg[(bi, ks.index)] = (woff, rows, rb, size)
            woff += -(-rows * rb // 64) * 64
    prog.alloc("w", (woff,), "uint8")
    if image:
        wview = prog.view("w")
        for bi, (n0, n1) in enumerate(nblocks):
            for ks in ksteps:
                off, _, _, size = wimg[(bi, ks.index)]
                img = weight_image(plan, cfg, ks, n0, n1)
                assert len(img) == size
                wview[off:off + size] = img
    if kind == "uniform":
        rec = np.zeros((len(ksteps), plan.n), PARAM)
        rec["scale"] = plan.scales.T
        if pe.kind == "lut":
            zp = 2 * plan.zeros + 1 - (1 << np.array([ks.bits for ks in ksteps]))[None, :]
        else:
            zp = plan.zeros
        rec["zero"] = zp.T
    else:
        rec = np.zeros((len(ksteps), 1), BLOCK_PARAM)
        rec["scale"][:, 0] = plan.block_scale
    prog.alloc("param", (rec.nbytes,), "uint8")
    prog.write("param", rec.view(np.uint8).ravel())
    cb_at = {}
    if kind == "codebook":
        imgs = []
        off = 0
        for ks in ksteps:
            img = codebook_image(plan, cfg, ks).view(np.uint8).ravel()
            cb_at[ks.index] = (off, len(img))
            imgs.append(img)
            off += len(img)
        prog.alloc("cb", (off,), "uint8")
        prog.write("cb", np.concatenate(imgs))
    ol_at = {}
    ol_cap = need["outlier"] // OUTLIER.itemsize
    if plan.ol_vals is not None and len(plan.ol_vals):
        recs, off = [], 0
        kstep_of = np.searchsorted([ks.offset for ks in ksteps], plan.ol_cols, side="right") - 1
        for bi, (n0, n1) in enumerate(nblocks):
            inb = (plan.ol_rows >= n0) & (plan.ol_rows < n1)
            for ks in ksteps:
                sel = np.nonzero(inb & (kstep_of == ks.index))[0]
                if not len(sel):
                    continue
                r = np.zeros(len(sel), OUTLIER)
                r["n"] = plan.ol_rows[sel] - n0
                r["k"] = plan.ol_cols[sel] - ks.offset
                r["v"] = plan.ol_vals[sel]
                # order within the block: by (row, lowered column), as in the plan
                pieces = []
                for c0 in range(0, len(r), ol_cap):
                    pieces.append((off + c0 * OUTLIER.itemsize, min(ol_cap, len(r) - c0)))
                ol_at[(bi, ks.index)] = pieces
                recs.append(r)
                off += r.nbytes
        prog.alloc("outliers", (off,), "uint8")
        prog.write("outliers", np.concatenate(recs).view(np.uint8))

    # -- scratchpad slots -------------------------------------------------------------------------
    slots = _Slots(cfg)
    act = slots.alloc(Buffer.ACT, mr * wmax)
    sums = slots.alloc(Buffer.TABLE, 4 * mr)
    tbl = slots.alloc(Buffer.TABLE, need["table_one"]) if pe.kind == "lut" else None
    wgt = slots.alloc(Buffer.WEIGHT, need["weight_one"])
    wexp = (slots.alloc(Buffer.WEIGHT, need["expanded_one"])
            if kind == "codebook" and pe.kind != "lut" else None)
    cbs = slots.alloc(Buffer.CODEBOOK, need["codebook_one"]) if kind == "codebook" else None
    par = slots.alloc(Buffer.SCALE, PARAM.itemsize * (nw if kind == "uniform" else 1))
    sxs = slots.alloc(Buffer.SCALE, 4 * mr)
    acc = slots.alloc(Buffer.ACC, 4 * mr * nw)
    out = slots.alloc(Buffer.OUT, 4 * mr * nw)
    cor = slots.alloc(Buffer.OUT, 4 * mr * nw)
    ols = slots.alloc(Buffer.OUTLIER, need["outlier"]) if ol_at else None
    fitted = [act, sums, wgt, par, sxs, acc, out, cor]
    fitted += [s for s in (tbl, wexp, cbs, ols) if s is not None]
    assert all(s is not None for s in fitted), "tiling.check admitted a tiling that overflows"

    def R(buf, addr, nbytes):
        return Region(buf, addr, addr + nbytes)

    def D(sym, off, nbytes):
        a = prog.symbols[sym].addr + off
        return Region("dram", a, a + nbytes)

    vouts = 0                                # outlier lists so far (their slot parity)
    t = 0                                    # k-step counter across the program (slot parity)
    tile_no = 0
    x_sym, y_sym = prog.symbols["x"], prog.symbols["y"]
    block_ends = []
    for m0 in range(0, m, mr):
        rows = min(mr, m - m0)
        sx_slot = sxs[(m0 // mr) % 2]
        b.emit(Opcode.LOAD, reads=[D("sx", 4 * m0, 4 * rows)],
               writes=[R(Buffer.SCALE, sx_slot, 4 * rows)],
               buf=Buffer.SCALE, sram=sx_slot, dram=prog.symbols["sx"].addr + 4 * m0, rows=1,
               row_bytes=4 * rows, dram_stride=4 * rows)
        for bi, (n0, n1) in enumerate(nblocks):
            n = n1 - n0
            o_slot, c_slot = out[tile_no % 2], cor[tile_no % 2]
            tile_no += 1
            first_vout = True
            for si, ks in enumerate(ksteps):
                p = t % 2
                t += 1
                width, kg = ks.width, ks.kgroups
                a_slot = act[p]
                xbytes = rows * width
                b.emit(Opcode.LOAD,
                       reads=[D("x", m0 * plan.kp + ks.offset, (rows - 1) * plan.kp + width)],
                       writes=[R(Buffer.ACT, a_slot, xbytes)],
                       buf=Buffer.ACT, sram=a_slot, dram=x_sym.addr + m0 * plan.kp + ks.offset,
                       rows=rows, row_bytes=width, dram_stride=plan.kp)
                s_slot = sums[p]
                if kind == "uniform" and pe.kind != "lut":
                    b.emit(Opcode.VSUM, reads=[R(Buffer.ACT, a_slot, xbytes)],
                           writes=[R(Buffer.TABLE, s_slot, 4 * rows)],
                           rows=rows, cols=width, act=a_slot, sums=s_slot)
                if kind == "codebook":
                    coff, clen = cb_at[ks.index]
                    cb_slot = cbs[p]
                    b.emit(Opcode.LOAD, reads=[D("cb", coff, clen)],
                           writes=[R(Buffer.CODEBOOK, cb_slot, clen)],
                           buf=Buffer.CODEBOOK, sram=cb_slot,
                           dram=prog.symbols["cb"].addr + coff, rows=1, row_bytes=clen,
                           dram_stride=clen)
                if pe.kind == "lut":
                    t_slot = tbl[p]
                    if kind == "uniform":
                        tbytes = rows * kg * cfg.table_entries * cfg.table_entry_bytes
                        b.emit(Opcode.TBL, reads=[R(Buffer.ACT, a_slot, xbytes)],
                               writes=[R(Buffer.TABLE, t_slot, tbytes),
                                       R(Buffer.TABLE, s_slot, 4 * rows)],
                               mode=Mode.UNIFORM, bits=1, rows=rows, ngroups=kg, act=a_slot,
                               tbl=t_slot, cb=0, sums=s_slot)
                    else:
                        tbytes = rows * kg * (1 << (ks.g * ks.bits)) * cfg.table_entry_bytes
                        b.emit(Opcode.TBL, reads=[R(Buffer.ACT, a_slot, xbytes),
                                                  R(Buffer.CODEBOOK, cb_slot, clen)],
                               writes=[R(Buffer.TABLE, t_slot, tbytes)],
                               mode=Mode.CODEBOOK, bits=ks.bits, rows=rows, ngroups=kg,
                               act=a_slot, tbl=t_slot, cb=cb_slot, sums=s_slot)
                woff, wrows, wrb, wlen = wimg[(bi, ks.index)]
                w_slot = wgt[p]
                b.emit(Opcode.LOAD, reads=[D("w", woff, wrows * wrb)],
                       writes=[R(Buffer.WEIGHT, w_slot, wrows * wrb)],
                       buf=Buffer.WEIGHT, sram=w_slot, dram=prog.symbols["w"].addr + woff,
                       rows=wrows, row_bytes=wrb, dram_stride=wrb)
                mm_w = w_slot
                if kind == "codebook" and pe.kind != "lut":
                    e_slot = wexp[p]
                    ebytes = n * width * (pe.centroid_bits // 8)
                    b.emit(Opcode.CBX, reads=[R(Buffer.WEIGHT, w_slot, wlen),
                                              R(Buffer.CODEBOOK, cb_slot, clen)],
                           writes=[R(Buffer.WEIGHT, e_slot, ebytes)],
                           n=n, cols=width, bits=ks.bits, src=w_slot, dst=e_slot, cb=cb_slot)
                    mm_w, wlen = e_slot, ebytes
                p_slot = par[p]
                if kind == "uniform":
                    poff = (ks.index * plan.n + n0) * PARAM.itemsize
                    plen = n * PARAM.itemsize
                else:
                    poff, plen = ks.index * PARAM.itemsize, PARAM.itemsize
                b.emit(Opcode.LOAD, reads=[D("param", poff, plen)],
                       writes=[R(Buffer.SCALE, p_slot, plen)],
                       buf=Buffer.SCALE, sram=p_slot, dram=prog.symbols["param"].addr + poff,
                       rows=1, row_bytes=plen, dram_stride=plen)
                acc_slot = acc[p]
                src = t_slot if pe.kind == "lut" else a_slot
                src_bytes = tbytes if pe.kind == "lut" else xbytes
                if kind == "uniform":
                    mm_bits, mode = ks.bits, Mode.UNIFORM
                else:
                    mode = Mode.CODEBOOK
                    mm_bits = ks.bits if pe.kind == "lut" else pe.centroid_bits
                b.emit(tiling_mod.MATMUL_OP[pe.kind],
                       reads=[R(Buffer.TABLE if pe.kind == "lut" else Buffer.ACT, src, src_bytes),
                              R(Buffer.WEIGHT, mm_w, wlen)],
                       writes=[R(Buffer.ACC, acc_slot, 4 * rows * n)],
                       rows=rows, n=n, kgroups=kg, bits=mm_bits, mode=mode, accumulate=0,
                       src=src, wgt=mm_w, dst=acc_slot)
                if kind == "codebook":
                    deq = Deq.BLOCK
                else:
                    deq = Deq.LUT if pe.kind == "lut" else Deq.ZERO
                deq_reads = [R(Buffer.ACC, acc_slot, 4 * rows * n), R(Buffer.SCALE, p_slot, plen)]
                if deq is not Deq.BLOCK:
                    deq_reads.append(R(Buffer.TABLE, s_slot, 4 * rows))
                b.emit(Opcode.VDEQ, reads=deq_reads + ([] if si == 0 else
                                                       [R(Buffer.OUT, o_slot, 4 * rows * n)]),
                       writes=[R(Buffer.OUT, o_slot, 4 * rows * n)],
                       rows=rows, n=n, deq=deq, first=int(si == 0), acc=acc_slot, out=o_slot,
                       param=p_slot, sums=s_slot)
                for loff, count in ol_at.get((bi, ks.index), ()):
                    l_slot = ols[vouts % 2]
                    lbytes = count * OUTLIER.itemsize
                    b.emit(Opcode.LOAD, reads=[D("outliers", loff, lbytes)],
                           writes=[R(Buffer.OUTLIER, l_slot, lbytes)],
                           buf=Buffer.OUTLIER, sram=l_slot,
                           dram=prog.symbols["outliers"].addr + loff, rows=1, row_bytes=lbytes,
                           dram_stride=lbytes)
                    b.emit(Opcode.VOUT, reads=[R(Buffer.OUTLIER, l_slot, lbytes),
                                               R(Buffer.ACT, a_slot, xbytes)]
                           + ([] if first_vout else [R(Buffer.OUT, c_slot, 4 * rows * n)]),
                           writes=[R(Buffer.OUT, c_slot, 4 * rows * n)],
                           rows=rows, n=n, k=width, count=count, first=int(first_vout),
                           list=l_slot, act=a_slot, out=c_slot)
                    first_vout = False
                    vouts += 1
            has_corr = not first_vout
            b.emit(Opcode.VSCALE, reads=[R(Buffer.OUT, o_slot, 4 * rows * n),
                                         R(Buffer.SCALE, sx_slot, 4 * rows)]
                   + ([R(Buffer.OUT, c_slot, 4 * rows * n)] if has_corr else []),
                   writes=[R(Buffer.OUT, o_slot, 4 * rows * n)],
                   rows=rows, n=n, add=int(has_corr), out=o_slot, scale=sx_slot,
                   corr=c_slot)
            last = b.emit(Opcode.STORE, reads=[R(Buffer.OUT, o_slot, 4 * rows * n)],
                          writes=[D("y", 4 * (m0 * plan.n + n0),
                                    4 * ((rows - 1) * plan.n + n))],
                          buf=Buffer.OUT, sram=o_slot,
                          dram=y_sym.addr + 4 * (m0 * plan.n + n0),
                          rows=rows, row_bytes=4 * n, dram_stride=4 * plan.n)
        block_ends.append(last)
    program = b.finish()
    prog.meta["row_block_ends"] = block_ends      # last instruction of each row block
    report = tiling_mod.estimate(plan, cfg, m, tile)
    report.update({"layer": plan.name, "tokens": m, "instructions": len(program.words),
                   "tiling": tile.as_dict(), "weight_image_bytes": int(woff)})
    return Compiled(program, plan, tile, report)


# -- running a compiled layer on activations ------------------------------------------------------
def write_inputs(compiled, x):
    """Quantize float activations `x [M, K]` (the host's job) and write them, lowered, into the
    program's image. Returns (xq, sx)."""
    from sim import golden
    xq, sx = golden.quantize_activations(x)
    compiled.program.write("x", compiled.plan.lower_activations(xq))
    compiled.program.write("sx", sx)
    return xq, sx
