"""CLAQ: per-input-column K-Means codebooks inside the GPTQ loop, with outlier-guided adaptive
precision (AP) and outlier reservation (OR).

Ref: CLAQ (Wang et al., arXiv 2405.17233) §3 (column-level K-Means, Outlier Order, AP, OR), as
implemented in fayuge/CLAQ `claq.py` L101-206 and `quant.py` L30-56; papers/claq.md §1-3, §6.

Deviations from the reference code, all deliberate (papers/claq.md §6):
- K-Means is the exact 1-D Lloyd of `kmeans1d` (deterministic), not sklearn k-means++.
- The OR ratio of a column follows its *global* rank; the reference indexes it with the
  within-block column index, so every 128-column block reused the first block's ratios (§6.1).
- Ties in the Outlier Order are broken by diag(H) descending, then column index (§6.2).
- OR keeps exactly round(N*rho) values in each signed tail (ties by index), so ratio 0 keeps none;
  the reference's `>= s[round(N*rho)]` keeps one more value per column, even at rho = 0.
- Centroids are stored in fp16 and the codes are the nearest fp16 centroid; the error fed back
  by GPTQ is the error of those stored values, including fp16 rounding of the outliers.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from quant import gptq
from quant.kmeans1d import lloyd_sorted, nearest_code
from quant.layer import QLayer

# OR ratios of the reference (`--outlier_col_dynamic`): rho for the top 10% of columns by
# Outlier Order, and for the rest (papers/claq.md §3).
PAPER_OUTLIER_RATIOS = (0.014, 0.004)


@dataclass(frozen=True)
class CLAQSettings:
    """CLAQ hyperparameters; the defaults are the paper's (papers/claq.md §1-3) with OR off.

    Members:
        bits: requested average bits in [2, 4]; 2.x gives {2, 4}-bit columns, 3.x {3, 4}.
        outlier_ratio_top, outlier_ratio_rest: OR ratio rho per signed tail for the top
            `outlier_top_frac` of columns by Outlier Order and for the others; 0 turns OR off.
        outlier_top_frac: fraction of columns getting `outlier_ratio_top`.
        threshold: a weight is an outlier when |w| >= threshold * mean|W| (Outlier Order).
        blocksize, percdamp, act_order: the GPTQ loop's settings.
    """

    bits: float = 2.2
    outlier_ratio_top: float = 0.0
    outlier_ratio_rest: float = 0.0
    outlier_top_frac: float = 0.1
    threshold: float = 13.0
    blocksize: int = gptq.BLOCKSIZE
    percdamp: float = gptq.PERCDAMP
    act_order: bool = True

    def __post_init__(self):
        if not 2.0 <= self.bits <= 4.0:
            raise ValueError(f"CLAQ bits must be in [2, 4], not {self.bits}")
        for name in ("outlier_ratio_top", "outlier_ratio_rest"):
            v = getattr(self, name)
            if not 0.0 <= v <= 0.5:
                raise ValueError(f"{name} must be in [0, 0.5], not {v}")
        if not 0.0 <= self.outlier_top_frac <= 1.0:
            raise ValueError(f"outlier_top_frac must be in [0, 1], not {self.outlier_top_frac}")
        if self.threshold <= 0:
            raise ValueError(f"threshold must be positive, not {self.threshold}")
        if self.blocksize < 1:
            raise ValueError(f"blocksize must be positive, not {self.blocksize}")

    def as_dict(self):
        return asdict(self)


def outlier_order(w, threshold=13.0):
    """O_k = #{n : |W[n, k]| >= threshold * mean|W|}, the mean over the whole layer. [K] int64."""
    w = torch.as_tensor(w, dtype=torch.float32)
    m = w.abs().mean()
    return (w.abs() >= threshold * m).sum(0).cpu().numpy().astype(np.int64)


def column_ranking(counts, hdiag):
    """Columns ordered by Outlier Order descending, ties by diag(H) descending, then index."""
    k = len(counts)
    hd = np.asarray(hdiag, dtype=np.float64)
    return np.lexsort((np.arange(k), -hd, -np.asarray(counts)))


def allocate_bits(ranking, bits):
    """Per-column bit widths [K] uint8 for the average `bits`: the top round(K f) columns of
    `ranking` get 4 bits, the rest 2 (f = (bits-2)/2, bits < 3) or 3 (f = bits-3).
    The average is `bits` within 1/K (2 bits of rounding on one column)."""
    k = len(ranking)
    base, f = (2, (bits - 2.0) / 2.0) if bits < 3 else (3, bits - 3.0)
    out = np.full(k, base, np.uint8)
    out[ranking[:int(round(k * f))]] = 4
    return out


