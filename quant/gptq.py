"""The GPTQ column-by-column loop with Hessian-based error compensation, shared by CLAQ and the
uniform GPTQ baseline.

Ref: GPTQ (Frantar et al., arXiv 2210.17323) Algorithm 1, as in IST-DASLab/gptq `gptq.py`
L32-58 and L98-143; papers/claq.md §1 (block 128, damping 1% of mean diag(H), act-order).

A column quantizer is a callable `quantize(j, w) -> q`: `j` is the position in processing order
(the original column is `perm[j]`), `w` the error-compensated column [N] float32, `q` the value the
file will reproduce for that column (dequantized code plus any outlier correction), so that the
error fed forward is the error the stored layer really has.
"""

import torch

BLOCKSIZE = 128
PERCDAMP = 0.01


class Hessian:
    """Running H = (2/T) sum_t x_t x_t^T over calibration rows x_t of width K (float64 running
    sum, so that many small batches add up exactly enough).

    `add(x)` takes [..., K]; `H` returns the float32 [K, K] matrix; `tokens` counts rows. The 2/T
    scale does not change GPTQ's result (damping is relative to mean(diag H)); it is kept so that
    `output_error` reads as the mean squared output error times two."""

    def __init__(self, k, device="cpu"):
        self.sum = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, x):
        x = x.reshape(-1, x.shape[-1]).to(self.sum.device, torch.float32)
        # float32 product per batch (float64 BLAS is ~2x slower), float64 running sum
        self.sum += x.T @ x
        self.tokens += x.shape[0]

    @property
    def H(self):
        if self.tokens == 0:
            raise ValueError("Hessian needs at least one calibration row, not 0")
        return (self.sum * (2.0 / self.tokens)).float()


def output_error(w, w_hat, h):
    """tr((W - W_hat) H (W - W_hat)^T) = (2/T) ||(W - W_hat) X^T||^2 for H from `Hessian`."""
    d = (w.double() - w_hat.double())
    return float(((d @ h.double()) * d).sum())


def prepare(w, h, act_order=True, percdamp=PERCDAMP):
    """GPTQ's set-up: zero dead columns, act-order, damping, and the upper Cholesky factor U of
    H^-1 (row j of U drives column j's error feedback).

    Returns (w [N, K] float32 permuted copy, perm [K] long, u [K, K] float32 upper-triangular).
    Dead columns (H_jj = 0: the input channel is always zero) get H_jj = 1 and W[:, j] = 0, as
    in the reference. Act-order sorts columns by diag(H) descending with a stable sort, so ties
    keep the original order (deterministic)."""
    dead, perm, u = factor(h, act_order, percdamp)
    w = w.detach().to(torch.float32).clone()
    w[:, dead] = 0.0
    return w[:, perm], perm, u


_LAST = {}


def factor(h, act_order=True, percdamp=PERCDAMP):
    """(dead [K] bool, perm [K] long, U [K, K]) for the Hessian h; see `prepare`.

    The last result is cached by the identity of `h` (and the settings): layers that read the
    same input (q/k/v, gate/up) pass the same tensor and share one factorization. `h` must not be
    changed in place between calls."""
    key = (id(h), act_order, percdamp)
    hit = _LAST.get(key)
    if hit is not None and hit[0] is h:
        return hit[1]
    hh = h.detach().to(torch.float32).clone()
    k = hh.shape[0]
    dead = torch.diag(hh) == 0
    hh[dead, dead] = 1.0
    if act_order:
        perm = torch.sort(torch.diag(hh), descending=True, stable=True).indices
    else:
        perm = torch.arange(k, device=hh.device)
    hh = hh[perm][:, perm]
    idx = torch.arange(k, device=hh.device)
    hh[idx, idx] += percdamp * torch.mean(torch.diag(hh))
    result = (dead, perm, _hinv_upper(hh))
    _LAST.clear()
    _LAST[key] = (h, result)
    return result


def _hinv_upper(h):
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), float32 as in GPTQ.

    With J the order reversal, P = J H J = L L^T gives H^-1 = (J L^-1 J)^T (J L^-1 J), and
    J L^-1 J is upper-triangular: one Cholesky and one triangular inverse (2n^3/3 flops, all
    in matmuls) instead of GPTQ's Cholesky, `cholesky_inverse` and second Cholesky, whose
    inverse step alone took 30 s of CPU for K = 11008. Falls back to float64 when the float32
    Cholesky fails on an ill-conditioned H."""
    try:
        lo = torch.linalg.cholesky(h.flip(0, 1))
    except torch.linalg.LinAlgError:
        lo = torch.linalg.cholesky(h.double().flip(0, 1))
    return _tri_inv_lower(lo).flip(0, 1).to(torch.float32).contiguous()


def _tri_inv_lower(lo):
    """Inverse of a lower-triangular matrix by 2x2 blocks: [[A, 0], [B, C]]^-1 =
    [[A^-1, 0], [-C^-1 B A^-1, C^-1]], so that nearly all the work is matrix multiplication."""
    n = lo.shape[0]
    if n <= 256:
        eye = torch.eye(n, dtype=lo.dtype, device=lo.device)
        return torch.linalg.solve_triangular(lo, eye, upper=False)
    m = n // 2
    ai = _tri_inv_lower(lo[:m, :m])
    ci = _tri_inv_lower(lo[m:, m:])
    out = torch.zeros_like(lo)
    out[:m, :m] = ai
    out[m:, m:] = ci
    out[m:, :m] = -(ci @ (lo[m:, :m] @ ai))
    return out


def gptq_loop(w, u, quantize, blocksize=BLOCKSIZE, progress=None):
    """Run GPTQ on the permuted w [N, K] with U from `prepare`, quantizing column j with
    `quantize(j, w[:, j])`. Returns Q [N, K] (permuted order), the effective quantized weight.
    `progress(n)` is called with the number of columns done after each block."""
    # Work on W^T so that a column is a contiguous row: the rank-1 updates and the hand-off of
    # each column to the quantizer run ~2x faster than on strided columns.
    wt = w.T.contiguous()
    k, n = wt.shape
    qt = torch.zeros_like(wt)
    err = torch.zeros(min(blocksize, k), n, dtype=wt.dtype, device=wt.device)
    threads = torch.get_num_threads()
    try:
        for i1 in range(0, k, blocksize):
            i2 = min(i1 + blocksize, k)
            w1 = wt[i1:i2]                      # a view: updates land in wt
            err1 = err[:i2 - i1]
            u1 = u[i1:i2, i1:i2]
            # The per-column steps are ~100k-element ops: one CPU thread. With two, every op
            # waits for both threads, and on a busy machine a descheduled sibling made each
            # rank-1 update take milliseconds instead of tens of microseconds.
            torch.set_num_threads(1)
            for i in range(i2 - i1):
                col = w1[i]
                q = quantize(i1 + i, col)
                qt[i1 + i] = q
                e = (col - q) / u1[i, i]
                # Error feedback inside the block (GPTQ eq. 3 with the Cholesky row of H^-1)
                w1[i + 1:].addr_(u1[i, i + 1:], e, alpha=-1.0)
                err1[i] = e
            torch.set_num_threads(threads)
            # Lazy batch update of the columns after the block: one matmul per 128 columns
            wt[i2:].addmm_(u[i1:i2, i2:].T, err1, alpha=-1.0)
            if progress is not None:
                progress(i2 - i1)
    finally:
        torch.set_num_threads(threads)
    return qt.T
