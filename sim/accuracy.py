"""`bitlut eval`: a model's fidelity once a `.q` file's weights and the accelerator's activation
numerics are both applied.

The checkpoint runs in PyTorch (float32) with every quantized `nn.Linear` replaced by
`y = round(x) · W_hatᵀ + b`: `W_hat` is the `.q` layer's float reference weight (dequantized codes
plus outliers, DESIGN.md §3) and `round(x) = sx · xq` is the golden model's activation rounding
(`arch.numerics.quantize_activations`: int8, one scale per token row) at the layer's input. The
fixed-point centroids and the integer epilogue are not applied: both are bounded far below the
weight error (docs/numerics.md), and the integer path is checked bit for bit by `bitlut sim`.
Attention, norms, embeddings and the head stay in float32, as the accelerator leaves them to the
host.

Model-level fidelity against the fp32 checkpoint on a text file (`quant.checkpoint
.read_documents`):
- causal models: perplexity over non-overlapping windows of the tokenized text, and the mean
  KL divergence of the next-token distribution from fp32's;
- encoders: the mean cosine between the fp32 and quantized sentence embeddings (mean-pooled over
  the attention mask and L2-normalized, as sentence-transformers pools all-MiniLM-L6-v2).
Each is reported for the accelerator (weights + int8 activations), weights alone and activations
alone, so that the two error sources can be told apart. Per layer, on the quantized run's own
inputs x at that layer (padding rows left out): the weight error ||x·(W_hat − W)ᵀ|| / ||x·Wᵀ||,
the activation error ||(round(x) − x)·W_hatᵀ|| / ||x·Wᵀ||, their total, and the drift of the
layer's output from the fp32 model's (the error accumulated through the blocks before it).
"""

import math
from pathlib import Path

import numpy as np
import torch

from arch.numerics import quantize_activations
from bitlut.errors import UserError
from quant import checkpoint as ckpt

SAMPLES = {"causal": 16, "encoder": 128}      # windows / documents scored
VARIANTS = ("accelerator", "weights", "activations")   # what is applied besides fp32
LABELS = ("weights + activations (acc.)", "weights only", "activations only")
ACT_MODES = ("int8", "fp32")


