"""SmoothQuant-style migration of activation outliers into the weights, before quantization
(`pe.act_quant: smooth`; docs/numerics.md section 1).

Ref: SmoothQuant (Xiao et al., ICML'23) §4, Eq. 4: for a linear layer `Y = X·Wᵀ`, the per input
column scale `s[k] = max|X[:, k]|^α / max|W[:, k]|^(1−α)` moves quantization difficulty from the
activations to the weights: `Y = (X·diag(s)⁻¹)·(W·diag(s))ᵀ`. The host divides X by s when it
writes it (`arch.numerics.smooth_activations`); the quantizer here multiplies W's columns by s and
quantizes that (CLAQ, GPTQ or RTN, with the Hessian of the divided activations), and the `.q`
layer keeps s (`QLayer.smooth`).

Calibration statistics: `max|X[:, k]|` over the same calibration tokens that build the Hessian.
"""

import numpy as np
import torch

SMOOTH_ALPHA = 0.5      # SmoothQuant §4: the migration strength it uses for LLaMA-class models


def smooth_scales(act_amax, w_amax, alpha=SMOOTH_ALPHA):
    """`s[k] = act_amax[k]^alpha / w_amax[k]^(1 - alpha)`, float32 `[K]` (SmoothQuant Eq. 4).

    `act_amax [K]` the largest |x| of column k over the calibration activations, `w_amax [K]`
    the largest |W[:, k]|. A column with a zero or non-finite statistic keeps s = 1. Raises
    `ValueError` for mismatched shapes or `alpha` outside [0, 1].
    """
    a = np.asarray(act_amax, np.float64)
    w = np.asarray(w_amax, np.float64)
    if a.shape != w.shape or a.ndim != 1:
        raise ValueError(f"`act_amax` and `w_amax` must be [K] alike, not {a.shape}, {w.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], not {alpha!r}")
    ok = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    s = np.ones_like(a)
    s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
    return s.astype(np.float32)


def migrate(w, h, act_amax, alpha=SMOOTH_ALPHA):
    """(W·diag(s), H of X·diag(s)⁻¹, s): `w [N, K]` and the Hessian `h [K, K]` (2/T·XᵀX) of a
    layer moved by the scales of `smooth_scales(act_amax, max|W[:, k]|, alpha)`."""
    s = smooth_scales(np.asarray(act_amax), w.abs().amax(dim=0).numpy(), alpha)
    st = torch.from_numpy(s).to(w.dtype)
    inv = (1.0 / st).to(h.dtype)
    return w * st[None, :], h * inv[:, None] * inv[None, :], s


def quantize_smoothed(method, w, h, act_amax, name="layer", device="cpu", progress=None,
                      alpha=SMOOTH_ALPHA):
    """`quant.method.quantize_layer` of the migrated layer; the `QLayer` carries s."""
    from quant.method import quantize_layer
    ws, hs, s = migrate(w, h, act_amax, alpha)
    q = quantize_layer(method, ws, hs, name, device, progress)
    q.smooth = s
    return q
