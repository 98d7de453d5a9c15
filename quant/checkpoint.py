"""Quantize every linear layer of a Hugging Face checkpoint folder (safetensors + config.json),
one block at a time, with calibration activations from running the model.

Ref: GPTQ (Frantar et al., arXiv 2210.17323) §5 and IST-DASLab/gptq `llama.py` `llama_sequential`
(catch the first block's inputs, then quantize block by block, feeding each block the previous
quantized block's outputs); papers/claq.md §1 for CLAQ's use of it.

Memory stays bounded: the model is built with a single block (a template whose weights are
reloaded from the checkpoint for every block in turn) plus the parts outside the blocks
(embeddings, norms); only the current block's weights, the calibration hidden states and the
packed results are in memory. The linear layers of a block are calibrated together in one pass
(not CLAQ's "true sequential" sub-block order), then replaced by their dequantized weights before
the block's outputs are computed for the next one (or, with `sequential=False`, every block sees
the fp32 model's activations). Works for models whose blocks sit in one `nn.ModuleList` (the
LLaMA family: `layers`; BERT-style encoders: `encoder.layer`).

Calibration data (`Calibration`, `calibration_batches`) fits the model: causal models get
segments of the tokenized text at seeded offsets, as GPTQ samples C4; encoders get whole
documents tokenized as the model expects, padded per batch, and padding rows are left out of
every Hessian. The default text ships in `quant/data/`; random tokens only on request.

For a LLaMA-family model (`quant.model_shape.HF_TYPES`) the result also records the model's shape
from config.json and its RMSNorm weights from the checkpoint (`QModel.shape`, `QModel.norms`), so
that a whole block can run from the `.q` file; other models record neither.
"""

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from bitlut.errors import UserError
from quant.model_shape import FINAL_NORM, HF_TYPES, NORM_ROLES, ModelShape

SAMPLES = 16          # causal: segments (GPTQ uses 128 x 2048 tokens; CPU-sized default)
SEQLEN = 256
ENCODER_SAMPLES = 128  # encoders: documents (a paragraph of the shipped text is ~50 tokens)
# The shipped calibration text (public domain; quant/data/README.md says where it is from)
DEFAULT_TEXT = Path(__file__).resolve().parent / "data" / "calibration.txt"
CAUSAL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "opt")


class _Stop(Exception):
    """Raised by the catcher once it has the first block's inputs."""


class _Catcher(torch.nn.Module):
    def __init__(self, store):
        super().__init__()
        self.store = store

    def forward(self, hidden_states, *args, **kwargs):
        self.store.append((hidden_states.detach(), args, kwargs))
        raise _Stop


class _Weights:
    """Read tensors by name from a checkpoint's safetensors files, one at a time."""

    def __init__(self, folder):
        from safetensors import safe_open
        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                wmap = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise UserError(f"{index}: must be a safetensors index with a `weight_map`, "
                                f"not unreadable ({e})") from None
            files = sorted(set(wmap.values()))
        else:
            files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise UserError(f"{folder}: checkpoint must hold *.safetensors weights, not none "
                            "(pickle .bin checkpoints are not read: loading them runs code)")
        self.where = {}
        self.handles = {}
        for name in files:
            try:
                h = safe_open(str(folder / name), framework="pt")
            except Exception as e:   # safetensors raises its own error types
                msg = " ".join(str(e).split())
                raise UserError(f"{folder / name}: must be a safetensors file, not ({msg})") \
                    from None
            self.handles[name] = h
            for key in h.keys():
                self.where[key] = name

    def keys(self):
        return self.where.keys()

    def get(self, key):
        return self.handles[self.where[key]].get_tensor(key)


def _blocks(model):
    """(qualified name, ModuleList) of the model's block list: the longest nn.ModuleList."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise UserError(f"model {type(model).__name__} must have its blocks in an nn.ModuleList, "
                        "not elsewhere")
    return best


def _prefix(ckpt_keys, model_keys, base_prefix):
    """The prefix that maps checkpoint keys onto the base model's (e.g. `model.` for a
    LlamaForCausalLM save, `bert.` for BertForMaskedLM, `` for a base-model save)."""
    cands = {"", f"{base_prefix}."} | {k.split(".")[0] + "." for k in ckpt_keys}
    score = {p: sum(1 for k in ckpt_keys if k.startswith(p) and k[len(p):] in model_keys)
             for p in cands}
    return max(sorted(score), key=lambda p: score[p])


def read_documents(path):
    """The documents of a text file: paragraphs separated by blank lines, the line breaks inside
    a paragraph read as spaces (plain-text books, `quant/data/calibration.txt`); a file without
    blank lines between its lines holds one document per line (a sentence list). Raises
    `UserError` for a missing file or one without text."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: text file must exist, not missing")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: text file must be UTF-8, not ({e.reason} at byte "
                        f"{e.start})") from None
    lines = "\n".join(ln.strip() for ln in raw.splitlines()).strip("\n").split("\n")
    if "" in lines:             # a blank line between two non-blank ones: paragraphs
        docs, cur = [], []
        for ln in lines + [""]:
            if ln:
                cur.append(ln)
            elif cur:
                docs.append(" ".join(cur))
                cur = []
    else:
        docs = [ln for ln in lines if ln]
    if not docs:
        raise UserError(f"{path}: text file must hold at least one document, not be empty")
    return docs


