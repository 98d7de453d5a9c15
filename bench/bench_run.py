"""`bitlut run` on llama7b.q (issue 4): compile, execute every layer on the functional executor,
compare with PyTorch; wall time per token count. M=1 always; M=128 (about 10 minutes on the
2-core machine) when BITLUT_BENCH_LONG=1."""

import os
import time


def run():
    import quant
    from arch import config
    from bench.common import ensure_llama
    from compiler.lower import lower
    from sim.check import run_layer, sample_activations
    model = quant.load(ensure_llama())
    cfg = config.load("lut")
    tokens = [1, 128] if os.environ.get("BITLUT_BENCH_LONG") else [1]
    out = {"config": cfg.tag, "runs": {}}
    for m in tokens:
        t0 = time.perf_counter()
        layers = {}
        for i, (name, layer) in enumerate(model.layers.items()):
            compiled = lower(layer, cfg, m)
            _, _, metrics = run_layer(compiled, cfg, layer, sample_activations(
                layer.shape[1], m, seed=i))
            layers[name] = {k: metrics[k] for k in ("passed", "max_rel_err", "rel_fro_err",
                                                    "tolerance_used")}
        out["runs"][str(m)] = {"wall_s": round(time.perf_counter() - t0, 2),
                               "passed": all(v["passed"] for v in layers.values()),
                               "layers": layers}
    return out