def outlier_ratios(ranking, top, rest, top_frac=0.1):
    """OR ratio per column [K] float64, indexed by the column's own (global) position: the top
    round(K * top_frac) columns of `ranking` get `top`, the others `rest`."""
    k = len(ranking)
    out = np.full(k, float(rest))
    out[ranking[:int(round(k * top_frac))]] = float(top)
    return out


class _ColumnQuantizer:
    """K-Means codebook of one column, nearest codes, and OR's kept tails; records everything the
    `QLayer` needs in original column order."""

    def __init__(self, n, k, perm, bits, ratios, device):
        self.perm = perm
        self.bits = bits
        self.tails = [min(int(round(n * r)), n // 2) for r in ratios]
        self.codes = np.zeros((n, k), np.uint8)
        self.codebooks = np.zeros((k, 1 << int(bits.max())), np.float16)
        self.out_rows, self.out_cols, self.out_vals = [], [], []
        self.device = device
        self.last_ends = {}

    def __call__(self, j, col):
        p = int(self.perm[j])          # original column
        x = col.cpu().numpy().astype(np.float64)
        n = x.shape[0]
        t = self.tails[p]
        if t:
            order = np.argsort(x, kind="stable")
            s = x[order]
        else:
            s = np.sort(x)
        kk = 1 << int(self.bits[p])
        # Warm start from the last column with as many centroids: neighbouring columns have
        # similar shapes, which halves the Lloyd steps at 16 centroids (same fixpoint conditions)
        cent, ends, _ = lloyd_sorted(s, kk, start=self.last_ends.get(kk))
        self.last_ends[kk] = ends / n
        c16 = cent.astype(np.float16)   # stored values; rounding keeps them non-decreasing
        c = c16.astype(np.float64)
        code = nearest_code(x, c)
        q = c[code]
        if t:
            # Both signed tails keep their float value: S = w - C[code], rounded to fp16
            idx = np.sort(np.concatenate([order[:t], order[n - t:]]))
            sval = (x[idx] - q[idx]).astype(np.float16)
            q[idx] += sval.astype(np.float64)
            self.out_rows.append(idx)
            self.out_cols.append(np.full(idx.shape, p, np.int64))
            self.out_vals.append(sval)
        self.codes[:, p] = code
        self.codebooks[p, :c16.shape[0]] = c16
        return torch.from_numpy(q.astype(np.float32)).to(self.device)

    def outliers(self):
        if not self.out_vals:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float16)
        rows = np.concatenate(self.out_rows)
        cols = np.concatenate(self.out_cols)
        vals = np.concatenate(self.out_vals)
        order = np.lexsort((rows, cols))
        return rows[order], cols[order], vals[order]


def claq(w, h, settings=None, name="layer", device="cpu", progress=None):
    """Quantize w [N, K] with CLAQ given the Hessian h [K, K] (`gptq.Hessian`); returns a
    `QLayer` of kind "codebook". Deterministic: no random numbers are drawn.
    `progress(n)` is called with the number of columns done after each GPTQ block."""
    settings = settings or CLAQSettings()
    w = torch.as_tensor(w).to(device, torch.float32)
    h = torch.as_tensor(h).to(device, torch.float32)
    n, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"Hessian shape must be [{k}, {k}], not {list(h.shape)}")
    wp, perm, u = gptq.prepare(w, h, settings.act_order, settings.percdamp)
    # Outlier Order on the dead-column-zeroed weights before any GPTQ update (claq.py L101-102)
    w0 = torch.empty_like(wp)
    w0[:, perm] = wp
    hdiag = torch.diag(h).clone()
    hdiag[hdiag == 0] = 1.0
    ranking = column_ranking(outlier_order(w0, settings.threshold), hdiag.cpu().numpy())
    del w0
    bits = allocate_bits(ranking, settings.bits)
    ratios = outlier_ratios(ranking, settings.outlier_ratio_top, settings.outlier_ratio_rest,
                            settings.outlier_top_frac)
    perm_np = perm.cpu().numpy()
    cq = _ColumnQuantizer(n, k, perm_np, bits, ratios, w.device)
    gptq.gptq_loop(wp, u, cq, settings.blocksize, progress)
    rows, cols, vals = cq.outliers()
    return QLayer(name=name, kind="codebook", codes=cq.codes, bits=bits,
                  perm=perm_np.astype(np.int32), codebooks=cq.codebooks,
                  outlier_rows=rows, outlier_cols=cols, outlier_vals=vals)