def model_kind(config):
    """"causal" for decoder-only language models (an architecture named `*ForCausalLM` or
    `*LMHeadModel`, or a LLaMA-family model type), "encoder" otherwise (BERT-style)."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal"
    if getattr(config, "is_decoder", False) or config.model_type in CAUSAL_TYPES:
        return "causal"
    return "encoder"


def load_tokenizer(folder, why):
    """The checkpoint's tokenizer; `UserError` (naming `why` it was needed) if it has none."""
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:   # transformers raises many types for a missing tokenizer
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{folder}: checkpoint must include a tokenizer {why}, not "
                        f"({msg})") from None


@dataclass(frozen=True)
class Calibration:
    """Where the calibration activations come from.

    Members:
        text: a text file (`read_documents`); None means the shipped `DEFAULT_TEXT`.
        samples: causal models: segments of `seqlen` tokens; encoders: documents (None: the
            kind's default, `SAMPLES` or `ENCODER_SAMPLES`).
        seqlen: causal: the segment length; encoders: the longest sample (longer ones are cut).
        seed: picks the segments' offsets or the documents.
        random_tokens: seeded uniform token ids instead of text (no tokenizer needed; a poor
            stand-in: activations of random tokens are not the model's).
        batch_size: encoder samples per forward pass, padded to the longest of the batch (or to
            `seqlen` with `pad_to_seqlen`); padding rows never enter a Hessian.
    """

    text: str | None = None
    samples: int | None = None
    seqlen: int = SEQLEN
    seed: int = 0
    random_tokens: bool = False
    batch_size: int = 8
    pad_to_seqlen: bool = False

    def metadata(self, kind, batches):
        return {"text": None if self.random_tokens else str(self.text or DEFAULT_TEXT.name),
                "random_tokens": self.random_tokens, "kind": kind,
                "samples": sum(int(ids.shape[0]) for ids, _ in batches),
                "seqlen": self.seqlen,
                "tokens": sum(int(ids.numel() if m is None else m.sum()) for ids, m in batches)}


def calibration_batches(folder, config, cal):
    """The calibration inputs as a list of (input_ids [B, T], attention_mask [B, T] or None).

    Causal models (GPTQ's C4 sampling, arXiv 2210.17323 §5): the documents joined by blank lines
    are tokenized once and `samples` segments of `seqlen` tokens start at seeded offsets; no
    padding, no mask. Encoders: `samples` documents chosen by the seed (all of them if fewer),
    each tokenized as the model expects (special tokens such as [CLS] ... [SEP], cut to
    `seqlen`), batched with padding and the tokenizer's attention mask."""
    kind = model_kind(config)
    samples = cal.samples or (SAMPLES if kind == "causal" else ENCODER_SAMPLES)
    g = torch.Generator().manual_seed(cal.seed)
    if cal.random_tokens:
        ids = torch.randint(0, int(config.vocab_size), (samples, cal.seqlen), generator=g)
        return [(ids[i:i + cal.batch_size], None) for i in range(0, samples, cal.batch_size)]
    text = Path(cal.text) if cal.text is not None else DEFAULT_TEXT
    docs = read_documents(text)
    tok = load_tokenizer(folder, "to calibrate on text (or pass --random-tokens)")
    if kind == "causal":
        ids = token_stream(tok, docs)
        if ids.numel() < 2:
            raise UserError(f"{text}: calibration text must have at least 2 tokens, "
                            f"not {ids.numel()}")
        seqlen = min(cal.seqlen, ids.numel())
        starts = torch.randint(0, ids.numel() - seqlen + 1, (samples,), generator=g)
        segs = torch.stack([ids[s:s + seqlen] for s in starts.tolist()])
        return [(segs[i:i + cal.batch_size], None) for i in range(0, samples, cal.batch_size)]
    pick = sorted(torch.randperm(len(docs), generator=g)[:samples].tolist())
    return encode_documents(tok, [docs[i] for i in pick], max_tokens(config, cal.seqlen),
                            cal.batch_size, cal.pad_to_seqlen)


