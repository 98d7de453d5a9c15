"""Output relative error per layer of the synthetic LLaMA-7B block for RTN-2 (g128), GPTQ-2
(g128), GPTQ-3 (per row), CLAQ-2, CLAQ-2.2 (AP), CLAQ-2.2+OR and CLAQ-3, with bits per weight
including all overheads (issue 3, last acceptance bullet).

Relative error of a layer = ||(W - W_hat) X^T||_F / ||W X^T||_F over its calibration inputs X,
computed as sqrt(tr(D H D^T) / tr(W H W^T)) with H = (2/T) X^T X. The block total weights each
layer by its reference energy tr(W H W^T). Takes ~10 minutes on 2 CPU cores (every method on
every layer); BITLUT_BENCH_MODEL=llama-tiny gives the same table for the 1/16-width block in
seconds.
"""

import os
import time


def configs():
    from quant.claq import PAPER_OUTLIER_RATIOS, CLAQSettings
    from quant.method import Method
    top, rest = PAPER_OUTLIER_RATIOS
    return [("RTN-2 g128", Method("rtn", 2, 128)),
            ("GPTQ-2 g128", Method("gptq", 2, 128)),
            ("GPTQ-3", Method("gptq", 3, None)),
            ("CLAQ-2", Method("claq", 2.0)),
            ("CLAQ-2.2 AP", Method("claq", 2.2)),
            ("CLAQ-2.2 AP+OR", Method("claq", 2.2, claq=CLAQSettings(
                bits=2.2, outlier_ratio_top=top, outlier_ratio_rest=rest))),
            ("CLAQ-3", Method("claq", 3.0))]


def _energy(d, h):
    return float(((d @ h) * d).sum(dtype=__import__("torch").float64))


def run():
    from quant import synthetic
    from quant.method import quantize_layer
    model = os.environ.get("BITLUT_BENCH_MODEL", "llama7b")
    specs = synthetic.MODELS[model]()
    cfgs = configs()
    err = {label: {} for label, _ in cfgs}
    bpw = {label: {} for label, _ in cfgs}
    secs = {label: 0.0 for label, _ in cfgs}
    ref_energy, err_energy = {}, {label: 0.0 for label, _ in cfgs}
    weights = {}
    hs = {}
    for i, spec in enumerate(specs):
        if spec.group not in hs:
            hs = {spec.group: synthetic.hessians([spec])[spec.group]}
        h = hs[spec.group]
        w = synthetic.weight(spec, synthetic.SEED, i)
        ref = _energy(w, h)
        ref_energy[spec.name] = ref
        weights[spec.name] = spec.n * spec.k
        for label, method in cfgs:
            t0 = time.perf_counter()
            q = quantize_layer(method, w, h, spec.name)
            secs[label] += time.perf_counter() - t0
            e = _energy(w - q.dequant(), h)
            err_energy[label] += e
            err[label][spec.name] = round((e / ref) ** 0.5, 5)
            bpw[label][spec.name] = round(q.bits_per_weight(True), 4)
            print(f"  {spec.name:<10} {label:<15} rel. error {err[label][spec.name]:.4f}  "
                  f"{bpw[label][spec.name]:.4f} bits/weight", flush=True)
        del w
    total_w = sum(weights.values())
    total_ref = sum(ref_energy.values())
    rows = []
    for label, _ in cfgs:
        rows.append({
            "method": label,
            "rel_error": err[label],
            "rel_error_block": round((err_energy[label] / total_ref) ** 0.5, 5),
            "bits_per_weight": bpw[label],
            "bits_per_weight_block": round(sum(bpw[label][n] * weights[n] for n in weights)
                                           / total_w, 4),
            "quantize_seconds": round(secs[label], 1),
        })
    table = _markdown([s.name for s in specs], rows)
    print(table)
    return {"model": f"synthetic-{model}", "metric": "||(W - W_hat) X^T||_F / ||W X^T||_F",
            "rows": rows, "table_md": table}


def _markdown(names, rows):
    head = "| method | " + " | ".join(names) + " | block | bits/weight (block) |"
    sep = "|---" * (len(names) + 3) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [f"{r['rel_error'][n]:.4f}" for n in names]
        lines.append(f"| {r['method']} | " + " | ".join(cells)
                     + f" | {r['rel_error_block']:.4f} | {r['bits_per_weight_block']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run()
