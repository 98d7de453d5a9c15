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
from arch.image import OUT, OUTLIER, PARAM, ROW_SCALE
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
# What the DRAM traffic of an estimate is split into.
DRAM_CATEGORIES = ("weights", "activations", "params", "codebooks", "outliers", "outputs")


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
    shapes = plan.kshapes
    wmax = max(ks.width for ks in shapes)
    out = {"act": mr * wmax,
           "weight_one": max(_weight_bytes(plan, config, ks, nw) for ks in shapes),
           "acc": 4 * mr * nw, "out": 4 * mr * nw}
    if pe.kind == "lut":
        mode = _mode(plan)
        out["table_one"] = max(image.table_bytes(config, mode, mr, ks.kgroups, ks.bits)
                               for ks in shapes)
    if plan.kind == "codebook":
        out["codebook_one"] = max(ks.width * (1 << ks.bits) * pe.centroid_bits // 8
                                  for ks in shapes)
        if pe.kind != "lut":
            out["expanded_one"] = nw * wmax * pe.centroid_bits // 8
    out["outlier"] = slot_bytes_outlier(config)
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


def slot_bytes_outlier(config):
    """Bytes of one outlier-list slot: half the buffer, at most one `vout`'s records."""
    half = config.sram.bytes("outlier") // 2 // OUTLIER.itemsize
    return min(MAX_VOUT, half) * OUTLIER.itemsize


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


def _dma(rows, row_bytes, buf, what, count=1):
    """`count` DMAs of `rows` x `row_bytes` into (or, for `outputs`, out of) scratchpad `buf`,
    counted in the estimate's DRAM category `what`."""
    op = Opcode.STORE if what == "outputs" else Opcode.LOAD
    return Insn(op, {"rows": rows, "row_bytes": row_bytes}), count, buf, what


def _tile_insns(plan, config, rows, n):
    """The instructions of one (rows x n) output tile, as `compiler.lower` emits them:
    [(insn, how many, the scratchpad it writes or the DMA's, DRAM category or None)], one
    entry per k-step shape."""
    pe = config.pe
    op, mode = MATMUL_OPCODE[pe.kind], _mode(plan)
    grouped = _grouped(config)
    out = [_dma(rows, OUT.itemsize * n, "out", "outputs")]
    if not grouped:         # token_group: every k-step's scale is already applied
        out.append((Insn(Opcode.VSCALE, {"rows": rows, "n": n}), 1, "out", None))
    for ks, count in plan.kshapes.items():
        out += [_dma(rows, ks.width, "act", "activations", count),
                _dma(*dma_shape(weight_image_bytes(plan, config, ks, n)), "weight", "weights",
                     count),
                _dma(1, PARAM.itemsize * (n if plan.kind == "uniform" else 1), "scale",
                     "params", count)]
        if grouped:         # the k-step's row scales, behind its scale records
            out.append(_dma(1, ROW_SCALE.itemsize * rows, "scale", "activations", count))
        if pe.kind == "lut":
            bits = ks.bits
            compute = [(Insn(Opcode.TBL, {"rows": rows, "ngroups": ks.kgroups, "mode": mode,
                                          "bits": ks.bits}), "table")]
        elif plan.kind == "codebook":        # codes to centroids before the array
            bits = pe.centroid_bits
            compute = [(Insn(Opcode.CBX, {"n": n, "cols": ks.width}), "weight")]
        else:                                # Σx for the zero-point correction
            bits = ks.bits
            compute = [(Insn(Opcode.VSUM, {"rows": rows, "cols": ks.width}), "table")]
        if plan.kind == "codebook":
            out.append(_dma(1, ks.width * (1 << ks.bits) * pe.centroid_bits // 8, "codebook",
                            "codebooks", count))
        compute += [(Insn(op, {"rows": rows, "n": n, "kgroups": ks.kgroups, "bits": bits,
                               "mode": mode}), "acc"),
                    (Insn(Opcode.VDEQ, {"rows": rows, "n": n, "rowscale": int(grouped)}), "out")]
        out += [(insn, count, buf, None) for insn, buf in compute]
    return out


def _price(config, insns, times, acc):
    """Add `times` x what `insns` [(insn, count, buffer, DRAM category)] cost into `acc`: busy
    cycles per unit (a DMA's transfer on the DRAM port), events (`timing.COUNTERS`), scratchpad
    bytes per buffer and DRAM bytes per category, each by the closed form the cycle model
    charges (`timing.unit_cycles`, `timing.events`, `timing.dram_transfer_cycles`)."""
    units, events, sram, dram = acc
    for insn, count, buf, what in insns:
        k = times * count
        unit = insn.unit.name.lower()
        units[unit] = units.get(unit, 0) + k * timing.unit_cycles(config, insn)
        for name, v in timing.events(config, insn).items():
            if name == "sram_bytes":
                sram[buf] = sram.get(buf, 0) + k * v
            elif name == "dram_bytes":          # on the bus: whole bursts
                units["dram"] = units.get("dram", 0) + k * timing.dram_transfer_cycles(config, v)
            events[name] = events.get(name, 0) + k * v
        if what is not None:                    # the bytes the program moves
            dram[what] += k * insn.args["rows"] * insn.args["row_bytes"]