def max_tokens(config, seqlen):
    """`seqlen`, or less where the model's position embeddings end sooner."""
    return min(seqlen, int(getattr(config, "max_position_embeddings", None) or seqlen))


def token_stream(tok, docs):
    """The documents joined by blank lines and tokenized as one stream, without special tokens
    (a causal model's text): [T] long. No warning for a stream longer than the model's
    context: it is cut into windows or segments afterwards."""
    ids = tok("\n\n".join(docs), add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def encode_documents(tok, docs, seqlen, batch_size, pad_to_seqlen=False):
    """Encoder inputs for `docs`: [(input_ids, attention_mask)] per batch of `batch_size`."""
    out = []
    for i in range(0, len(docs), batch_size):
        enc = tok(docs[i:i + batch_size], truncation=True, max_length=seqlen,
                  padding="max_length" if pad_to_seqlen else "longest", return_tensors="pt")
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out


def masked_rows(x, mask):
    """The rows of x [B, T, K] that are real tokens: x[mask] [n, K] (all rows without a mask)."""
    if mask is None:
        return x.reshape(-1, x.shape[-1])
    return x[mask.to(x.device).bool()]


def quantize_checkpoint(folder, method=None, text=None, samples=None, seqlen=SEQLEN, seed=0,
                        device="cpu", progress=None, on_block=None, random_tokens=False,
                        calibration=None, sequential=True, hessians=None, on_warning=None):
    """Quantize every nn.Linear in the blocks of the checkpoint at `folder`; returns a `QModel`
    whose layer names are the checkpoint's module names (e.g. `model.layers.0.mlp.down_proj`).

    Calibration: `calibration` (a `Calibration`), or one built from `text`, `samples`, `seqlen`,
    `seed` and `random_tokens`; the default is the shipped text. `sequential` (GPTQ's order)
    calibrates each block on the outputs of the blocks before it with their quantized weights;
    without it every layer sees the fp32 model's activations. `hessians`, when a dict, receives
    each layer's H [K, K] (for tests). `progress(n)` gets the number of columns done;
    `on_block(i, n_blocks)` is called per block. A LLaMA-family model's shape and norms are
    recorded (`model_shape`); when its config has something the shape cannot express (see
    `ModelShape.from_hf_config`), `on_warning(message)` (default: `warnings.warn`) says so and the
    file records the linear layers only. Raises `UserError` for a missing or unreadable folder,
    config, weights, tokenizer or text."""
    from quant.gptq import Hessian
    from quant.layer import QModel
    from quant.method import Method, quantize_layer
    method = method or Method()
    cal = calibration or Calibration(text, samples, seqlen, seed, random_tokens)
    folder = Path(folder)
    config = load_config(folder)
    shape = model_shape(folder, config, on_warning)
    n_blocks = int(config.num_hidden_layers)
    weights = _Weights(folder)
    torch.manual_seed(cal.seed)
    model, blocks_name, template, prefix = _one_block_model(folder, config, weights)
    model.to(device)
    batches = calibration_batches(folder, config, cal)
    store = _catch_inputs(model, blocks_name, template, batches, device)
    del model

    layers = {}
    norms = {} if shape is not None else None
    for i in range(n_blocks):
        if on_block is not None:
            on_block(i, n_blocks)
        bprefix = f"{prefix}{blocks_name}.{i}."
        _load_block(template, weights, bprefix, folder, device)
        if norms is not None:
            norms.update({f"{bprefix}{r}": _norm(weights, f"{bprefix}{r}", folder)
                          for r in NORM_ROLES})
        linears = [(n, m) for n, m in template.named_modules() if isinstance(m, torch.nn.Linear)]
        hess = {n: Hessian(m.in_features, device) for n, m in linears}
        current = {}
        hooks = [m.register_forward_pre_hook(
            lambda mod, inp, acc=hess[n], cur=current:
            acc.add(masked_rows(inp[0].detach(), cur["m"])))
            for n, m in linears]
        fp32_out = []
        with torch.no_grad():
            for hs, args, kwargs, mask in store:
                current["m"] = mask
                fp32_out.append(_hidden(template(hs, *args, **kwargs)))
        for h in hooks:
            h.remove()
        for n, m in linears:
            name = f"{bprefix}{n}"
            if hessians is not None:
                hessians[name] = hess[n].H
            q = quantize_layer(method, m.weight.data.float(), hess[n].H, name, device, progress)
            layers[name] = q
            m.weight.data = q.dequant().to(m.weight.device, m.weight.dtype)
        del hess
        with torch.no_grad():
            for j, (hs, args, kwargs, mask) in enumerate(store):
                out = _hidden(template(hs, *args, **kwargs)) if sequential else fp32_out[j]
                store[j] = (out, args, kwargs, mask)
        del fp32_out
    meta = method.metadata()
    meta["settings"] = {**meta["settings"], "seed": cal.seed,
                        "calibration": {**cal.metadata(model_kind(config), batches),
                                        "sequential": sequential},
                        "blocks": n_blocks}
    if norms is not None:
        norms[FINAL_NORM] = _norm(weights, f"{prefix}{FINAL_NORM}", folder)
    return QModel(model=folder.resolve().name, quantizer=meta, layers=layers, shape=shape,
                  norms=norms)


def model_shape(folder, config, on_warning=None):
    """The `ModelShape` of a LLaMA-family checkpoint from its config, or None: for another
    `model_type`, or (after `on_warning(message)`, default `warnings.warn`) for a LLaMA-family
    config that `ModelShape.from_hf_config` rejects."""
    if config.model_type not in HF_TYPES:
        return None
    try:
        return ModelShape.from_hf_config(config.to_dict(), Path(folder) / "config.json")
    except UserError as e:
        message = f"{e}; the .q file will not record the model's shape (linear layers only)"
        (on_warning or warnings.warn)(message)
        return None


def _norm(weights, module, folder):
    """The RMSNorm weight of `module` ([hidden] float32 numpy)."""
    key = f"{module}.weight"
    if key not in weights.where:
        raise UserError(f"{folder}: checkpoint must hold `{key}`, not lack it")
    return weights.get(key).float().numpy()


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def load_config(folder):
    """The transformers config of a checkpoint folder (UserError if missing or unreadable)."""
    from transformers import AutoConfig
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: checkpoint folder must contain config.json, not "
                        f"{'a missing folder' if not folder.is_dir() else 'lack it'}")
    try:
        return AutoConfig.from_pretrained(str(folder))
    except Exception as e:   # transformers raises ValueError, OSError, KeyError...
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{folder / 'config.json'}: must be a transformers config, not "
                        f"({msg})") from None


