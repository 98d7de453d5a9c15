"""Running a compiled layer on seeded activations and checking it against PyTorch.

The reference is `Y_ref = X @ dequant(W).T` in float32 with the `.q` file's own (fp16) codebooks
and outliers (DESIGN.md section 3). The accelerator's output may differ from it by the activation
quantization, the fixed-point centroids and float32 rounding; the per-element bound is the
golden model's (`sim.golden.reference_tolerance` + `centroid_tolerance`, docs/numerics.md).
"""

import numpy as np

from arch.numerics import codebook_layout
from compiler.lower import write_inputs
from sim import golden
from sim.executor import Executor


def sample_activations(k, m, seed=0, outlier_channels=4, outlier_gain=20.0):
    """Seeded activations [m, k] with LLM-like outlier channels: N(0, 1) with a few input
    channels scaled by `outlier_gain` (the channels that set the int8 scale of every row)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    chans = rng.choice(k, min(outlier_channels, k), replace=False)
    x[:, chans] *= outlier_gain
    return x


def hardware_weight_abs(layer, plan):
    """|W| as the hardware holds it (fixed-point centroids) plus |S|: the weights the
    activation-rounding bound sums over."""
    if layer.kind == "codebook":
        lay = codebook_layout(layer.bits, plan.block_size)
        cs = plan.block_scale[lay.block_of_col].astype(np.float64)
        cq = plan.cq.astype(np.float64)
        w = np.abs(cq[np.arange(plan.k)[None, :], layer.codes.astype(np.int64)] * cs[None, :])
    else:
        w = np.abs(layer.dequant(outliers=False).numpy().astype(np.float64))
    if layer.n_outliers:
        np.add.at(w, (layer.outlier_rows, layer.outlier_cols),
                  np.abs(layer.outlier_vals.astype(np.float64)))
    return w


def run_layer(compiled, config, layer, x):
    """Execute `compiled` on float activations `x`; return (y, stats, metrics)."""
    xq, sx = write_inputs(compiled, x)
    ex = Executor(config, compiled.program)
    stats = ex.run()
    compiled.program.dram = ex.dram
    y = compiled.program.read("y")
    return y, stats, compare(layer, compiled.plan, x, xq, sx, y)


def compare(layer, plan, x, xq, sx, y):
    """Metrics of the accelerator's `y` against the PyTorch reference on float `x` (and the
    golden model on the quantized `xq`, `sx`): errors, the share of the bound used, passed.
    Under `pe.act_quant` smooth (`plan.smooth`) the reference is fed what the host wrote, X
    divided by the migration scales (the weights hold their inverse); under token_group (`sx`
    [M, k-steps]) the bound takes each column's own scale."""
    from quant import reference
    if plan.smooth is not None:
        x = golden.smooth_activations(x, plan.smooth)
    y_ref = reference.reference_matmul(x, layer.dequant()).numpy()
    groups = len(plan.ksteps)
    per_row = (int(np.bincount(layer.outlier_rows).max()) if layer.n_outliers else 0)
    col_sx = sx
    if np.ndim(sx) == 2:
        col_sx = np.asarray(sx)[:, _kstep_of_col(plan)]
    tol = golden.reference_tolerance(x, hardware_weight_abs(layer, plan), col_sx, groups,
                                     per_row)
    if layer.kind == "codebook":
        lay = codebook_layout(layer.bits, plan.block_size)
        tol = tol + golden.centroid_tolerance(x, plan.block_scale[lay.block_of_col])
    err = np.abs(y.astype(np.float64) - y_ref)
    scale = float(np.abs(y_ref).max()) or 1.0
    metrics = {
        "max_abs_err": float(err.max()),
        "max_rel_err": float(err.max() / scale),
        "rel_fro_err": float(np.linalg.norm(y - y_ref) / (np.linalg.norm(y_ref) or 1.0)),
        "tolerance_used": float((err / tol).max()),
        "within_tolerance": bool(np.all(err <= tol)),
        "bit_exact_golden": bool(np.array_equal(y, golden_output(plan, xq, sx))),
    }
    metrics["passed"] = metrics["within_tolerance"] and metrics["bit_exact_golden"]
    return metrics


def _kstep_of_col(plan, lowered=False):
    """The k-step of every original column [K] (or, `lowered`, of every lowered column [kp];
    padding columns get their k-step too)."""
    if lowered:
        return np.repeat(np.arange(len(plan.ksteps)), [ks.width for ks in plan.ksteps])
    out = np.zeros(plan.k, np.int64)
    for ks in plan.ksteps:
        out[ks.cols] = ks.index
    return out


def golden_output(plan, xq, sx, outliers=True):
    """The golden model's output [M, N] float32 of a compiled layer's `plan` (a
    `compiler.plan.Plan`) for quantized activations `xq`, `sx`, in the lowered order the hardware
    uses (same k-step order, same outlier order)."""
    xl = plan.lower_activations(xq)
    parts = []
    for ks in plan.ksteps:
        xs = xl[:, ks.offset:ks.offset + ks.width].astype(np.int64)
        w = plan.kstep_codes(ks, 0, plan.n).astype(np.int64)
        if plan.kind == "uniform":
            w = w - plan.zeros[:, ks.index][:, None].astype(np.int64)
            w[:, len(ks.cols):] = 0
        else:
            cq = np.zeros((ks.width, plan.cq.shape[1]), np.int64)
            cq[:len(ks.cols)] = plan.cq[ks.cols]
            w = cq[np.arange(ks.width)[None, :], w]
        parts.append(xs @ w.T)
    p = np.stack(parts, axis=-1)
    scales = plan.scales if plan.kind == "uniform" else plan.block_scale
    corr = None
    grouped = np.ndim(sx) == 2          # token_group: [M, k-steps]
    if outliers and plan.ol_vals is not None and len(plan.ol_vals):
        ol = golden.Outliers(plan.ol_rows, plan.ol_cols, plan.ol_vals)
        if grouped:
            corr = golden.outlier_correction_grouped(xl, ol, plan.n,
                                                     _kstep_of_col(plan, lowered=True))
        else:
            corr = golden.outlier_correction(xl, ol, plan.n)
    if grouped:
        return golden.epilogue_grouped(p, scales, sx, corr)
    return golden.epilogue(p, scales, sx, corr)
