"""The static part of lowering a layer: column order, k-steps, packed weights, parameters.

Everything here depends on the layer and the config only, not on the token count M or on the
tiling, so it is computed once per layer.

A *k-step* is the unit of the reduction that the vector unit scales as one: a scale group of a
uniform layer (RTN/GPTQ `group_size` columns), or a block of a codebook layer (`block_size`
consecutive columns of one bit width, after CLAQ's permutation; DESIGN.md section 3). Each k-step
is padded with zero activations to a multiple of its group g (the table width of the LUT array,
the lane width of the bit-serial array), so the activation layout the program reads, the
*lowered* columns, is: k-steps in order, each `width` wide.

The permutation is applied to X when the host (or the producing layer) writes it in the lowered
layout; see docs/compiler.md for why the on-chip gather is not used for it.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from arch import image
from arch.numerics import codebook_layout, quantize_codebooks
from bitlut.errors import UserError


class LoweringError(UserError):
    """A layer that this config cannot run."""


@dataclass(frozen=True)
class KStep:
    """One scale group or codebook block.

    Members: `index`; `offset`, `width` (padded, a multiple of `g`) in lowered columns; `cols`
    (the original column of each of the first `len(cols)` lowered columns; the rest are padding);
    `bits` (weight bits: bit planes, or codebook code width); `g` (columns per group)."""
    index: int
    offset: int
    width: int
    cols: np.ndarray
    bits: int
    g: int

    @property
    def kgroups(self):
        return self.width // self.g


@dataclass(frozen=True)
class KShape:
    """What the cost and the slot sizes of a k-step depend on (a `KStep` less its place): equal
    shapes cost alike, so the compiler's cost model prices a layer per shape times its count."""
    width: int
    bits: int
    g: int

    @property
    def kgroups(self):
        return self.width // self.g


@dataclass
class Plan:
    """A layer prepared for one config.

    Members: `name`, `kind` ("uniform" | "codebook"), `n`, `k`, `kp` (lowered columns), `ksteps`,
    `src_col [kp]` (original column of each lowered column, -1 for padding), `codes [N, K]`,
    and per kind: uniform `scales [N, J]` float32, `zeros [N, J]`; codebook `cq [K, C]`
    fixed-point centroids and `block_scale [J]` float32. Outliers in lowered columns:
    `ol_rows`, `ol_cols` (lowered), `ol_vals` float16, sorted by (row, lowered column): the order
    in which the vector unit adds them, which `golden.outlier_correction` follows. `smooth [K]`
    float32: the SmoothQuant migration scales the host divides X by (`pe.act_quant: smooth`)."""
    name: str
    kind: str
    n: int
    k: int
    kp: int
    ksteps: list
    src_col: np.ndarray
    codes: np.ndarray
    pe: str
    scales: np.ndarray = None
    zeros: np.ndarray = None
    cq: np.ndarray = None
    block_scale: np.ndarray = None
    block_size: int = 0
    ol_rows: np.ndarray = None
    ol_cols: np.ndarray = None
    ol_vals: np.ndarray = None
    smooth: np.ndarray = None
    _lowered_codes: np.ndarray = None

    @cached_property
    def kshapes(self):
        """{KShape: how many k-steps have it}, in first-seen order."""
        out = {}
        for ks in self.ksteps:
            shape = KShape(ks.width, ks.bits, ks.g)
            out[shape] = out.get(shape, 0) + 1
        return out

    # -- host side ------------------------------------------------------------------------------
    def lower_activations(self, xq):
        """int8 [M, kp]: the lowered layout of quantized activations (padding is zero)."""
        xq = np.asarray(xq)
        out = np.zeros((xq.shape[0], self.kp), np.int8)
        valid = self.src_col >= 0
        out[:, valid] = xq[:, self.src_col[valid]]
        return out

    def kstep_codes(self, kstep, n0, n1):
        """Codes [n1-n0, width] of one k-step in lowered order, padding columns zero."""
        if self._lowered_codes is None:
            codes, src = self.codes, self.src_col
            if (src < 0).any():          # padding columns read an appended zero column
                codes = np.concatenate([codes, np.zeros((self.n, 1), codes.dtype)], axis=1)
                src = np.where(src < 0, self.k, src)
            self._lowered_codes = np.take(codes, src, axis=1)   # far faster than codes[:, src]
        return self._lowered_codes[n0:n1, kstep.offset:kstep.offset + kstep.width]


