"""The PyTorch float reference that every integer path is checked against (DESIGN.md section 3).

`Y_ref = X @ dequant(W).T` in float32, outliers included. These functions take plain arrays so that
the golden model's tests, the quantizer and the compiler's checks all share one definition;
`quant` builds its layer-level `dequant` on top of them.
"""

import numpy as np
import torch


def _t(a, dtype=torch.float32):
    return torch.as_tensor(np.asarray(a)).to(dtype)


def dequant_uniform(codes, scales, zeros, group_size):
    """W[n,k] = scales[n, k // group_size] * (codes[n,k] - zeros[n, k // group_size]).

    codes: [N, K] integers in [0, 2^b); scales, zeros: [N, ceil(K / group_size)]."""
    codes = _t(codes)
    n, k = codes.shape
    grp = torch.arange(k) // group_size
    return _t(scales)[:, grp] * (codes - _t(zeros)[:, grp])


def dequant_codebook(codes, codebooks):
    """W[n,k] = codebooks[k, codes[n,k]]: one codebook per input column k.

    codes: [N, K] integers; codebooks: [K, C] (C = 2^max_bits; unused entries ignored)."""
    codes = torch.as_tensor(np.asarray(codes)).long()
    cb = _t(codebooks)
    k = torch.arange(codes.shape[1])
    return cb[k[None, :], codes]


def add_outliers(w, rows, cols, values):
    """W + S, where S is the sparse correction of outlier weights kept in fp16."""
    w = w.clone()
    index = (torch.as_tensor(np.asarray(rows)).long(), torch.as_tensor(np.asarray(cols)).long())
    w.index_put_(index, _t(values), accumulate=True)
    return w


def reference_matmul(x, w):
    """Y = X @ W.T in float32. x: [M, K] float; w: [N, K] float (already dequantized)."""
    return _t(x) @ _t(w).T
