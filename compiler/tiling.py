"""Choosing the output tile (mr tokens x nw outputs) of a layer: what fits, and what it costs.

The cost model is a per-unit roofline of the loop nest in `compiler.lower`: cycles of the PE
array, the table unit, the vector unit and the DRAM port for a tiling, the slowest of which bounds
the run because the decoupled queues overlap the others. Among the tilings whose double-buffered
slots fit every scratchpad, `choose` takes the one with the fewest estimated cycles, then the
fewest instructions.
"""

from dataclasses import asdict, dataclass

import numpy as np

from arch import image, timing
from arch.image import OUTLIER, PARAM, ROW_SCALE
from arch.isa import MATMUL_OPCODE, Insn, Mode, Opcode, field_max
from compiler.plan import LoweringError, weight_image_bytes

# Limits of a tile, derived from the ISA's field widths:
# every instruction of a tile carries its token rows (`tbl` and `vout` in 8 bits) ...
MAX_ROWS = min(field_max(op, "rows") for op in (Opcode.TBL, Opcode.VOUT, Opcode.VDEQ,
                                                 Opcode.VSCALE, Opcode.LOAD, Opcode.STORE))
# ... a DMA row is at most the largest power of two `row_bytes` holds (32 KiB) ...
MAX_DMA_ROW = (field_max(Opcode.LOAD, "row_bytes") + 1) // 2
# ... the scale records of one n-block travel in one DMA row, below that bound ...
MAX_N = (MAX_DMA_ROW - 1) // PARAM.itemsize
# ... and one `vout` applies at most `count` records.
MAX_VOUT = field_max(Opcode.VOUT, "count")


@dataclass(frozen=True)
class Tiling:
    mr: int             # token rows per output tile
    nw: int             # outputs per output tile

    def as_dict(self):
        return asdict(self)


