"""Running a compiled layer on seeded activations and checking it against PyTorch.

The reference is `Y_ref = X @ dequant(W).T` in float32 with the `.q` file's own (fp16) codebooks
and outliers (DESIGN.md section 3). The accelerator's output may differ from it by the activation
quantization, the fixed-point centroids and float32 rounding; the per-element bound is the
golden model's (`sim.golden.reference_tolerance` + `centroid_tolerance`, docs/numerics.md).
"""

import numpy as np

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
        lay = golden.codebook_layout(layer.bits, plan.block_size)
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
    golden model on the quantized `xq`, `sx`): errors, the share of the bound used, passed."""
    from quant import reference
    y_ref = reference.reference_matmul(x, layer.dequant()).numpy()
    groups = len(plan.ksteps)
    per_row = (int(np.bincount(layer.outlier_rows).max()) if layer.n_outliers else 0)
    tol = golden.reference_tolerance(x, hardware_weight_abs(layer, plan), sx, groups, per_row)
    if layer.kind == "codebook":
        lay = golden.codebook_layout(layer.bits, plan.block_size)
        tol = tol + golden.centroid_tolerance(x, plan.block_scale[lay.block_of_col])
    err = np.abs(y.astype(np.float64) - y_ref)
    scale = float(np.abs(y_ref).max()) or 1.0
    metrics = {
        "max_abs_err": float(err.max()),
        "max_rel_err": float(err.max() / scale),
        "rel_fro_err": float(np.linalg.norm(y - y_ref) / (np.linalg.norm(y_ref) or 1.0)),
        "tolerance_used": float((err / tol).max()),
        "within_tolerance": bool(np.all(err <= tol)),
        "bit_exact_golden": bool(np.array_equal(y, plan.golden(xq, sx))),
    }
    metrics["passed"] = metrics["within_tolerance"] and metrics["bit_exact_golden"]
    return metrics
