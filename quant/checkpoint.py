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
the block's outputs are computed for the next one. Works for models whose blocks sit in one
`nn.ModuleList` (the LLaMA family: `layers`; BERT-style encoders: `encoder.layer`).
"""

import copy
import json
from pathlib import Path

import torch

from bitlut.errors import UserError

SAMPLES = 16       # calibration sequences (GPTQ uses 128 x 2048 tokens; CPU-sized default)
SEQLEN = 256


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


def calibration_ids(folder, vocab_size, text=None, samples=SAMPLES, seqlen=SEQLEN, seed=0):
    """[samples, seqlen] token ids: segments of the tokenized `text` file at seeded random offsets
    (as GPTQ samples C4), or seeded uniform random tokens when no text is given."""
    g = torch.Generator().manual_seed(seed)
    if text is None:
        return torch.randint(0, vocab_size, (samples, seqlen), generator=g)
    text_path = Path(text)
    if not text_path.is_file():
        raise UserError(f"{text}: calibration text file must exist, not missing")
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:   # transformers raises many types for a missing tokenizer
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{folder}: checkpoint must include a tokenizer for --text, not "
                        f"({msg})") from None
    ids = torch.tensor(tok(text_path.read_text(encoding="utf-8"))["input_ids"], dtype=torch.long)
    if ids.numel() < 2:
        raise UserError(f"{text}: calibration text must have at least 2 tokens, "
                        f"not {ids.numel()}")
    seqlen = min(seqlen, ids.numel())
    starts = torch.randint(0, ids.numel() - seqlen + 1, (samples,), generator=g)
    return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])


def quantize_checkpoint(folder, method=None, text=None, samples=SAMPLES, seqlen=SEQLEN, seed=0,
                        device="cpu", progress=None, on_block=None):
    """Quantize every nn.Linear in the blocks of the checkpoint at `folder`; returns a `QModel`
    whose layer names are the checkpoint's module names (e.g. `model.layers.0.mlp.down_proj`).

    `progress(n)` gets the number of columns done; `on_block(i, n_blocks)` is called per block.
    Raises `UserError` for a missing or unreadable folder, config, weights or tokenizer."""
    from transformers import AutoConfig, AutoModel

    from quant.gptq import Hessian
    from quant.layer import QModel
    from quant.method import Method, quantize_layer
    method = method or Method()
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: checkpoint folder must contain config.json, not "
                        f"{'a missing folder' if not folder.is_dir() else 'lack it'}")
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as e:   # transformers raises ValueError, OSError, KeyError...
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"{folder / 'config.json'}: must be a transformers config, not "
                        f"({msg})") from None
    n_blocks = int(config.num_hidden_layers)
    weights = _Weights(folder)
    cfg1 = copy.deepcopy(config)
    cfg1.num_hidden_layers = 1
    torch.manual_seed(seed)
    model = AutoModel.from_config(cfg1).float().eval()
    blocks_name, blocks = _blocks(model)
    template = blocks[0]
    model_keys = set(model.state_dict())
    prefix = _prefix(list(weights.keys()), model_keys, getattr(model, "base_model_prefix", ""))
    outside = {k: weights.get(prefix + k).float() for k in model_keys
               if not k.startswith(blocks_name + ".") and prefix + k in weights.where}
    missing = [k for k, _ in model.named_parameters()
               if not k.startswith(blocks_name + ".") and k not in outside]
    if missing:
        raise UserError(f"{folder}: checkpoint must hold `{prefix}{missing[0]}`, not lack it")
    model.load_state_dict(outside, strict=False)
    model.to(device)

    vocab = int(config.vocab_size)
    ids = calibration_ids(folder, vocab, text, samples, seqlen, seed).to(device)
    store = []
    blocks[0] = _Catcher(store)
    with torch.no_grad():
        for row in ids:
            try:
                model(input_ids=row[None], use_cache=False)
            except _Stop:
                pass
    blocks[0] = template
    del outside

    layers = {}
    for i in range(n_blocks):
        if on_block is not None:
            on_block(i, n_blocks)
        bprefix = f"{prefix}{blocks_name}.{i}."
        state = {}
        for k in template.state_dict():
            if bprefix + k not in weights.where:
                if k in dict(template.named_parameters()):
                    raise UserError(f"{folder}: checkpoint must hold `{bprefix}{k}`, not lack it")
                continue
            state[k] = weights.get(bprefix + k).float()
        template.load_state_dict(state, strict=False)
        template.to(device)
        linears = [(n, m) for n, m in template.named_modules() if isinstance(m, torch.nn.Linear)]
        hess = {n: Hessian(m.in_features, device) for n, m in linears}
        hooks = [m.register_forward_pre_hook(
            lambda mod, inp, acc=hess[n]: acc.add(inp[0].detach())) for n, m in linears]
        with torch.no_grad():
            for hs, args, kwargs in store:
                template(hs, *args, **kwargs)
        for h in hooks:
            h.remove()
        for n, m in linears:
            name = f"{bprefix}{n}"
            q = quantize_layer(method, m.weight.data.float(), hess[n].H, name, device, progress)
            layers[name] = q
            m.weight.data = q.dequant().to(m.weight.device, m.weight.dtype)
        del hess
        with torch.no_grad():
            for j, (hs, args, kwargs) in enumerate(store):
                out = template(hs, *args, **kwargs)
                store[j] = (out[0] if isinstance(out, tuple) else out, args, kwargs)
    meta = method.metadata()
    meta["settings"] = {**meta["settings"], "seed": seed, "calibration": {
        "text": str(text) if text else None, "samples": int(ids.shape[0]),
        "seqlen": int(ids.shape[1])}}
    return QModel(model=folder.resolve().name, quantizer=meta, layers=layers)


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
