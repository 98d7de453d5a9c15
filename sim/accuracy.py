"""`bitlut eval`: a model's fidelity once a `.q` file's weights and the accelerator's activation
numerics are both applied.

The checkpoint runs in PyTorch (float32) with every quantized `nn.Linear` replaced by
`y = round(x) · W_hatᵀ + b`: `W_hat` is the `.q` layer's float reference weight (dequantized codes
plus outliers, DESIGN.md §3) and `round(x) = sx · xq` is the accelerator's activation rounding
(int8, one scale per token row) at the layer's input. The fixed-point centroids and the integer
epilogue are not applied: both are bounded far below the weight error (docs/numerics.md), and the
integer path is checked bit for bit by `bitlut sim`.

Which numerics, by model:
- LLaMA-family causal models (`quant.model_shape.HF_TYPES`) run the whole block on the
  accelerator (docs/block.md), so they get its numerics: the on-chip rounding
  `arch.nonlinear.quantize_rows`, and with `vector="golden"` (the default) the vector unit's
  float32 sequences for every RMSNorm (`nonlinear.rmsnorm`, the final norm included), the
  attention softmax (`nonlinear.softmax` on the scaled scores, causal mask) and the gated MLP's
  `nonlinear.silu_mul`, with `lanes` accumulators (`timing.vector_lanes` of the config). The
  score and context products, RoPE, the embeddings and the head stay torch float32 (the
  attention's integer products on the PE array are not modelled here). `vector="float"` keeps
  HF's float32 functions.
  Then each KV format (`arch.kv.KV_FORMATS`) is scored on top of that: K (after RoPE) and V as
  the cache stores them, per token and KV head: int-b `quantize_kv(k, b, group)` then
  `dequantize_kv` (K's group `kv_group`, default `arch.kv.DEFAULT_GROUP` capped at the head dim;
  V's group the head dim), fp16 a float16 round trip. A cache subclass rounds what each block
  writes before attention reads it, so a token attends to itself as the cache holds it.
- Encoders and other causal models keep the host path: `arch.numerics.quantize_activations` at
  each quantized layer's input, attention, norms, embeddings and the head in float32; they have
  no block numerics and no KV formats (asking for either is a `UserError`).

Model-level fidelity against the fp32 checkpoint on a text file (`quant.checkpoint
.read_documents`):
- causal models: perplexity over non-overlapping windows of the tokenized text, and the mean
  KL divergence of the next-token distribution from fp32's;
- encoders: the mean cosine between the fp32 and quantized sentence embeddings (mean-pooled over
  the attention mask and L2-normalized, as sentence-transformers pools all-MiniLM-L6-v2).
Each is reported for the accelerator (weights + int8 activations, + the vector unit for LLaMA),
weights alone and activations alone (+ the vector unit for LLaMA), so that the error sources can
be told apart; LLaMA-family models add one row per KV format (the accelerator's run with that
cache). Per layer, on the quantized run's own inputs x at that layer (padding rows left out): the
weight error ||x·(W_hat − W)ᵀ|| / ||x·Wᵀ||, the activation error ||(round(x) − x)·W_hatᵀ|| /
||x·Wᵀ||, their total, and the drift of the layer's output from the fp32 model's (the error
accumulated through the blocks before it).
"""

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arch import kv as kvmod
from arch import nonlinear
from arch.numerics import quantize_activations
from bitlut.errors import UserError
from quant import checkpoint as ckpt
from quant.model_shape import HF_TYPES

SAMPLES = {"causal": 16, "encoder": 128}      # windows / documents scored
VARIANTS = ("accelerator", "weights", "activations")   # what is applied besides fp32
LABELS = ("weights + activations (acc.)", "weights only", "activations only")
ACT_MODES = ("int8", "fp32")
VECTOR_MODES = ("golden", "float")
DEFAULT_ARCH = "lut"          # the shipped config whose `timing.vector_lanes` eval takes
ATTENTION = "bitlut_vector"   # the attention implementation `install_block_numerics` registers
NOT_APPLICABLE = "KV formats: not applicable (not LLaMA-family)"


def round_activations(x):
    """The golden model's int8 per-token rounding of x [..., K], as float32 sx · xq."""
    shape = x.shape
    xq, sx = quantize_activations(x.detach().reshape(-1, shape[-1]).float().cpu().numpy())
    xr = xq.astype(np.float32) * sx[:, None]
    return torch.from_numpy(xr).reshape(shape).to(x.device)