def plan_layer(layer, config, block_size=128):
    """Prepare `layer` (a `quant.layer.QLayer`) for `config`. Raises `LoweringError` when the
    config cannot run it (bit width not supported by the PE array)."""
    pe = config.pe
    n, k = layer.shape
    where = f"layer `{layer.name}`"
    if layer.kind == "uniform":
        b = int(layer.bits[0])
        if b not in pe.weight_bits:
            raise LoweringError(f"{where}: weight bits must be one of the config's "
                                f"{list(pe.weight_bits)} ({config.source}), not {b}")
        g = 1 if pe.kind == "mac" else pe.group
        gs = int(layer.group_size) or k
        groups = [np.arange(j, min(k, j + gs)) for j in range(0, k, gs)]
        spec = [(cols, b, g) for cols in groups]
    elif layer.kind == "codebook":
        if not pe.codebook:
            raise LoweringError(f"{where}: a codebook layer needs an array that serves "
                                f"codebooks (`pe.codebook: true`), not {config.source}'s "
                                f"uniform-only one")
        bits = np.asarray(layer.bits, np.int64)
        layout = codebook_layout(bits, block_size)
        spec = []
        for seg in layout.segments:
            cols = layout.perm[seg.cols]
            b = int(seg.bits)
            if pe.kind == "lut":
                try:
                    g = config.codebook_group(b)
                except UserError as e:
                    raise LoweringError(f"{where}: {e}") from None
            else:
                g = 1 if pe.kind == "mac" else pe.group
            for s in range(0, len(cols), block_size):
                spec.append((cols[s:s + block_size], b, g))
    else:
        raise LoweringError(f"{where}: kind must be uniform or codebook, not {layer.kind!r}")
    ksteps, offset = [], 0
    for i, (cols, b, g) in enumerate(spec):
        width = -(-len(cols) // g) * g
        ksteps.append(KStep(i, offset, width, np.asarray(cols, np.int64), b, g))
        offset += width
    src_col = np.full(offset, -1, np.int64)
    for ks in ksteps:
        src_col[ks.offset:ks.offset + len(ks.cols)] = ks.cols
    plan = Plan(layer.name, layer.kind, n, k, offset, ksteps, src_col,
                np.asarray(layer.codes, np.uint8), pe.kind)
    if pe.act_quant == "smooth":
        smooth = getattr(layer, "smooth", None)
        if smooth is None:
            raise LoweringError(f"{where}: pe.act_quant smooth ({config.source}) must have the "
                                "layer's SmoothQuant scales (`bitlut quantize --smooth`), not "
                                "none")
        plan.smooth = np.asarray(smooth, np.float32)
    if layer.kind == "uniform":
        # the hardware's records hold fp16 scales (as the .q file does)
        plan.scales = np.asarray(layer.scales).astype(np.float16).astype(np.float32)
        plan.zeros = np.asarray(layer.zeros, np.int64)
    else:
        plan.block_size = block_size
        plan.cq, plan.block_scale = quantize_codebooks(
            np.asarray(layer.codebooks, np.float32), np.asarray(layer.bits, np.int64),
            block_size, pe.centroid_bits)
    if layer.n_outliers:
        lowered_of = np.empty(k, np.int64)
        lowered_of[src_col[src_col >= 0]] = np.nonzero(src_col >= 0)[0]
        rows = np.asarray(layer.outlier_rows, np.int64)
        lcols = lowered_of[np.asarray(layer.outlier_cols, np.int64)]
        order = np.lexsort((lcols, rows))
        plan.ol_rows, plan.ol_cols = rows[order], lcols[order]
        plan.ol_vals = np.asarray(layer.outlier_vals, np.float16)[order]
    return plan


# -- weight images: what one (n-block, k-step) LOAD brings on chip -------------------------------
def kstep_layout(plan, config, kstep, n):
    """The `arch.image.WeightLayout` of one k-step's weights for n outputs."""
    return image.weight_layout(config, plan.kind, n, kstep.width, kstep.bits)


def weight_image(plan, config, kstep, n0, n1):
    """uint8 bytes of the weights of rows [n0, n1) of one k-step, in the layout the matmul (or
    `cbx`) instruction reads (`arch.image`)."""
    codes = plan.kstep_codes(kstep, n0, n1)
    return kstep_layout(plan, config, kstep, n1 - n0).encode(codes)


def weight_image_bytes(plan, config, kstep, n):
    """Length of `weight_image` for n outputs, without building it."""
    return kstep_layout(plan, config, kstep, n).nbytes


def weight_bits_total(plan, config):
    """Bits of weight images over the whole layer (the DRAM bytes one pass over W moves)."""
    return sum(kstep_layout(plan, config, ks, plan.n).nbits for ks in plan.ksteps)


def codebook_image(plan, config, kstep):
    """Fixed-point centroids [width, 2^b] of one k-step (padding columns zero)."""
    cb = np.zeros((kstep.width, 1 << kstep.bits), np.int64)
    cb[:len(kstep.cols)] = plan.cq[kstep.cols][:, :1 << kstep.bits]
    return cb.astype(config.centroid_dtype)