def _one_block_model(folder, config, weights):
    """The base model built with one block, its weights outside the blocks loaded: (model,
    blocks' qualified name, the one block, the checkpoint's key prefix)."""
    from transformers import AutoModel
    cfg1 = copy.deepcopy(config)
    cfg1.num_hidden_layers = 1
    model = AutoModel.from_config(cfg1).float().eval()
    blocks_name, blocks = _blocks(model)
    model_keys = set(model.state_dict())
    prefix = _prefix(list(weights.keys()), model_keys, getattr(model, "base_model_prefix", ""))
    outside = {k: weights.get(prefix + k).float() for k in model_keys
               if not k.startswith(blocks_name + ".") and prefix + k in weights.where}
    missing = [k for k, _ in model.named_parameters()
               if not k.startswith(blocks_name + ".") and k not in outside]
    if missing:
        raise UserError(f"{folder}: checkpoint must hold `{prefix}{missing[0]}`, not lack it")
    model.load_state_dict(outside, strict=False)
    return model, blocks_name, blocks[0], prefix


def _catch_inputs(model, blocks_name, template, batches, device):
    """The first block's inputs for every batch: [(hidden, args, kwargs, mask)]."""
    blocks = model.get_submodule(blocks_name)
    caught = []
    blocks[0] = _Catcher(caught)
    store = []
    with torch.no_grad():
        for ids, mask in batches:
            kw = {} if mask is None else {"attention_mask": mask.to(device)}
            try:
                model(input_ids=ids.to(device), use_cache=False, **kw)
            except _Stop:
                pass
            hs, args, kwargs = caught.pop()
            store.append((hs, args, kwargs, mask))
    blocks[0] = template
    return store


def _load_block(template, weights, bprefix, folder, device):
    state = {}
    params = dict(template.named_parameters())
    for k in template.state_dict():
        if bprefix + k not in weights.where:
            if k in params:
                raise UserError(f"{folder}: checkpoint must hold `{bprefix}{k}`, not lack it")
            continue
        state[k] = weights.get(bprefix + k).float()
    template.load_state_dict(state, strict=False)
    template.to(device)


def linear_columns(folder):
    """Total input columns of the linear layers in all blocks (for progress bars), or None."""
    try:
        w = _Weights(folder)
    except UserError:
        return None
    total = 0
    for k in w.keys():
        if k.endswith(".weight") and (".layers." in k or ".layer." in k):
            shape = w.handles[w.where[k]].get_slice(k).get_shape()
            if len(shape) == 2:
                total += int(shape[1])
    return total or None
