"""The in-memory quantized layer and model: what a `.q` file holds (docs/qformat.md).

W is [N, K] = [out_features, in_features]; a "column" is one input channel k. Everything is stored
in the layer's original column order: per-column codebooks make the act-order permutation free to
undo offline (papers/claq.md §1), so `perm` is provenance (the order GPTQ processed the columns),
not something `dequant` needs. The effective weight is

    W_hat = dequant(codes) + S,

where S is the sparse fp16 correction of the outlier list (row, col, value), sorted by (col, row).
At a reserved position the code keeps its nearest centroid and S holds the residual
`w - C_k[code]` (rounded to fp16), so that `C_k[code] + S` is the kept weight; this is the
zero-mapping subtraction of papers/claq.md §5 and matches the hardware's `Y += X S^T`.
"""

from dataclasses import dataclass, field

import numpy as np

from bitlut.formats import CODEBOOK_BITS, KINDS, UNIFORM_BITS  # noqa: F401  (the .q domains)
from quant import reference
from quant.model_shape import ModelShape


@dataclass
class QLayer:
    """One quantized linear layer.

    Members:
        name: layer name, e.g. `q_proj` or `model.layers.0.self_attn.q_proj`.
        kind: "codebook" (CLAQ) or "uniform" (RTN, GPTQ).
        codes: [N, K] uint8, code of each weight; < 2**bits[k].
        bits: [K] uint8, bit width of each input column (all equal for "uniform").
        perm: [K] int32, perm[i] = the original column processed i-th (act-order), a permutation.
        codebooks: [K, 2**max(bits)] float16 ("codebook" only); row k is sorted ascending in its
            first 2**bits[k] entries, the rest are zero.
        scales: [N, ceil(K / group_size)] float16 ("uniform" only), > 0.
        zeros: [N, ceil(K / group_size)] uint8 ("uniform" only), < 2**bits.
        group_size: input columns per scale/zero group ("uniform"; K means per-row), 0 for codebook.
        outlier_rows, outlier_cols: [nnz] int64, sorted by (col, row), no duplicates.
        outlier_vals: [nnz] float16, the correction S at those positions.
        smooth: [K] float32 or None: SmoothQuant migration scales folded into these weights
            (W = W_orig · diag(smooth)); the host divides X by them (`pe.act_quant: smooth`).
    """

    name: str
    kind: str
    codes: np.ndarray
    bits: np.ndarray
    perm: np.ndarray
    codebooks: np.ndarray | None = None
    scales: np.ndarray | None = None
    zeros: np.ndarray | None = None
    group_size: int = 0
    outlier_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    outlier_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    outlier_vals: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    smooth: np.ndarray | None = None

    @property
    def shape(self):
        return tuple(int(d) for d in self.codes.shape)

    @property
    def n_outliers(self):
        return int(self.outlier_vals.shape[0])

    def bit_counts(self):
        """Bits each part needs, as a dict. See `bits_per_weight` for what is counted."""
        n, k = self.shape
        out = {"codes": n * int(self.bits.astype(np.int64).sum()), "bitmap": 8 * k}
        if self.kind == "codebook":
            out["codebooks"] = 16 * int((1 << self.bits.astype(np.int64)).sum())
        else:
            out["scales"] = 16 * self.scales.size
            out["zeros"] = 8 * self.zeros.size
        if self.n_outliers:
            out["outliers"] = 32 * (k + 1) + (16 + 16) * self.n_outliers
        if self.smooth is not None:     # fp32 migration scales, needed to undo W·diag(s)
            out["smooth"] = 32 * k
        return out

    def bits_per_weight(self, outliers=True):
        """Bits per weight of everything needed to rebuild W, divided by N*K: packed codes,
        codebooks (16 bits x 2**bits[k] entries per column, i.e. without the file's padding to the
        widest column), the u8 bit-width map, scales (fp16) and zeros (u8), the fp32 SmoothQuant
        scales if any, and with `outliers` the outlier list in CSC form (int32 column pointers,
        16-bit rows, fp16 values). The
        permutation is provenance, not needed to rebuild W, so it is not counted."""
        counts = self.bit_counts()
        if not outliers:
            counts.pop("outliers", None)
        n, k = self.shape
        return sum(counts.values()) / (n * k)

    def dequant(self, outliers=True):
        """W_hat [N, K] float32 torch tensor: the float reference of DESIGN.md §3."""
        if self.kind == "codebook":
            w = reference.dequant_codebook(self.codes, self.codebooks)
        else:
            w = reference.dequant_uniform(self.codes, self.scales, self.zeros, self.group_size)
        if outliers and self.n_outliers:
            w = reference.add_outliers(w, self.outlier_rows, self.outlier_cols, self.outlier_vals)
        return w


@dataclass
class QModel:
    """A quantized model: layers in order plus provenance, and what a whole block needs.

    Members:
        model: model name (e.g. `synthetic-llama7b` or a checkpoint's folder name).
        quantizer: {"name": "claq" | "gptq" | "rtn", "settings": {...}} (JSON-serialisable).
        layers: dict name -> QLayer, in file order.
        shape: the model's `quant.model_shape.ModelShape` (heads, head dim, RoPE, norms), or None
            for a model that is not LLaMA-family or a file written before it was recorded.
        norms: dict name -> [hidden] float32 RMSNorm weight, or None: per block
            `<prefix>input_layernorm` and `<prefix>post_attention_layernorm`, where `<prefix>` is
            the block's layer-name prefix (`model.layers.3.`; empty in a synthetic one-block
            model), and `norm`, the final norm. Only with `shape`.
    """

    model: str
    quantizer: dict
    layers: dict
    shape: ModelShape | None = None
    norms: dict | None = None

    def bits_per_weight(self, outliers=True):
        """Weight-count-weighted average of the layers' `bits_per_weight`."""
        total = sum(np.prod(q.shape) for q in self.layers.values())
        bits = sum(q.bits_per_weight(outliers) * np.prod(q.shape) for q in self.layers.values())
        return float(bits / total) if total else 0.0


def dequant(layer, outliers=True):
    """The float reference weight of a `QLayer`: `dequant(codes) + S` as float32 [N, K]."""
    return layer.dequant(outliers)
