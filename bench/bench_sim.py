"""`bitlut sim` on llama7b.q (decode M=1, prefill M=2048 sampled) on the lut config: wall time
of the simulation and the figures it reports."""

import time


def run():
    import quant
    from arch import config
    from bench.common import ensure_llama
    from sim.driver import simulate_layer, summarize
    model = quant.load(ensure_llama())
    cfg = config.load("lut")
    out = {"config": cfg.tag, "phases": {}}
    for m in (1, 2048):
        t0 = time.perf_counter()
        rows = [simulate_layer(layer, cfg, m, seed=i)
                for i, layer in enumerate(model.layers.values())]
        total, check = summarize(rows, m, cfg)
        out["phases"][str(m)] = {
            "wall_s": round(time.perf_counter() - t0, 2),
            "cycles": total["cycles"], "tokens_per_s": round(total["tokens_per_s"], 2),
            "roofline_fraction": round(total["roofline_fraction"], 4),
            "energy_mj_per_token": round(total["energy_j_per_token"] * 1e3, 4),
            "check_passed": check.get("passed"), "max_rel_err": check.get("max_rel_err"),
            "sampled_layers": sum(r["sampled"] for r in rows),
        }
    return out