def dma_shape(nbytes):
    """(rows, row_bytes) covering `nbytes` with rows of at most MAX_DMA_ROW bytes; the region
    is padded up to rows * row_bytes."""
    if nbytes <= MAX_DMA_ROW:
        return 1, max(nbytes, 1)
    rows = -(-nbytes // MAX_DMA_ROW)
    row_bytes = -(-nbytes // rows)
    return rows, row_bytes


def _weight_bytes(plan, config, ks, n):
    """Bytes of one k-step's weight image for n outputs, padded as the DMA moves it."""
    rows, row_bytes = dma_shape(weight_image_bytes(plan, config, ks, n))
    return rows * row_bytes


def _mode(plan):
    return Mode.UNIFORM if plan.kind == "uniform" else Mode.CODEBOOK


def slot_bytes(plan, config, mr, nw):
    """Bytes of one slot of each double-buffered region for tile (mr, nw)."""
    pe = config.pe
    wmax = max(ks.width for ks in plan.ksteps)
    out = {"act": mr * wmax,
           "weight_one": max(_weight_bytes(plan, config, ks, nw) for ks in plan.ksteps),
           "acc": 4 * mr * nw, "out": 4 * mr * nw}
    if pe.kind == "lut":
        mode = _mode(plan)
        out["table_one"] = max(image.table_bytes(config, mode, mr, ks.kgroups, ks.bits)
                               for ks in plan.ksteps)
    if plan.kind == "codebook":
        out["codebook_one"] = max(ks.width * (1 << ks.bits) * pe.centroid_bits // 8
                                  for ks in plan.ksteps)
        if pe.kind != "lut":
            out["expanded_one"] = nw * wmax * pe.centroid_bits // 8
    half = config.sram.bytes("outlier") // 2 // OUTLIER.itemsize
    out["outlier"] = min(MAX_VOUT, half) * OUTLIER.itemsize
    # the scale records of one k-step; under token_group its row scales follow them
    out["param"] = (image.param_bytes(plan.kind == "codebook", nw)
                    + (ROW_SCALE.itemsize * mr if _grouped(config) else 0))
    return out


def _grouped(config):
    return config.pe.act_quant == "token_group"


def _folded_corrections(plan, nw):
    """{n-block width: (n-block, k-step) pairs holding outliers}: under token_group each such
    pair's correction is folded into its tile by two `vscale`."""
    if plan.ol_vals is None or not len(plan.ol_vals):
        return {}
    offsets = np.array([ks.offset for ks in plan.ksteps])
    kstep = np.searchsorted(offsets, plan.ol_cols, side="right") - 1
    pairs = np.unique(plan.ol_rows // nw * len(plan.ksteps) + kstep)
    widths = np.minimum(nw, plan.n - pairs // len(plan.ksteps) * nw)
    sizes, counts = np.unique(widths, return_counts=True)
    return {int(s): int(c) for s, c in zip(sizes, counts, strict=True)}


def buffer_pieces(plan, config, mr, nw):
    """The regions each scratchpad holds for tile (mr, nw): {buffer: [bytes of one slot, ...]};
    every region is double-buffered. `compiler.lower` allocates exactly these."""
    need = slot_bytes(plan, config, mr, nw)
    pe = config.pe
    has_outliers = plan.ol_vals is not None and len(plan.ol_vals) > 0
    pieces = {
        "act": [need["act"]],
        "table": [4 * mr] + ([need["table_one"]] if pe.kind == "lut" else []),
        "weight": [need["weight_one"]] + ([need["expanded_one"]] if "expanded_one" in need
                                          else []),
        "codebook": [need["codebook_one"]] if plan.kind == "codebook" else [],
        "scale": [need["param"], ROW_SCALE.itemsize * mr],
        "acc": [need["acc"]],
        "out": [need["out"], need["out"]],
        "outlier": [need["outlier"]] if has_outliers else [],
    }
    return pieces


def fits(plan, config, mr, nw):
    """None if tile (mr, nw) fits every scratchpad twice over, else the first that overflows."""
    for buf, pieces in buffer_pieces(plan, config, mr, nw).items():
        if sum(2 * align(p) for p in pieces) > config.sram.bytes(buf):
            return buf
    return None


def align(n, a=16):
    return -(-n // a) * a


def check(plan, config, m, tile):
    if not 1 <= tile.mr <= min(m, MAX_ROWS) or not 1 <= tile.nw <= min(plan.n, MAX_N):
        raise LoweringError(f"layer `{plan.name}`: tiling must have 1 <= mr <= "
                            f"{min(m, MAX_ROWS)} and 1 <= nw <= {min(plan.n, MAX_N)}, "
                            f"not mr={tile.mr}, nw={tile.nw}")
    over = fits(plan, config, tile.mr, tile.nw)
    if over:
        raise LoweringError(f"layer `{plan.name}`: tiling mr={tile.mr}, nw={tile.nw} must fit "
                            f"the {over} buffer twice over ({config.source}), not overflow it")


def _candidates(limit, step):
    out, v = set(), step
    while v < limit:
        out.add(v)
        v *= 2
    out.add(limit)
    out.update(c for c in (1, 2, 4, 8) if c <= limit)
    return sorted(out)


def choose(plan, config, m):
    """The cheapest tiling that fits. Raises `LoweringError` if none does."""
    pe = config.pe
    best = None
    for mr in _candidates(min(m, MAX_ROWS), pe.rows if pe.kind != "mac" else 1):
        for nw in _candidates(min(plan.n, MAX_N), pe.cols):
            if fits(plan, config, mr, nw):
                continue
            est = estimate(plan, config, m, Tiling(mr, nw))
            key = (est["cycles"], est["instructions_est"], -mr * nw)
            if best is None or key < best[0]:
                best = (key, Tiling(mr, nw))
    if best is None:
        over = fits(plan, config, 1, min(plan.n, pe.cols))
        raise LoweringError(f"layer `{plan.name}` (K={plan.k}, widest k-step "
                            f"{max(ks.width for ks in plan.ksteps)} columns): no tiling fits; "
                            f"the {over} buffer of {config.source} must hold one 1 x "
                            f"{min(plan.n, pe.cols)} tile twice over")
    return best[1]


def _block_sizes(total, step):
    """{block size: how many} of `total` split into blocks of `step`."""
    sizes = {step: total // step} if total >= step else {}
    if total % step:
        sizes[total % step] = sizes.get(total % step, 0) + 1
    return sizes


def estimate(plan, config, m, tile):
    """Per-unit cycles, DRAM bytes and instruction count of the loop nest for `tile`."""
    pe, t = config.pe, config.timing
    mr, nw = tile.mr, tile.nw
    # blocks come in at most two sizes (full and last): sum over sizes x multiplicity
    row_blocks = _block_sizes(m, mr)
    col_blocks = _block_sizes(plan.n, nw)
    nmb, nnb = sum(row_blocks.values()), sum(col_blocks.values())
    matmul = table = vector = 0
    pe_work = entries = acc_bytes = 0
    op = MATMUL_OPCODE[pe.kind]
    mode = _mode(plan)
    grouped = _grouped(config)
    folds = _folded_corrections(plan, nw) if grouped else {}
    for rows, rcount in row_blocks.items():
        for n, ncount in col_blocks.items():
            times = rcount * ncount
            vdeq = Insn(Opcode.VDEQ, {"rows": rows, "n": n, "rowscale": int(grouped)})
            vscale = Insn(Opcode.VSCALE, {"rows": rows, "n": n})
            # token_group: two vscale per (n-block, k-step) with outliers, none per tile
            vector += rcount * 2 * folds.get(n, 0) * timing.unit_cycles(config, vscale)
            if grouped:
                vector -= times * timing.unit_cycles(config, vscale)
            for ks in plan.ksteps:
                planes = timing.matmul_planes(config, op, mode, ks.bits)
                matmul += times * timing.matmul_cycles(config, op, rows, n, ks.kgroups, planes)
                pe_work += times * timing.matmul_count(config, op, rows, n, ks.kgroups, planes)
                acc_bytes += times * 4 * rows * n
                if pe.kind == "lut":
                    table += times * timing.unit_cycles(
                        config, Insn(Opcode.TBL, {"rows": rows, "ngroups": ks.kgroups}))
                    entries += times * rows * ks.kgroups * image.table_entries(config, mode,
                                                                               ks.bits)
                vector += times * timing.unit_cycles(config, vdeq)       # one vdeq a k-step
            vector += times * timing.unit_cycles(config, vscale)         # one vscale a tile
    weight_bytes = sum(count * _weight_bytes(plan, config, ks, n)
                       for n, count in col_blocks.items() for ks in plan.ksteps) * nmb
    x_bytes = m * plan.kp * nnb
    param_bytes = (PARAM.itemsize * plan.n * len(plan.ksteps) if plan.kind == "uniform"
                   else PARAM.itemsize * len(plan.ksteps) * nnb) * nmb
    cb_bytes = 0
    if plan.kind == "codebook":
        cb_bytes = sum(ks.width * (1 << ks.bits) * pe.centroid_bits // 8
                       for ks in plan.ksteps) * nmb * nnb
    nnz = 0 if plan.ol_vals is None else len(plan.ol_vals)
    ol_bytes = OUTLIER.itemsize * nnz * nmb
    y_bytes = 4 * m * plan.n
    sx_bytes = ROW_SCALE.itemsize * m
    if grouped:     # every tile reloads each k-step's row scales, a short DMA of whole bursts;
        #             outliers add the unit scales
        sx_bytes = sum(count * nnb * len(plan.ksteps)
                       * timing.dram_bytes(config, 1, ROW_SCALE.itemsize * rows)
                       for rows, count in row_blocks.items())
        sx_bytes += ROW_SCALE.itemsize * mr if folds else 0
    dram = {"weights": weight_bytes, "activations": x_bytes + sx_bytes, "params": param_bytes,
            "codebooks": cb_bytes, "outliers": ol_bytes, "outputs": y_bytes}
    dram_bytes = sum(dram.values())
    dram_cycles = timing.dram_transfer_cycles(config, dram_bytes)
    per_kstep = 5 + (1 if plan.kind == "codebook" else 0) + (1 if pe.kind == "lut" or
                                                               plan.kind == "uniform" else 0)
    insns = nmb * (1 + nnb * (2 + len(plan.ksteps) * per_kstep))
    loads = nmb * (1 + nnb * len(plan.ksteps) * 3)
    if grouped:     # a row-scale load per k-step instead of one per row block; fewer vscale
        extra = nnb * len(plan.ksteps) - 1
        insns += nmb * (extra - nnb + 2 * sum(folds.values())) + (1 if folds else 0)
        loads += nmb * extra + (1 if folds else 0)
    units = {"matmul": matmul, "table": table, "vector": vector, "dram": dram_cycles,
             "dispatch": loads * t.dma_setup}
    sram = {"act": x_bytes, "weight": weight_bytes, "table": entries * config.table_entry_bytes,
            "acc": acc_bytes, "scale": param_bytes, "codebook": cb_bytes, "outlier": ol_bytes,
            "out": y_bytes}                        # bytes written into each scratchpad
    return {"cycles": max(units.values()), "unit_cycles": units, "dram_bytes": dram,
            "sram_bytes": sram, "instructions_est": insns, "table_entries": entries,
            timing.MATMUL_COUNTER[op]: pe_work}
