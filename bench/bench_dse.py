"""The pieces of a design-space sweep (issue 12), timed on llama7b.q's 7 layers: the compiler's
tile search (`compiler.tiling.choose`, every layer, the three shipped configs, decode and
prefill; target <= 0.05 s a layer on average, it was ~0.1-0.4 s), one point by the roofline
rung and one by the SimPy rung (`dse.evaluate`, the CLAQ workload of the shipped sweep).
`python -m bench dse_sweep` times the whole shipped sweep."""

import statistics
import time

TARGET_CHOOSE_S = 0.05
CONFIGS = ("lut", "bitserial", "mac")


def run():
    import quant
    from arch import config
    from bench.common import ensure_llama
    from compiler import tiling
    from compiler.plan import plan_layer
    from dse import evaluate
    from dse.sweep import Workload
    from quant.qformat import read_meta
    path = ensure_llama()
    model = quant.load(path)
    choose, points = [], {}
    wl = Workload("claq", str(path), path, {"decode": 1, "prefill": 2048}, 32,
                  read_meta(path)["checksum"])
    evaluate._models[wl.checksum] = model          # loaded once, as a worker keeps it
    for name in CONFIGS:
        cfg = config.load(name)
        for layer in model.layers.values():
            plan = plan_layer(layer, cfg)
            for m in wl.tokens.values():
                t = time.perf_counter()
                tiling.choose(plan, cfg, m)
                choose.append(time.perf_counter() - t)
        row = {}
        for stage, fn in evaluate.POINT.items():
            t = time.perf_counter()
            fn(cfg, wl)
            row[f"{stage}_point_s"] = round(time.perf_counter() - t, 3)
        points[name] = row
    mean = statistics.mean(choose)
    return {"choose_s_per_layer": {"mean": round(mean, 4), "max": round(max(choose), 4),
                                   "count": len(choose)},
            "points": points,
            "target": {"choose_s_per_layer_mean_max": TARGET_CHOOSE_S,
                       "met": mean <= TARGET_CHOOSE_S}}
