"""What the accelerator's fixed-point centroids add (DESIGN.md section 3): for every layer of
llama7b.q, the output error of the fixed-point codebooks against the .q file's fp16 codebooks,
relative to the output, for int8 and int16 centroids and two block sizes; the int8 activation
error on the same inputs for scale. Calibration-like inputs come from quant.synthetic."""

import numpy as np


def run():
    import quant
    from bench.common import ensure_llama
    from quant import synthetic
    from sim import golden
    model = quant.load(ensure_llama())
    specs = {s.name: s for s in synthetic.llama_block()}
    out = {}
    for name, layer in model.layers.items():
        spec = specs[name]
        x = synthetic.activations(spec.k, spec.group, tokens=64).numpy().astype(np.float64)
        x = x.reshape(-1, spec.k)
        w = layer.dequant().numpy().astype(np.float64)
        y = x @ w.T
        norm = np.linalg.norm(y)
        row = {}
        for cb, bs in ((8, 128), (8, 32), (16, 128)):
            cq, scale = golden.quantize_codebooks(layer.codebooks.astype(np.float32),
                                                  layer.bits, bs, cb)
            lay = golden.codebook_layout(layer.bits, bs)
            k = np.arange(layer.shape[1])[None, :]
            wfix = cq.astype(np.float64)[k, layer.codes.astype(np.int64)] \
                * scale[lay.block_of_col].astype(np.float64)[None, :]
            row[f"int{cb}_block{bs}"] = float(np.linalg.norm(x @ (w - wfix).T) / norm)
        xq, sx = golden.quantize_activations(x.astype(np.float32))
        xd = xq.astype(np.float64) * sx[:, None]
        row["int8_activations"] = float(np.linalg.norm((x - xd) @ w.T) / norm)
        out[name] = row
    return {"relative_output_error": out}