def round_activations(x):
    """The golden model's int8 per-token rounding of x [..., K], as float32 sx · xq."""
    shape = x.shape
    xq, sx = quantize_activations(x.detach().reshape(-1, shape[-1]).float().cpu().numpy())
    xr = xq.astype(np.float32) * sx[:, None]
    return torch.from_numpy(xr).reshape(shape).to(x.device)


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
    checkpoint's), "accelerator" (W_hat, rounded x), "weights" (W_hat, x) or "activations"
    (W, rounded x). In "fp32" it records its output; in "accelerator" it adds this batch to its
    error sums (rows where `state["mask"]` is set)."""

    def __init__(self, linear, w_hat, state, act_mode="int8"):
        super().__init__()
        self.w = linear.weight.detach().float()
        self.b = None if linear.bias is None else linear.bias.detach().float()
        self.w_hat = w_hat.to(self.w.device)
        self.state = state
        self.act_mode = act_mode
        self.err = _Err()
        self.fp32_out = None

    def _round(self, x):
        return round_activations(x) if self.act_mode == "int8" else x

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


def attach(model, qmodel, qfile, state, act_mode="int8"):
    """Replace every nn.Linear that `qmodel` quantized by a `QuantLinear`; returns
    {layer name: QuantLinear}. A `.q` layer name may carry the checkpoint's prefix (`bert.`,
    `model.`) that the loaded model lacks. Raises `UserError` for a layer the model lacks or
    whose shape differs."""
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
        ql = QuantLinear(lin, q.dequant(), state, act_mode)
        setattr(model.get_submodule(parent) if parent else model, leaf, ql)
        out[name] = ql
    return out


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
    """Per variant: causal: summed NLL and KL from fp32 over predicted tokens; encoder:
    summed cosine over documents."""

    def __init__(self, kind):
        self.kind = kind
        self.n = 0
        self.nll = dict.fromkeys(("fp32",) + VARIANTS, 0.0)
        self.kl = dict.fromkeys(VARIANTS, 0.0)
        self.cos = {v: [] for v in VARIANTS}

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

    def as_dict(self):
        if self.kind == "causal":
            ppl = {v: math.exp(s / self.n) for v, s in self.nll.items()}
            return {"metric": "perplexity", "fp32": ppl["fp32"],
                    **{v: {"perplexity": ppl[v], "kl_from_fp32": self.kl[v] / self.n}
                       for v in VARIANTS}}
        return {"metric": "cosine", "fp32": 1.0,
                **{v: {"mean_cosine": float(np.mean(c)), "min_cosine": float(np.min(c))}
                   for v, c in self.cos.items()}}


def evaluate(folder, qfile, text=None, samples=None, seqlen=ckpt.SEQLEN, batch_size=8,
             act_mode="int8"):
    """Score the `.q` file `qfile` on the checkpoint `folder` (module docstring); returns the
    JSON-ready report. Raises `UserError` for unusable inputs."""
    import quant
    if act_mode not in ACT_MODES:
        raise ValueError(f"act_mode must be one of {list(ACT_MODES)}, not {act_mode!r}")
    qmodel = quant.load(qfile)
    folder = Path(folder)
    config = ckpt.load_config(folder)
    kind = ckpt.model_kind(config)
    text = Path(text) if text is not None else ckpt.DEFAULT_TEXT
    samples = samples or SAMPLES[kind]
    batches = eval_inputs(folder, config, kind, text, samples, seqlen, batch_size)
    model = _load_model(folder, kind)
    state = {"mode": "fp32", "mask": None}
    qlayers = attach(model, qmodel, qfile, state, act_mode)
    scores = _Scores(kind)
    with torch.no_grad():
        for ids, mask in batches:
            kw = {} if mask is None else {"attention_mask": mask}
            state["mask"] = mask
            state["mode"] = "fp32"
            ref = model(input_ids=ids, **kw)
            scores.add("fp32", ref, ref, ids, mask)
            for v in VARIANTS:
                state["mode"] = v
                scores.add(v, model(input_ids=ids, **kw), ref, ids, mask)
    cal = (qmodel.quantizer.get("settings") or {}).get("calibration") or {}
    return {"checkpoint": str(folder), "qfile": str(qfile), "model": qmodel.model, "kind": kind,
            "text": str(text), "calibration_text": cal.get("text"),
            "documents" if kind == "encoder" else "windows":
                sum(int(ids.shape[0]) for ids, _ in batches),
            "tokens": sum(int(ids.numel() if m is None else m.sum()) for ids, m in batches),
            "act_rounding": "int8 per token row (golden model)" if act_mode == "int8"
            else "fp32 (no rounding)",
            "bits_per_weight": qmodel.bits_per_weight(True), **scores.as_dict(),
            "layers": [{"name": n, "shape": list(qmodel.layers[n].shape),
                        "bits_per_weight": qmodel.layers[n].bits_per_weight(True),
                        **ql.err.as_dict()} for n, ql in qlayers.items()]}


def format_report(r):
    """The report as a text table: the model-level scores, then one row per layer."""
    head = (f"bitlut eval {r['qfile']} on {r['checkpoint']} ({r['kind']}, "
            f"{r['bits_per_weight']:.3f} bits/weight, activations {r['act_rounding']})\n"
            f"text {r['text']}: {r.get('windows', r.get('documents'))} "
            f"{'windows' if r['kind'] == 'causal' else 'documents'}, {r['tokens']} tokens")
    if r["calibration_text"] and Path(r["text"]).name == Path(r["calibration_text"]).name:
        head += " (the calibration text: not held out)"
    lines = [head]
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
