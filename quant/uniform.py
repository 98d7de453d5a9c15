"""Uniform b-bit baselines: RTN and GPTQ, asymmetric, one fp16 scale and integer zero per row and
group of input columns.

Ref: GPTQ (Frantar et al., arXiv 2210.17323) §4 and IST-DASLab/gptq `quant.py` `Quantizer`
(min/max including 0, zero = round(-min/scale)); papers/claq.md §1 for the loop settings.

The scale and zero of every group come from the original weights before the loop ("static
groups", GPTQ's `--static-groups`): with act-order the loop visits columns out of order, and static
groups keep a group of `group_size` consecutive *original* columns, which is what
`reference.dequant_uniform` and the hardware's per-group dequant expect.
"""

import numpy as np
import torch

from quant import gptq
from quant.layer import UNIFORM_BITS, QLayer


def _check(bits, group_size, k):
    if bits not in UNIFORM_BITS:
        raise ValueError(f"bits must be an integer in 1..8 for uniform quantization, not {bits!r}")
    if group_size is not None and not (isinstance(group_size, int) and group_size > 0):
        raise ValueError(f"group_size must be a positive integer or None, not {group_size!r}")
    return k if group_size is None else group_size


def uniform_params(w, bits, group_size):
    """Scale [N, G] (rounded to fp16, as stored) and zero [N, G] for w [N, K] float32."""
    n, k = w.shape
    g = -(-k // group_size)
    maxq = (1 << bits) - 1
    pad = g * group_size - k
    wp = torch.nn.functional.pad(w, (0, pad)).reshape(n, g, group_size)
    valid = (torch.arange(g * group_size, device=w.device) < k).reshape(g, group_size)
    big = torch.finfo(torch.float32).max
    xmin = torch.where(valid, wp, big).amin(2).clamp(max=0)
    xmax = torch.where(valid, wp, -big).amax(2).clamp(min=0)
    # An all-zero group would get scale 0; GPTQ widens it to [-1, 1]
    both0 = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both0, -1.0, xmin)
    xmax = torch.where(both0, 1.0, xmax)
    scale = ((xmax - xmin) / maxq).half().float()
    # fp16 underflow of a tiny but non-zero range: keep the smallest normal fp16 instead of 0
    scale = scale.clamp(min=float(torch.finfo(torch.float16).tiny))
    zero = torch.round(-xmin / scale).clamp(0, maxq)
    return scale, zero


def _quant(w, scale, zero, maxq):
    q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
    return q, scale * (q - zero)


def _layer(name, codes, bits, perm, scale, zero, group_size):
    k = codes.shape[1]
    return QLayer(name=name, kind="uniform", codes=codes.cpu().numpy().astype(np.uint8),
                  bits=np.full(k, bits, np.uint8), perm=perm.cpu().numpy().astype(np.int32),
                  scales=scale.cpu().numpy().astype(np.float16),
                  zeros=zero.cpu().numpy().astype(np.uint8), group_size=group_size)


def rtn(w, bits, group_size=128, name="layer"):
    """Round-to-nearest: each weight to its group's grid. w [N, K]; returns a `QLayer`."""
    w = w.detach().to(torch.float32)
    gs = _check(bits, group_size, w.shape[1])
    scale, zero = uniform_params(w, bits, gs)
    grp = torch.arange(w.shape[1], device=w.device) // gs
    codes, _ = _quant(w, scale[:, grp], zero[:, grp], (1 << bits) - 1)
    return _layer(name, codes, bits, torch.arange(w.shape[1]), scale, zero, gs)


def gptq_uniform(w, h, bits, group_size=128, act_order=True, blocksize=gptq.BLOCKSIZE,
                 percdamp=gptq.PERCDAMP, name="layer", progress=None):
    """GPTQ with a uniform grid. w [N, K], h [K, K] (from `gptq.Hessian`); returns a `QLayer`."""
    gs = _check(bits, group_size, w.shape[1])
    wp, perm, u = gptq.prepare(w, h, act_order, percdamp)
    # Grid parameters from the (dead-column-zeroed) original weights, in original column order
    w0 = torch.empty_like(wp)
    w0[:, perm] = wp
    scale, zero = uniform_params(w0, bits, gs)
    grp = (perm // gs).tolist()
    maxq = (1 << bits) - 1
    codes = torch.zeros(wp.shape, dtype=torch.uint8, device=wp.device)

    def quantize(j, col):
        g = grp[j]
        q, deq = _quant(col, scale[:, g], zero[:, g], maxq)
        codes[:, j] = q.to(torch.uint8)
        return deq

    gptq.gptq_loop(wp, u, quantize, blocksize, progress)
    codes_orig = torch.empty_like(codes)
    codes_orig[:, perm] = codes
    return _layer(name, codes_orig, bits, perm, scale, zero, gs)
