"""A GPU's layer times, calibrated: efficiency terms fitted to measured `y = x @ W^T` times.

A bytes-and-FLOPs roofline misses what a weight-only low-bit kernel spends dequantizing: the
tinygemm int4 kernel (`aten._weight_int4pack_mm`) is 2x faster than fp16 at M = 1 on an H100
and 8-25x slower at M >= 128 (dse/data/h100_calibration.json), because it dequantizes every
weight again for each tile of token rows. The model, per dtype d:

    t = max(2 M N K / (peak_d * ce_d),  bytes_d / (bandwidth * be),  dequant_d) + floor_d
    dequant_int4wo = N K ceil(M / m_tile) / rate      (0 for fp16 and int8)

with `bytes_d` the weights as stored (fp16 2 B, int8 1 B, int4 0.5 B plus a bf16 scale and
zero per 128 weights) and the activations (bf16 / int8 in, bf16 / int32 out). The fitted terms
are `ce_fp16`, `ce_int8` and `be` (fractions of the datasheet's peaks, bounded to (0, 1)), a
launch-and-tail `floor` per dtype (int4 and int8 kernels carry fixed costs of their own),
`rate` (weights dequantized per second) and `m_tile` (a power of two, searched). The fit
minimizes the squared log error (every shape counts alike, whether it takes 10 us or 2 ms).
Held out: `interpolate` fits on the smallest and largest token counts and predicts the ones
between; `held_out` fits on all token counts but one and predicts that one, for each.
`python -m dse.gpu_measure -o FILE.json` measures the same shapes on any CUDA GPU.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitlut.errors import UserError

DATA = Path(__file__).parent / "data" / "h100_calibration.json"
DTYPES = ("fp16", "int4wo", "int8")
PARAMS = ("ce_fp16", "ce_int8", "be", "floor_fp16_us", "floor_int4wo_us", "floor_int8_us",
          "rate")
BOUNDED = ("ce_fp16", "ce_int8", "be")          # fractions of a peak: in (0, 1)
M_TILES = (1, 2, 4, 8, 16, 32, 64)
INT4_GROUP = 128


@dataclass(frozen=True)
class Measure:
    dtype: str
    m: int
    n: int
    k: int
    seconds: float


def load_measurements(path=DATA):
    """[Measure] from a calibration JSON (`linear`: rows of M, K, N and `<dtype>_s` times)."""
    try:
        raw = json.loads(Path(path).read_text())
        rows = raw["linear"]
        out = [Measure(d, int(r["M"]), int(r["N"]), int(r["K"]), float(r[f"{d}_s"]))
               for r in rows for d in DTYPES if f"{d}_s" in r]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: calibration file must be JSON with a `linear` list of rows "
                        f"with M, K, N and <dtype>_s times, not unreadable ({e})") from None
    if not out:
        raise UserError(f"{path}: `linear` must hold measured times, not none")
    return out


def weight_bytes(dtype, n, k):
    if dtype == "fp16":
        return 2 * n * k
    if dtype == "int8":
        return n * k
    return n * k // 2 + 2 * 2 * n * math.ceil(k / INT4_GROUP)


def act_bytes(dtype, m, n, k):
    return m * k + 4 * m * n if dtype == "int8" else 2 * m * k + 2 * m * n


def predict(gpu, params, m_tile, x):
    """Seconds of measurement shape `x` by the model with `params` (a dict of PARAMS)."""
    peak = gpu.peak_tflops["int8" if x.dtype == "int8" else "fp16"] * 1e12
    ce = params["ce_int8"] if x.dtype == "int8" else params["ce_fp16"]
    t_compute = 2 * x.m * x.n * x.k / (peak * ce)
    t_memory = (weight_bytes(x.dtype, x.n, x.k) + act_bytes(x.dtype, x.m, x.n, x.k)) / (
        gpu.bandwidth_gbps * 1e9 * params["be"])
    t_dequant = (x.n * x.k * math.ceil(x.m / m_tile) / params["rate"]
                 if x.dtype == "int4wo" else 0.0)
    return max(t_compute, t_memory, t_dequant) + params[f"floor_{x.dtype}_us"] * 1e-6


def _nelder_mead(f, x0, steps=4000, tol=1e-12):
    """Minimize f over R^n from x0 (the standard simplex method, numpy only)."""
    n = len(x0)
    simplex = [np.asarray(x0, float)] + [np.asarray(x0, float) + 0.5 * np.eye(n)[i]
                                         for i in range(n)]
    vals = [f(x) for x in simplex]
    for _ in range(steps):
        order = np.argsort(vals)
        simplex, vals = [simplex[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        xr = centroid + (centroid - simplex[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = centroid + 2 * (centroid - simplex[-1])
            fe = f(xe)
            simplex[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = xr, fr
        else:
            xc = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(xc)
            if fc < vals[-1]:
                simplex[-1], vals[-1] = xc, fc
            else:
                simplex = [simplex[0]] + [simplex[0] + 0.5 * (s - simplex[0])
                                          for s in simplex[1:]]
                vals = [vals[0]] + [f(s) for s in simplex[1:]]
    i = int(np.argmin(vals))
    return simplex[i], vals[i]


X0 = {"ce_fp16": 0.7, "ce_int8": 0.5, "be": 0.8, "floor_fp16_us": 5.0, "floor_int4wo_us": 5.0,
      "floor_int8_us": 5.0, "rate": 2e12}


def _to_z(p, v):
    return math.log(v / (1 - v)) if p in BOUNDED else math.log(v)


def _from_z(p, z):
    return 1 / (1 + math.exp(-z)) if p in BOUNDED else math.exp(z)


def fit(gpu, measures):
    """(params, m_tile, rms log error) of the best fit to `measures`."""
    def unpack(z):
        return {p: _from_z(p, float(v)) for p, v in zip(PARAMS, z, strict=True)}

    best = None
    z0 = np.array([_to_z(p, X0[p]) for p in PARAMS])
    for m_tile in M_TILES:
        def loss(z, m_tile=m_tile):
            params = unpack(z)
            return float(np.mean([(math.log(predict(gpu, params, m_tile, x)) -
                                   math.log(x.seconds)) ** 2 for x in measures]))
        z, val = _nelder_mead(loss, z0)
        if best is None or val < best[2] - 1e-12:
            best = (unpack(z), m_tile, val)
    params, m_tile, val = best
    return params, m_tile, math.sqrt(val)


def held_out(gpu, measures):
    """Leave one token count out: for each M, fit on the others and predict its shapes.
    Returns rows (dtype, M, N, K, measured s, predicted s, relative error)."""
    rows = []
    for m in sorted({x.m for x in measures}):
        train = [x for x in measures if x.m != m]
        params, m_tile, _ = fit(gpu, train)
        for x in measures:
            if x.m == m:
                t = predict(gpu, params, m_tile, x)
                rows.append((x.dtype, x.m, x.n, x.k, x.seconds, t, t / x.seconds - 1))
    return rows


def interpolate(gpu, measures):
    """Fit on the smallest and largest token counts; rows as `held_out` for the others."""
    ms = sorted({x.m for x in measures})
    train = [x for x in measures if x.m in (ms[0], ms[-1])]
    params, m_tile, _ = fit(gpu, train)
    return [(x.dtype, x.m, x.n, x.k, x.seconds, predict(gpu, params, m_tile, x),
             predict(gpu, params, m_tile, x) / x.seconds - 1)
            for x in measures if x.m not in (ms[0], ms[-1])]


def calibrate(gpu, path=DATA):
    """The fit on all of `path`'s measurements, its in-sample rows and its held-out rows."""
    measures = load_measurements(path)
    params, m_tile, rms = fit(gpu, measures)
    fitted = [(x.dtype, x.m, x.n, x.k, x.seconds, predict(gpu, params, m_tile, x),
               predict(gpu, params, m_tile, x) / x.seconds - 1) for x in measures]
    return {"params": params, "m_tile": m_tile, "rms_log_error": rms, "fitted": fitted,
            "interpolate": interpolate(gpu, measures), "held_out": held_out(gpu, measures)}


def block_seconds(gpu, params, m_tile, dtype, m, shapes):
    """Seconds of the layers `shapes` [(N, K)] at m tokens by the calibrated model."""
    return sum(predict(gpu, params, m_tile, Measure(dtype, m, n, k, 0.0)) for n, k in shapes)