def round_rows(x, lanes):
    """The vector unit's on-chip int8 rounding of x [..., K] (`nonlinear.quantize_rows`: one
    scale per token row, reciprocal multiplies), as float32 sx · xq."""
    shape = x.shape
    xq, sx = nonlinear.quantize_rows(_np(x).reshape(-1, shape[-1]), lanes)
    return _like(xq.astype(np.float32) * sx[:, None], x).reshape(shape)


def _np(t):
    return t.detach().float().cpu().numpy()


def _like(a, t):
    """The float32 numpy array `a` as a tensor on `t`'s device."""
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(t.device)


def _sq(t):
    return float(t.double().square().sum())


class _Err:
    """Running sums of squared norms for one layer's relative errors: y_ref = x·Wᵀ (fp32),
    y_w = x·W_hatᵀ, y_acc = round(x)·W_hatᵀ on the same input, y_fp32 the fp32 model's output."""

    def __init__(self):
        self.ref = self.w = self.a = self.total = self.drift = self.fp32 = 0.0

    def add(self, y_ref, y_w, y_acc, y_fp32):
        self.ref += _sq(y_ref)
        self.w += _sq(y_w - y_ref)
        self.a += _sq(y_acc - y_w)
        self.total += _sq(y_acc - y_ref)
        self.fp32 += _sq(y_fp32)
        self.drift += _sq(y_acc - y_fp32)

    def as_dict(self):
        r = math.sqrt(self.ref) or 1.0
        return {"weight_err": math.sqrt(self.w) / r, "act_err": math.sqrt(self.a) / r,
                "total_err": math.sqrt(self.total) / r,
                "drift": math.sqrt(self.drift) / (math.sqrt(self.fp32) or 1.0)}


class QuantLinear(torch.nn.Module):
    """An `nn.Linear` whose weights and input rounding follow `state["mode"]`: "fp32" (the
    checkpoint's), "accelerator" and "kv" (W_hat, rounded x), "weights" (W_hat, x) or
    "activations" (W, rounded x). In "fp32" it records its output; in "accelerator" it adds this
    batch to its error sums (rows where `state["mask"]` is set); "kv" (the accelerator's layer in
    the runs with a KV format) leaves them alone. x is rounded by the host's
    `quantize_activations`, or with `lanes` by the on-chip `nonlinear.quantize_rows`."""

    def __init__(self, linear, w_hat, state, act_mode="int8", lanes=None):
        super().__init__()
        self.w = linear.weight.detach().float()
        self.b = None if linear.bias is None else linear.bias.detach().float()
        self.w_hat = w_hat.to(self.w.device)
        self.state = state
        self.act_mode = act_mode
        self.lanes = lanes
        self.err = _Err()
        self.fp32_out = None

    def _round(self, x):
        if self.act_mode != "int8":
            return x
        return round_activations(x) if self.lanes is None else round_rows(x, self.lanes)

    def forward(self, x):
        mode = self.state["mode"]
        x = x.float()
        if mode == "fp32":
            y = torch.nn.functional.linear(x, self.w, self.b)
            self.fp32_out = y
            return y
        if mode == "weights":
            return torch.nn.functional.linear(x, self.w_hat, self.b)
        xr = self._round(x)
        if mode == "activations":
            return torch.nn.functional.linear(xr, self.w, self.b)
        y = torch.nn.functional.linear(xr, self.w_hat, self.b)
        if mode != "accelerator":
            return y
        real = [ckpt.masked_rows(t, self.state["mask"]) for t in (
            torch.nn.functional.linear(x, self.w, self.b),
            torch.nn.functional.linear(x, self.w_hat, self.b), y, self.fp32_out)]
        self.err.add(*real)
        return y


def _load_model(folder, kind):
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()          # one report on stdout, nothing else on stderr
    cls = AutoModelForCausalLM if kind == "causal" else AutoModel
    try:
        model = cls.from_pretrained(str(folder), dtype=torch.float32)
    except Exception as e:   # transformers raises many types for unreadable weights
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{folder}: checkpoint must load with transformers "
                        f"{cls.__name__}, not ({msg})") from None
    return model.eval()