def estimate(plan, config, m, tile):
    """Per-unit busy cycles, DRAM bytes per category (what the program moves) and on the bus
    (`dram_bus_bytes`: each DMA row in whole bursts), scratchpad bytes per buffer, event counts
    (`timing.COUNTERS`) and instruction count of the loop nest for `tile`; the slowest unit
    bounds the run (`cycles`) because the decoupled queues overlap the others. The load and
    store units' busy cycles (the DMA setup) are summed as `dispatch`."""
    pe = config.pe
    # blocks come in at most two sizes (full and last): sum over sizes x multiplicity
    row_blocks = _block_sizes(m, tile.mr)
    col_blocks = _block_sizes(plan.n, tile.nw)
    nmb, nnb = sum(row_blocks.values()), sum(col_blocks.values())
    acc = units, events, sram, dram = ({"matmul": 0, "table": 0, "vector": 0, "dram": 0}, {},
                                       {}, dict.fromkeys(DRAM_CATEGORIES, 0))
    grouped = _grouped(config)
    lists = outlier_lists(plan, config, tile.nw)
    folds = _folded_corrections(plan, tile.nw) if grouped else {}
    if folds:               # token_group with outliers: the unit scales, loaded once
        _price(config, [_dma(1, ROW_SCALE.itemsize * tile.mr, "scale", "activations")], 1, acc)
    for rows, rcount in row_blocks.items():
        if not grouped:     # the row block's activation scales
            _price(config, [_dma(1, ROW_SCALE.itemsize * rows, "scale", "activations")],
                   rcount, acc)
        for n, ncount in col_blocks.items():
            _price(config, _tile_insns(plan, config, rows, n), rcount * ncount, acc)
        # the outlier lists (a load and a vout each), the same in every row block
        for (n, first, count), nlists in lists.items():
            _price(config, [
                _dma(1, OUTLIER.itemsize * count, "outlier", "outliers", nlists),
                (Insn(Opcode.VOUT, {"rows": rows, "n": n, "count": count, "first": first}),
                 nlists, "out", None)], rcount, acc)
        # token_group: a correction folded into its tile by two vscale
        for n, pairs in folds.items():
            _price(config, [(Insn(Opcode.VSCALE, {"rows": rows, "n": n}), 2 * pairs, "out",
                             None)], rcount, acc)
    units["dispatch"] = units.pop("load", 0) + units.pop("store", 0)
    # a k-step loads x, weights, scales (and centroids), runs one of tbl / vsum / cbx, the
    # matmul and vdeq; a tile adds vscale and the store, a row block the load of its row
    # scales; an outlier list is a load and a vout; the program ends with `finish`
    cb_load = 1 if plan.kind == "codebook" else 0
    insns = 1 + nmb * (1 + nnb * (2 + len(plan.ksteps) * (6 + cb_load))
                       + 2 * sum(lists.values()))
    if grouped:     # a row-scale load per k-step instead of one per row block; no final
        #             vscale per tile; two vscale per folded correction; the unit scales
        insns += nmb * (nnb * len(plan.ksteps) - 1 - nnb + 2 * sum(folds.values()))
        insns += 1 if folds else 0
    work = timing.MATMUL_COUNTER[MATMUL_OPCODE[pe.kind]]
    return {"cycles": max(units.values()), "unit_cycles": units, "dram_bytes": dram,
            "dram_bus_bytes": events.get("dram_bytes", 0), "sram_bytes": sram,
            "instructions_est": insns,
            "table_entries": events.get("table_entries", 0),
            "vector_ops": events.get("vector_ops", 0), work: events.get(work, 0)}


def outlier_lists(plan, config, nw):
    """The `vout` lists of one row block for n-blocks of `nw` outputs, as `compiler.lower`
    splits them (a (n-block, k-step)'s records in lists of at most the outlier slot's
    capacity; `first` marks an n-block's first list, under token_group each k-step's):
    {(outputs of the n-block, first, records): how many such lists}."""
    if plan.ol_vals is None or not len(plan.ol_vals):
        return {}
    cap = slot_bytes_outlier(config) // OUTLIER.itemsize
    nks = len(plan.ksteps)
    grouped = _grouped(config)
    kstep_of = np.searchsorted([ks.offset for ks in plan.ksteps], plan.ol_cols,
                               side="right") - 1
    cells, counts = np.unique(plan.ol_rows // nw * nks + kstep_of, return_counts=True)
    blocks = cells // nks
    first = np.ones(len(cells), bool)
    if not grouped:         # token_group: each k-step's first list overwrites its correction
        first[1:] = blocks[1:] != blocks[:-1]
    out = {}
    for block, is_first, records in zip(blocks.tolist(), first.tolist(), counts.tolist(),
                                        strict=True):
        n = min(nw, plan.n - block * nw)
        for c0 in range(0, records, cap):
            key = (n, int(is_first and c0 == 0), min(cap, records - c0))
            out[key] = out.get(key, 0) + 1
    return out
