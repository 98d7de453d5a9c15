"""Seeded synthetic LLM layers: one LLaMA-7B decoder block (DESIGN.md §6) and small layers for
tests, with statistics like real LLM weights and activations, and the model's shape and RMSNorm
weights (`quant.model_shape`) that a whole block needs.

Weights: Student-t (nu = 5) entries, heavy-tailed like trained LLM weights (papers/claq.md §6.2
measured how nu sets the share of columns with 13*mean|W| outliers), times a per-output-row and a
per-input-column log-normal scale spread, with a few input channels scaled up 3-8x (the outlier
channels that AP and OR exist for). Activations: a low-rank correlated part plus noise, per-channel
log-normal scales, and a few "massive" channels 20-50x larger, as in LLaMA's residual stream; the
down projection's input (SiLU(gate) * up) is heavier-tailed still.

RMSNorm weights: 1 + 0.1 N(0, 1), clipped to [0.5, 2]: positive and near 1, as trained LLaMA norms
mostly are (their initialisation is 1).

Every layer and norm draws from its own seed (base seed + index), so any one is reproducible
without generating the others.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from quant.model_shape import BLOCK_ROLES, FINAL_NORM, NORM_ROLES, ModelShape, linear_shapes

SEED = 0
# Calibration rows per input group: GPTQ uses 128 x 2048 tokens on GPU; 2048 keeps the CPU
# Hessians (K^2 T flops, 11008^2 for down) at a few seconds. Damping covers the rank deficit.
TOKENS = 2048


@dataclass(frozen=True)
class LayerSpec:
    """Members: name; n, k: out and in features; group: layers with the same group see the same
    input activations (and share one Hessian); std: target weight standard deviation."""

    name: str
    n: int
    k: int
    group: str
    std: float = 0.02


# role -> (input group, weight standard deviation) of a block's linear layers
ROLE_STATS = {"q_proj": ("attn_in", 0.02), "k_proj": ("attn_in", 0.02),
              "v_proj": ("attn_in", 0.02), "o_proj": ("attn_out", 0.02),
              "gate_proj": ("mlp_in", 0.015), "up_proj": ("mlp_in", 0.015),
              "down_proj": ("mlp_out", 0.015)}


def block_specs(layer_shapes):
    """The seven linear layers of one decoder block, in execution order, sized by
    `layer_shapes` (role -> (N, K), as `ModelShape.layer_shapes`)."""
    return [LayerSpec(r, *layer_shapes[r], *ROLE_STATS[r]) for r in BLOCK_ROLES]


def llama_block(hidden=4096, intermediate=11008):
    """The seven linear layers of one LLaMA decoder block with as many KV heads as heads."""
    return block_specs(linear_shapes(hidden, intermediate, q_dim=hidden, kv_dim=hidden))


SHAPES = {"llama7b": ModelShape(hidden=4096, intermediate=11008, heads=32, kv_heads=32,
                                head_dim=128, rope_theta=10000.0, norm_eps=1e-6, vocab=32000,
                                blocks=32, tie_embeddings=False),
          # the same structure at 1/16 of the width, with grouped-query attention (2 query heads
          # per KV head, k_proj and v_proj [128, 256]), for quick runs and tests
          "llama-tiny": ModelShape(hidden=256, intermediate=688, heads=4, kv_heads=2,
                                   head_dim=64, rope_theta=10000.0, norm_eps=1e-6, vocab=512,
                                   blocks=2, tie_embeddings=False)}
MODELS = {name: (lambda s=s: block_specs(s.layer_shapes)) for name, s in SHAPES.items()}


def _student_t(rng, nu, shape):
    # t_nu = Z / sqrt(V / nu), V ~ chi2_nu = 2 Gamma(nu / 2); float32 throughout (~3x faster
    # than numpy's float64 standard_t at 45M values)
    z = rng.standard_normal(shape, dtype=np.float32)
    v = rng.standard_gamma(nu / 2, size=shape, dtype=np.float32)
    z /= np.sqrt(v * np.float32(2.0 / nu))
    return z


def weight(spec, seed=SEED, index=0):
    """W [n, k] float32 torch tensor for `spec`."""
    rng = np.random.default_rng([seed, index, 1])
    nu = 5.0
    w = _student_t(rng, nu, (spec.n, spec.k))
    row = np.exp(rng.normal(0.0, 0.2, spec.n)).astype(np.float32)
    col = np.exp(rng.normal(0.0, 0.3, spec.k)).astype(np.float32)
    n_out = max(1, spec.k // 512)
    col[rng.choice(spec.k, n_out, replace=False)] *= rng.uniform(3, 8, n_out).astype(np.float32)
    w *= row[:, None]
    w *= col[None, :]
    w *= np.float32(spec.std / np.sqrt(nu / (nu - 2)))
    return torch.from_numpy(w)


def norm_weight(hidden, seed=SEED, index=0):
    """An RMSNorm weight [hidden] float32: 1 + 0.1 N(0, 1), clipped to [0.5, 2]."""
    rng = np.random.default_rng([seed, index, 3])
    return np.clip(1 + 0.1 * rng.standard_normal(hidden), 0.5, 2).astype(np.float32)


def block_norms(shape, seed=SEED):
    """The norms of a one-block model: `input_layernorm`, `post_attention_layernorm` and the
    final `norm` (`QModel.norms` naming, empty block prefix), seeded by their index."""
    names = NORM_ROLES + (FINAL_NORM,)
    return {name: norm_weight(shape.hidden, seed, i) for i, name in enumerate(names)}


def activations(k, group, tokens=TOKENS, seed=SEED):
    """Calibration inputs X [tokens, k] float32 for an input group (see the module docstring)."""
    rng = np.random.default_rng([seed, sum(group.encode()), 2])
    rank = 32
    x = rng.standard_normal((tokens, rank), dtype=np.float32) @ \
        (rng.standard_normal((rank, k), dtype=np.float32) / np.float32(np.sqrt(rank)))
    nu = 4.0 if group == "mlp_out" else 8.0
    x += _student_t(rng, nu, (tokens, k))
    scale = np.exp(rng.normal(0.0, 0.5, k)).astype(np.float32)
    n_massive = max(1, k // 1024)
    scale[rng.choice(k, n_massive, replace=False)] *= rng.uniform(20, 50, n_massive).astype(
        np.float32)
    x *= scale[None, :]
    return torch.from_numpy(x)


def hessians(specs, tokens=TOKENS, seed=SEED):
    """{group: H [k, k]} from `activations`, H = (2/T) X^T X as in `gptq.Hessian`."""
    from quant.gptq import Hessian
    out = {}
    for s in specs:
        if s.group not in out:
            acc = Hessian(s.k)
            acc.add(activations(s.k, s.group, tokens, seed))
            out[s.group] = acc.H
    return out


def quantize_model(model="llama7b", method=None, seed=SEED, tokens=TOKENS, device="cpu",
                   progress=None, keep=None, timings=None, smooth=False):
    """Quantize the synthetic `model` (a key of MODELS) layer by layer; returns a `QModel`.

    `progress(n)` gets the number of columns done; `keep(spec, w, h, qlayer)`, if given, is called
    per layer (the benchmarks use it to measure errors without keeping every weight); `timings`,
    if a dict, receives the seconds spent generating data ("generate": weights and activations),
    building Hessians ("hessian") and quantizing ("quantize"). `smooth`: migrate activation
    outliers into the weights first (`quant.smooth`, statistics from the same calibration
    tokens), for `pe.act_quant: smooth`."""
    from quant.gptq import Hessian
    from quant.layer import QModel
    from quant.method import Method, quantize_layer
    method = method or Method()
    if model not in MODELS:
        raise ValueError(f"synthetic model must be one of {sorted(MODELS)}, not {model!r}")
    t = timings if timings is not None else {}
    for key in ("generate", "hessian", "quantize"):
        t.setdefault(key, 0.0)
    specs = MODELS[model]()
    hs = {}
    layers = {}
    for i, spec in enumerate(specs):
        if spec.group not in hs:
            t0 = time.perf_counter()
            x = activations(spec.k, spec.group, tokens, seed)
            t1 = time.perf_counter()
            acc = Hessian(spec.k)
            acc.add(x)
            hs = {spec.group: acc.H}              # one input group at a time
            amax = x.abs().amax(dim=0).numpy()
            del x, acc
            t["generate"] += t1 - t0
            t["hessian"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        w = weight(spec, seed, i)
        t1 = time.perf_counter()
        if smooth:
            from quant.smooth import quantize_smoothed
            q = quantize_smoothed(method, w, hs[spec.group], amax, spec.name, device, progress)
        else:
            q = quantize_layer(method, w, hs[spec.group], spec.name, device, progress)
        t["generate"] += t1 - t0
        t["quantize"] += time.perf_counter() - t1
        if keep is not None:
            keep(spec, w, hs[spec.group], q)
        layers[spec.name] = q
        del w
    meta = method.metadata()
    meta["settings"] = {**meta["settings"], "seed": seed, "calibration_tokens": tokens}
    if smooth:
        from quant.smooth import SMOOTH_ALPHA
        meta["settings"]["smooth_alpha"] = SMOOTH_ALPHA
    return QModel(model=f"synthetic-{model}", quantizer=meta, layers=layers,
                  shape=SHAPES[model], norms=block_norms(SHAPES[model], seed))


def total_columns(model):
    return sum(s.k for s in MODELS[model]())