def attach(model, qmodel, qfile, state, act_mode="int8", lanes=None):
    """Replace every nn.Linear that `qmodel` quantized by a `QuantLinear` (`lanes`: on-chip
    rounding); returns {layer name: QuantLinear}. A `.q` layer name may carry the checkpoint's
    prefix (`bert.`, `model.`) that the loaded model lacks. Raises `UserError` for a layer the
    model lacks or whose shape differs."""
    mods = dict(model.named_modules())
    out = {}
    for name, q in qmodel.layers.items():
        target = next((name[i:] for i in [0] + [j + 1 for j, c in enumerate(name) if c == "."]
                       if name[i:] in mods), None)
        lin = mods.get(target)
        if not isinstance(lin, torch.nn.Linear):
            raise UserError(f"{qfile}: layer `{name}` must be a linear layer of the checkpoint, "
                            "not missing from it (was the .q made from another model?)")
        if tuple(lin.weight.shape) != q.shape:
            raise UserError(f"{qfile}: layer `{name}` shape must be the checkpoint's "
                            f"{list(lin.weight.shape)}, not {list(q.shape)}")
        if q.smooth is not None:        # its weights are W·diag(s), its inputs X / s
            raise UserError(f"{qfile}: layer `{name}` must not carry SmoothQuant scales for "
                            "`bitlut eval` in this version (it rounds X per token), not smooth")
        parent, _, leaf = target.rpartition(".")
        ql = QuantLinear(lin, q.dequant(), state, act_mode, lanes)
        setattr(model.get_submodule(parent) if parent else model, leaf, ql)
        out[name] = ql
    return out


# -- the accelerator's block numerics (LLaMA family) ---------------------------------------------

def llama_family(config):
    """Whether a transformers config is a LLaMA-family model (the block runs on the accelerator)."""
    return config.model_type in HF_TYPES


def kv_formats(names=None, group=None, where="--kv"):
    """The `arch.kv.KVFormat`s named in `names` (None: every format, in `KV_FORMATS` order; a
    repeated name once), K's scale group `group` (None: `DEFAULT_GROUP`). `UserError` for an
    unknown name. Every format is scored whatever a PE array serves (`arch.kv.check_format`
    refuses those): eval measures numerics, not a design."""
    names = list(kvmod.KV_FORMATS) if names is None else list(names)
    for name in names:
        if name not in kvmod.KV_FORMATS:
            raise UserError(f"{where} must be one of {', '.join(kvmod.KV_FORMATS)}, "
                            f"not {name!r}")
    return [kvmod.KVFormat(n, kvmod.DEFAULT_GROUP if group is None else group)
            for n in dict.fromkeys(names)]


def kv_roundtrip(x, bits, group):
    """x [..., head_dim] (float32) as the KV cache stores it, row by row: `bits` None (fp16) a
    float16 round trip; else `nonlinear.quantize_kv(x, bits, group)` then `dequantize_kv`."""
    a = _np(x).reshape(-1, x.shape[-1])
    if bits is None:
        return _like(a.astype(np.float16).astype(np.float32), x).reshape(x.shape)
    codes, scales = nonlinear.quantize_kv(a, bits, group)
    return _like(nonlinear.dequantize_kv(codes, scales, bits, group), x).reshape(x.shape)


@functools.cache
def _kv_cache_class():
    from transformers import DynamicCache

    class KVFormatCache(DynamicCache):
        """A DynamicCache that stores K and V in a KV format: what a block writes is rounded
        (`kv_roundtrip`) before attention reads it back. K arrives after RoPE, [batch,
        kv_heads, tokens, head_dim]."""

        def __init__(self, config, fmt, head_dim):
            super().__init__(config=config)
            self.fmt, self.head_dim = fmt, head_dim

        def update(self, key_states, value_states, *args, **kwargs):
            k = kv_roundtrip(key_states, self.fmt.bits, self.fmt.k_group(self.head_dim))
            v = kv_roundtrip(value_states, self.fmt.bits, self.head_dim)
            return super().update(k, v, *args, **kwargs)

    return KVFormatCache


def kv_cache(config, fmt, head_dim):
    """An empty cache for one forward pass whose K and V are stored in `fmt` (`KVFormat`)."""
    return _kv_cache_class()(config, fmt, head_dim)


@dataclass
class Vector:
    """The vector unit's numerics on one model: applied while `on`, with `lanes` accumulators."""
    lanes: int
    on: bool = False


class GoldenRMSNorm(torch.nn.Module):
    """A LLaMA RMSNorm that runs `nonlinear.rmsnorm` while `vector.on`, else the wrapped one."""

    def __init__(self, norm, vector):
        super().__init__()
        self.norm, self.vector = norm, vector

    def forward(self, x):
        if not self.vector.on:
            return self.norm(x)
        rows = _np(x).reshape(-1, x.shape[-1])
        y = nonlinear.rmsnorm(rows, _np(self.norm.weight), self.norm.variance_epsilon,
                              self.vector.lanes)
        return _like(y, x).reshape(x.shape)


class GoldenMLP(torch.nn.Module):
    """A LLaMA MLP, `down(silu(gate(x)) · up(x))`, whose gate product is `nonlinear.silu_mul`
    while `vector.on`; its projections are the wrapped MLP's (QuantLinear after `attach`)."""

    def __init__(self, mlp, vector):
        super().__init__()
        self.mlp, self.vector = mlp, vector

    def forward(self, x):
        if not self.vector.on:
            return self.mlp(x)
        g, u = self.mlp.gate_proj(x), self.mlp.up_proj(x)
        return self.mlp.down_proj(_like(nonlinear.silu_mul(_np(g), _np(u)), g))


def golden_attention(q, k, v, scaling, lanes):
    """Causal attention with the vector unit's softmax: q [b, heads, t, hd] after RoPE, k and v
    [b, kv_heads, s, hd] (the cache's, the last t rows the new tokens'); query head h reads KV
    head h // (heads / kv_heads). Scores `(q · kᵀ) · scaling` in float32, then
    `nonlinear.softmax` with `valid = s − t + i + 1` for query row i (the causal mask), then
    `p · v`. Returns [b, t, heads, hd]."""
    b, h, t, _ = q.shape
    s = k.shape[2]
    rep = h // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    valid = np.tile(np.arange(s - t + 1, s + 1), b * h)
    p = nonlinear.softmax(_np(scores).reshape(-1, s), valid, lanes)
    return torch.matmul(_like(p, q).reshape(b, h, t, s), v).transpose(1, 2).contiguous()


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The attention implementation `ATTENTION`: transformers' sdpa unless the module's
    `bitlut_vector` is on, then `golden_attention` (causal windows without padding only)."""
    if not module.bitlut_vector.on:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if attention_mask is not None:
        raise ValueError("the vector unit's softmax takes causal windows without padding, not "
                         "an attention mask")
    return golden_attention(query, key, value, scaling, module.bitlut_vector.lanes), None


@functools.cache
def _register_attention():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)   # sdpa's masks: None when causal


def install_block_numerics(model, vector):
    """Give a LLaMA-family causal model (`LlamaForCausalLM`, `MistralForCausalLM`) the vector
    unit's numerics, switched by `vector.on`: every RMSNorm (the blocks' and the final one) a
    `GoldenRMSNorm`, every MLP a `GoldenMLP`, and attention the `ATTENTION` implementation.
    Call after `attach` (the wrappers move the modules that `attach` finds by name)."""
    _register_attention()
    body = model.model
    for layer in body.layers:
        layer.input_layernorm = GoldenRMSNorm(layer.input_layernorm, vector)
        layer.post_attention_layernorm = GoldenRMSNorm(layer.post_attention_layernorm, vector)
        layer.mlp = GoldenMLP(layer.mlp, vector)
        layer.self_attn.bitlut_vector = vector
    body.norm = GoldenRMSNorm(body.norm, vector)
    model.config._attn_implementation = ATTENTION


@dataclass(frozen=True)
class BlockNumerics:
    """What `evaluate` applies to a LLaMA-family model. Members: `golden` (the vector unit's
    functions, else HF's float32 ones), `lanes`, `kv` (the `KVFormat`s scored), `head_dim`."""
    golden: bool
    lanes: int
    kv: tuple
    head_dim: int


def block_numerics(folder, config, kv=None, kv_group=None, vector=None, lanes=None,
                   seqlen=None):
    """The `BlockNumerics` for checkpoint `folder` (its transformers `config`), or None for a
    model that is not LLaMA-family (the host path). `kv`: KV format names (None: all);
    `kv_group`: K's scale group; `vector`: "golden" (default) or "float"; `lanes`: None for
    `DEFAULT_ARCH`'s `timing.vector_lanes`. `UserError` for `kv`, `kv_group` or a golden
    `vector` asked of a model that has no block numerics, for a K group that does not divide the
    head, and for golden numerics on a model they do not cover."""
    fmts = kv_formats(kv, kv_group)
    if not llama_family(config):
        asked = [flag for flag, v in (("--kv", kv), ("--kv-group", kv_group)) if v is not None]
        if vector == "golden":
            asked.append("--vector golden")
        if asked:
            raise UserError(f"{folder}: {asked[0]} must be given only for a LLaMA-family "
                            f"checkpoint (model_type {' or '.join(HF_TYPES)}), not model_type "
                            f"{config.model_type!r}")
        return None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    g = min(kvmod.DEFAULT_GROUP if kv_group is None else kv_group, head_dim)
    if any(not f.fp16 for f in fmts) and (head_dim % g or g & (g - 1)):
        raise UserError(f"--kv-group: the K scale group must be a power of two dividing the "
                        f"head dim ({head_dim}), not {kv_group}")
    golden = vector != "float"
    if golden and config.hidden_act != "silu":
        raise UserError(f"{folder}: hidden_act must be silu for --vector golden (the vector "
                        f"unit's silu_mul), not {config.hidden_act!r}; --vector float scores it")
    window = getattr(config, "sliding_window", None)
    if golden and window and seqlen and seqlen > window:
        raise UserError(f"--seqlen must be at most the checkpoint's sliding window ({window}) "
                        f"for --vector golden (a causal mask over the whole window), not {seqlen}")
    if lanes is None:
        from arch import config as arch_config
        lanes = arch_config.load(DEFAULT_ARCH).timing.vector_lanes
    return BlockNumerics(golden, lanes, tuple(fmts), head_dim)


def eval_inputs(folder, config, kind, text, samples, seqlen, batch_size):
    """Scored inputs: [(input_ids, attention_mask or None)] and the number of real tokens."""
    docs = ckpt.read_documents(text)
    tok = ckpt.load_tokenizer(folder, "to evaluate on text")
    seqlen = ckpt.max_tokens(config, seqlen)
    if kind == "causal":
        ids = ckpt.token_stream(tok, docs)
        n = min(samples, ids.numel() // seqlen)
        if n < 1:
            raise UserError(f"{text}: evaluation text must have at least {seqlen} tokens "
                            f"(--seqlen), not {ids.numel()}")
        win = ids[:n * seqlen].reshape(n, seqlen)
        return [(win[i:i + batch_size], None) for i in range(0, n, batch_size)]
    return ckpt.encode_documents(tok, docs[:samples], seqlen, batch_size)


def _pooled(hidden, mask):
    m = mask.to(hidden.dtype)[..., None]
    e = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(e, dim=-1)


class _Scores:
    """Per run (a variant or a KV format's run): causal: summed NLL and KL from fp32 over
    predicted tokens; encoder: summed cosine over documents."""

    def __init__(self, kind, runs=VARIANTS):
        self.kind = kind
        self.n = 0
        self.nll = dict.fromkeys(("fp32", *runs), 0.0)
        self.kl = dict.fromkeys(runs, 0.0)
        self.cos = {v: [] for v in runs}

    def add(self, variant, out, ref, ids, mask):
        if self.kind == "causal":
            logp = torch.log_softmax(out.logits[:, :-1].double(), -1)
            target = ids[:, 1:]
            self.nll[variant] += float(-logp.gather(-1, target[..., None]).sum())
            if variant == "fp32":
                self.n += target.numel()
            else:
                ref_logp = torch.log_softmax(ref.logits[:, :-1].double(), -1)
                self.kl[variant] += float((ref_logp.exp() * (ref_logp - logp)).sum())
        elif variant != "fp32":
            e, r = _pooled(out.last_hidden_state, mask), _pooled(ref.last_hidden_state, mask)
            self.cos[variant] += (e * r).sum(-1).tolist()

    def perplexity(self, run):
        return math.exp(self.nll[run] / self.n)

    def as_dict(self):
        if self.kind == "causal":
            return {"metric": "perplexity", "fp32": self.perplexity("fp32"),
                    **{v: {"perplexity": self.perplexity(v), "kl_from_fp32": self.kl[v] / self.n}
                       for v in VARIANTS}}
        return {"metric": "cosine", "fp32": 1.0,
                **{v: {"mean_cosine": float(np.mean(self.cos[v])),
                       "min_cosine": float(np.min(self.cos[v]))} for v in VARIANTS}}

    def kv_dict(self, fmts):
        """{format: perplexity, delta_ppl (vs fp32), kl_from_fp32} of the runs `_kv_run` names."""
        fp32 = self.perplexity("fp32")
        return {f.name: {"perplexity": self.perplexity(_kv_run(f)),
                         "delta_ppl": self.perplexity(_kv_run(f)) - fp32,
                         "kl_from_fp32": self.kl[_kv_run(f)] / self.n} for f in fmts}


def _kv_run(fmt):
    return f"kv {fmt.name}"


def _runs(block):
    """(run name, QuantLinear mode, vector unit on, KV format or None) of each quantized run."""
    golden = block is not None and block.golden
    return ([(v, v, golden and v != "weights", None) for v in VARIANTS]
            + [(_kv_run(f), "kv", golden, f) for f in (block.kv if block else ())])


def evaluate(folder, qfile, text=None, samples=None, seqlen=ckpt.SEQLEN, batch_size=8,
             act_mode="int8", kv=None, kv_group=None, vector=None, lanes=None):
    """Score the `.q` file `qfile` on the checkpoint `folder` (module docstring); returns the
    JSON-ready report. For a LLaMA-family checkpoint, `kv` (format names, None: all),
    `kv_group`, `vector` ("golden", the default, or "float") and `lanes` choose its block
    numerics (`block_numerics`); the report's `kv` is None for other models. Raises `UserError`
    for unusable inputs."""
    import quant
    if act_mode not in ACT_MODES:
        raise ValueError(f"act_mode must be one of {list(ACT_MODES)}, not {act_mode!r}")
    if vector is not None and vector not in VECTOR_MODES:
        raise ValueError(f"vector must be one of {list(VECTOR_MODES)}, not {vector!r}")
    kv_formats(kv)                      # an unknown name is refused before anything loads
    qmodel = quant.load(qfile)
    folder = Path(folder)
    config = ckpt.load_config(folder)
    kind = ckpt.model_kind(config)
    block = block_numerics(folder, config, kv, kv_group, vector, lanes,
                           ckpt.max_tokens(config, seqlen))
    text = Path(text) if text is not None else ckpt.DEFAULT_TEXT
    samples = samples or SAMPLES[kind]
    batches = eval_inputs(folder, config, kind, text, samples, seqlen, batch_size)
    model = _load_model(folder, kind)
    state = {"mode": "fp32", "mask": None}
    qlayers = attach(model, qmodel, qfile, state, act_mode, block and block.lanes)
    vec = Vector(block.lanes if block else 0)
    if block is not None and block.golden:
        install_block_numerics(model, vec)
    runs = _runs(block)
    scores = _Scores(kind, [r[0] for r in runs])
    with torch.no_grad():
        for ids, mask in batches:
            kw = {} if mask is None else {"attention_mask": mask}
            state["mask"] = mask
            state["mode"], vec.on = "fp32", False
            ref = model(input_ids=ids, **kw)
            scores.add("fp32", ref, ref, ids, mask)
            for run, mode, on, fmt in runs:
                state["mode"], vec.on = mode, on
                cache = {} if fmt is None else {
                    "past_key_values": kv_cache(model.config, fmt, block.head_dim),
                    "use_cache": True}
                scores.add(run, model(input_ids=ids, **kw, **cache), ref, ids, mask)
    cal = (qmodel.quantizer.get("settings") or {}).get("calibration") or {}
    return {"checkpoint": str(folder), "qfile": str(qfile), "model": qmodel.model, "kind": kind,
            "text": str(text), "calibration_text": cal.get("text"),
            "documents" if kind == "encoder" else "windows":
                sum(int(ids.shape[0]) for ids, _ in batches),
            "tokens": sum(int(ids.numel() if m is None else m.sum()) for ids, m in batches),
            "act_rounding": _rounding(act_mode, block),
            "vector": None if block is None else VECTOR_MODES[not block.golden],
            "vector_lanes": block and block.lanes,
            "bits_per_weight": qmodel.bits_per_weight(True), **scores.as_dict(),
            "kv": None if block is None else {
                "k_group": block.kv[0].k_group(block.head_dim), "v_group": block.head_dim,
                "formats": scores.kv_dict(block.kv)},
            "layers": [{"name": n, "shape": list(qmodel.layers[n].shape),
                        "bits_per_weight": qmodel.layers[n].bits_per_weight(True),
                        **ql.err.as_dict()} for n, ql in qlayers.items()]}


def _rounding(act_mode, block):
    if act_mode != "int8":
        return "fp32 (no rounding)"
    if block is None:
        return "int8 per token row (golden model)"
    return "int8 per token row (on chip, quantize_rows)"


def format_report(r):
    """The report as a text table: the model-level scores, the KV formats' (LLaMA family), then
    one row per layer."""
    head = (f"bitlut eval {r['qfile']} on {r['checkpoint']} ({r['kind']}, "
            f"{r['bits_per_weight']:.3f} bits/weight, activations {r['act_rounding']})\n"
            f"text {r['text']}: {r.get('windows', r.get('documents'))} "
            f"{'windows' if r['kind'] == 'causal' else 'documents'}, {r['tokens']} tokens")
    if r["calibration_text"] and Path(r["text"]).name == Path(r["calibration_text"]).name:
        head += " (the calibration text: not held out)"
    lines = [head]
    if r.get("vector") == "golden":
        lines.append(f"vector unit: golden fp32 rmsnorm, softmax, silu_mul ({r['vector_lanes']} "
                     "lanes) in the acc., activations and KV rows")
    elif r.get("vector") == "float":
        lines.append("vector unit: float32 (transformers' functions)")
    if r["metric"] == "perplexity":
        lines.append(f"  {'':<28} {'perplexity':>10} {'KL from fp32':>13}")
        lines.append(f"  {'fp32':<28} {r['fp32']:>10.3f} {'':>13}")
        for v, label in zip(VARIANTS, LABELS, strict=True):
            lines.append(f"  {label:<28} {r[v]['perplexity']:>10.3f} "
                         f"{r[v]['kl_from_fp32']:>13.5f}")
    else:
        lines.append(f"  {'embedding cosine vs fp32':<28} {'mean':>8} {'min':>8}")
        for v, label in zip(VARIANTS, LABELS, strict=True):
            lines.append(f"  {label:<28} {r[v]['mean_cosine']:>8.4f} {r[v]['min_cosine']:>8.4f}")
    lines += _kv_lines(r.get("kv"))
    width = max(len(x["name"]) for x in r["layers"])
    lines.append(f"  {'layer':<{width}} {'N x K':>11} {'bpw':>6} {'weight':>8} {'act':>8} "
                 f"{'total':>8} {'drift':>8}")
    for x in r["layers"]:
        lines.append(f"  {x['name']:<{width}} {'x'.join(map(str, x['shape'])):>11} "
                     f"{x['bits_per_weight']:>6.3f} {x['weight_err']:>8.4f} {x['act_err']:>8.4f} "
                     f"{x['total_err']:>8.4f} {x['drift']:>8.4f}")
    lines.append("  layer errors are relative to ||x W^T|| on the layer's inputs in the quantized "
                 "run; drift is the output's distance from the fp32 model's")
    return "\n".join(lines)


def _kv_lines(kv):
    """The table "perplexity by KV format" (dPPL: perplexity minus fp32's)."""
    if kv is None:
        return [NOT_APPLICABLE]
    lines = [f"  {'perplexity by KV format':<28} {'perplexity':>10} {'dPPL vs fp32':>13} "
             f"{'KL from fp32':>13}"]
    for name, x in kv["formats"].items():
        lines.append(f"  {name:<28} {x['perplexity']:>10.3f} {x['delta_ppl']:>+13.3f} "
                     f"{x['kl_from_fp32']:>13.5f}")
    lines.append(f"  (the acc. run with K after RoPE and V stored in each format: K scale group "
                 f"{kv['k_group']}, V {kv['v_group']} columns)")
    return lines
