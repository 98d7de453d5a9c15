"""The model's shape: what a LLaMA-family decoder block needs besides its linear layers (heads, KV
heads, head dim, RoPE, RMSNorm epsilon), recorded in the `.q` file's metadata as `model_shape`
(docs/qformat.md, "Model shape"), and the names of a block's layers and norms in a `QModel`.

Ref: Touvron et al., LLaMA (arXiv 2302.13971) §2.2 (RMSNorm, SwiGLU, RoPE); Ainslie et al., GQA
(arXiv 2305.13245) §2 (`kv_heads` groups of `heads / kv_heads` query heads); the RoPE scalings are
Hugging Face transformers' `modeling_rope_utils` ("linear": positions divided by `factor`;
"llama3": Llama 3.1's per-frequency blend).

Cheap to import (no torch): `bitlut inspect` and the CLI describe shapes with it.
"""

import math
import re
from dataclasses import dataclass, fields

from bitlut.errors import UserError

FAMILY = "llama"
HF_TYPES = ("llama", "mistral")         # Hugging Face `model_type`s of the LLaMA family
# The .q file's bound on a dimension (quant.qformat.DIM_MAX, which a test compares): shapes index
# int32 tensors. Restated so that this module imports without torch.
DIM_MAX = (1 << 31) - 1
# RoPE scaling types and the keys each needs besides `rope_type` (transformers' names)
ROPE_SCALING = {"linear": ("factor",),
                "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                           "original_max_position_embeddings")}

# A block's linear layers in execution order, and their module paths inside a Hugging Face
# LLaMA block (`model.layers.<i>.<path>`); a synthetic one-block file names them by role alone.
BLOCK_ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ROLE_MODULES = {r: ("self_attn." if r in BLOCK_ROLES[:4] else "mlp.") + r for r in BLOCK_ROLES}
# A block's RMSNorms (named like the linear layers: `<block prefix><role>`) and the final norm.
NORM_ROLES = ("input_layernorm", "post_attention_layernorm")
FINAL_NORM = "norm"
# `<anything>.layers.<i>.<module>`: a checkpoint's block prefix (quant.checkpoint names layers by
# module, e.g. `model.layers.3.mlp.gate_proj`); `<i>` in ASCII digits without leading zeros, so
# that each block has one name
_IN_BLOCK = re.compile(r"((?:.+\.)?layers\.(0|[1-9][0-9]*)\.)(.+)")


def linear_shapes(hidden, intermediate, q_dim, kv_dim):
    """role -> (N, K) = (out, in features) of a LLaMA block's linear layers (`BLOCK_ROLES`)."""
    h, i = hidden, intermediate
    return {"q_proj": (q_dim, h), "k_proj": (kv_dim, h), "v_proj": (kv_dim, h),
            "o_proj": (h, q_dim), "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}


def _short(value):
    """`repr(value)`, cut to fit one line of an error message (as quant.qformat's)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MISSING = object()


class _Checker:
    """Field checks that raise `error` "<where>: `<label>` must be <rule>, not <value>"."""

    def __init__(self, where, label, error):
        self.where, self.label, self.error = where, label, error

    def fail(self, key, rule, value, shown=None):
        if shown is None:
            shown = "missing" if value is _MISSING else _short(value)
        raise self.error(f"{self.where}: `{self.label(key)}` must be {rule}, not {shown}")

    def integer(self, key, value):
        if type(value) is not int or not 1 <= value <= DIM_MAX:
            self.fail(key, f"an integer from 1 to {DIM_MAX}", value)
        return value

    def positive(self, key, value):
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            self.fail(key, "a finite number > 0", value)
        return float(value)


def _check(values, where, label, error):
    """The fields of a `ModelShape` from `values` (field -> value, `_MISSING` if absent), checked
    and normalised (floats as float, `rope_scaling` copied); raises `error` naming the field with
    `label(field)`."""
    c = _Checker(where, label, error)
    v = dict(values)
    if v["family"] != FAMILY:
        c.fail("family", f"{FAMILY!r}", v["family"])
    for key in ("hidden", "intermediate", "heads", "kv_heads", "head_dim", "vocab", "blocks"):
        c.integer(key, v[key])
    if v["heads"] % v["kv_heads"]:
        c.fail("kv_heads", f"a divisor of `{label('heads')}` = {v['heads']}", v["kv_heads"])
    if v["head_dim"] % 2:
        c.fail("head_dim", "even (RoPE rotates pairs of dimensions)", v["head_dim"])
    if v["heads"] * v["head_dim"] > DIM_MAX:
        c.fail("head_dim", f"at most {DIM_MAX // v['heads']} (`{label('heads')}` x head dim, "
                           f"the query width, must fit {DIM_MAX})", v["head_dim"])
    v["rope_theta"] = c.positive("rope_theta", v["rope_theta"])
    v["rope_scaling"] = _check_rope_scaling(c, v["rope_scaling"])
    v["norm_eps"] = c.positive("norm_eps", v["norm_eps"])
    if type(v["tie_embeddings"]) is not bool:
        c.fail("tie_embeddings", "true or false", v["tie_embeddings"])
    return v


def _check_rope_scaling(c, rs):
    if rs is None:
        return None
    if not isinstance(rs, dict):
        c.fail("rope_scaling", "null or an object with a `rope_type`", rs)
    kind = rs.get("rope_type", _MISSING)
    if not isinstance(kind, str) or kind not in ROPE_SCALING:
        c.fail("rope_scaling.rope_type", f"one of {list(ROPE_SCALING)}", kind)
    need = ROPE_SCALING[kind]
    extra = sorted(set(rs) - {"rope_type", *need}, key=str)
    if extra:
        c.fail("rope_scaling", f"an object of rope_type, {', '.join(need)} for {kind!r}",
               rs, shown=f"also {_short(extra[0])}")
    out = {"rope_type": kind}
    for key in need:
        value = rs.get(key, _MISSING)
        if key == "original_max_position_embeddings":
            out[key] = c.integer(f"rope_scaling.{key}", value)
        else:
            out[key] = c.positive(f"rope_scaling.{key}", value)
    if kind == "llama3" and out["high_freq_factor"] <= out["low_freq_factor"]:
        # the blend divides by high - low (transformers' _compute_llama3_parameters)
        c.fail("rope_scaling.high_freq_factor",
               f"greater than low_freq_factor = {out['low_freq_factor']}",
               out["high_freq_factor"])
    return out


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The shape of a LLaMA-family decoder-only model, as its blocks need it.

    Members:
        family: "llama" (LLaMA, Mistral, SmolLM2, TinyLlama: RMSNorm, RoPE, SwiGLU, GQA).
        hidden: the residual stream's width.
        intermediate: the MLP's width (gate_proj, up_proj outputs).
        heads, kv_heads: query heads and key/value heads (`kv_heads` divides `heads`).
        head_dim: each head's width, even (RoPE rotates pairs); `heads * head_dim` need not be
            `hidden`.
        rope_theta: RoPE's base.
        rope_scaling: None, or {"rope_type": "linear", "factor"} or {"rope_type": "llama3",
            "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
            (Hugging Face's keys).
        norm_eps: RMSNorm's epsilon.
        vocab: the vocabulary's size.
        blocks: the model's decoder blocks (a `.q` file may hold fewer).
        tie_embeddings: the LM head is the embedding matrix.

    Construction checks every field (`ValueError`); `from_json` and `from_hf_config` check input
    from files and raise `UserError`.
    """

    family: str = FAMILY
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    rope_scaling: dict | None = None
    norm_eps: float
    vocab: int
    blocks: int
    tie_embeddings: bool = False

    def __post_init__(self):
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in _check(values, "ModelShape", str, ValueError).items():
            object.__setattr__(self, key, value)

    @property
    def gqa_group(self):
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    @property
    def q_dim(self):
        """Width of the queries (q_proj's outputs, o_proj's inputs)."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self):
        """Width of the keys and of the values (k_proj's and v_proj's outputs)."""
        return self.kv_heads * self.head_dim

    @property
    def layer_shapes(self):
        """role -> (N, K) = (out, in features) of each of a block's linear layers."""
        return linear_shapes(self.hidden, self.intermediate, self.q_dim, self.kv_dim)

    def as_json(self):
        """The fields as a plain JSON-ready dict (the `.q` file's `model_shape`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["rope_scaling"] = None if self.rope_scaling is None else dict(self.rope_scaling)
        return out

    @classmethod
    def from_json(cls, d, where):
        """The shape recorded as `d` (`as_json`'s form) in `where` (a file, for messages).
        Raises `UserError` "<where>: `model_shape.<field>` must be <rule>, not <value>" for a
        missing, unknown or invalid field."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: `model_shape` must be a JSON object, not {_short(d)}")
        names = [f.name for f in fields(cls)]
        extra = sorted(set(d) - set(names), key=str)
        if extra:
            raise UserError(f"{where}: `model_shape` keys must be {', '.join(names)}, not also "
                            f"{_short(extra[0])}")
        values = {k: d.get(k, _MISSING) for k in names}
        return cls(**_check(values, where, lambda k: f"model_shape.{k}", UserError))

    @classmethod
    def from_hf_config(cls, config, where):
        """The shape of a Hugging Face LLaMA-family model from its config.json dict (or a
        transformers config's `to_dict()`; both the `rope_theta`/`rope_scaling` keys and
        transformers 5's `rope_parameters` are read). Keys a config may leave out take
        `LlamaConfig`'s defaults. Raises `UserError` naming the config key for another
        `model_type`, a missing or invalid value, biases, or an activation other than SiLU."""
        if not isinstance(config, dict):
            raise UserError(f"{where}: config must be a JSON object, not {_short(config)}")
        mtype = config.get("model_type", _MISSING)
        if mtype not in HF_TYPES:
            shown = "missing" if mtype is _MISSING else _short(mtype)
            raise UserError(f"{where}: architecture must be LLaMA-family "
                            f"({', '.join(HF_TYPES)}), not {shown}")
        act = config.get("hidden_act", "silu")
        if act not in ("silu", "swish"):        # transformers' two names for x * sigmoid(x)
            raise UserError(f"{where}: `hidden_act` must be 'silu' (LLaMA's SwiGLU MLP), "
                            f"not {_short(act)}")
        for key in ("attention_bias", "mlp_bias"):
            if config.get(key, False) is not False:
                raise UserError(f"{where}: `{key}` must be false (a .q file holds no biases), "
                                f"not {_short(config[key])}")
        get = config.get
        hidden, heads = get("hidden_size", _MISSING), get("num_attention_heads", _MISSING)
        head_dim = get("head_dim")
        if head_dim is None:
            head_dim = _MISSING
            if type(hidden) is int and type(heads) is int and hidden > 0 and heads > 0:
                if hidden % heads:
                    raise UserError(f"{where}: `hidden_size` must be a multiple of "
                                    f"`num_attention_heads` = {heads} when the config has no "
                                    f"`head_dim`, not {hidden}")
                head_dim = hidden // heads
        theta, scaling, rope_key = _hf_rope(config)
        kv_heads = get("num_key_value_heads")
        values = {"family": FAMILY, "hidden": hidden,
                  "intermediate": get("intermediate_size", _MISSING), "heads": heads,
                  "kv_heads": heads if kv_heads is None else kv_heads, "head_dim": head_dim,
                  "rope_theta": theta, "rope_scaling": scaling,
                  "norm_eps": get("rms_norm_eps", 1e-6), "vocab": get("vocab_size", _MISSING),
                  "blocks": get("num_hidden_layers", _MISSING),
                  "tie_embeddings": get("tie_word_embeddings", False)}
        hf = {**HF_KEYS, "rope_theta": f"{rope_key}.rope_theta" if rope_key else "rope_theta"}

        def label(key):
            head, _, rest = key.partition(".")
            if head == "rope_scaling":
                return ".".join(filter(None, (rope_key or "rope_scaling", rest)))
            return hf[key]
        return cls(**_check(values, where, label, UserError))

    def describe(self):
        """One line for `bitlut inspect`."""
        rope = f"RoPE theta {self.rope_theta:g}"
        if self.rope_scaling:
            rs = self.rope_scaling
            rope += f" ({rs['rope_type']} x{rs['factor']:g})"
        return (f"{self.family}, hidden {self.hidden}, heads {self.heads} (KV {self.kv_heads}), "
                f"head dim {self.head_dim}, intermediate {self.intermediate}, {rope}, "
                f"norm eps {self.norm_eps:g}, vocab {self.vocab}, {self.blocks} blocks, "
                f"{'tied' if self.tie_embeddings else 'untied'} embeddings")


# ModelShape field -> the Hugging Face config key it comes from (for messages)
HF_KEYS = {"family": "model_type", "hidden": "hidden_size", "intermediate": "intermediate_size",
           "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
           "head_dim": "head_dim", "rope_theta": "rope_theta", "rope_scaling": "rope_scaling",
           "norm_eps": "rms_norm_eps", "vocab": "vocab_size", "blocks": "num_hidden_layers",
           "tie_embeddings": "tie_word_embeddings"}


def _hf_rope(config):
    """(rope_theta, rope_scaling in `ModelShape`'s form or None, the config key holding the
    scaling: "rope_parameters" (transformers 5) or "rope_scaling" (config.json before it), or
    None when neither is set)."""
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        key, rs = "rope_parameters", dict(params)
        theta = rs.pop("rope_theta", config.get("rope_theta", 10000.0))
    else:
        key, rs = "rope_scaling", config.get("rope_scaling")
        theta = config.get("rope_theta", 10000.0)
        if rs is None:
            return theta, None, None
        if not isinstance(rs, dict):
            return theta, rs, key           # the check names it
        rs = dict(rs)
    if "type" in rs:                        # config.json before transformers 4.45
        kind = rs.pop("type")
        rs.setdefault("rope_type", kind)
    if rs.get("rope_type", "default") == "default" and set(rs) <= {"rope_type"}:
        return theta, None, key
    return theta, rs, key


def require_shape(qmodel, path, what):
    """`qmodel.shape`, or `UserError` saying that `what` (a feature, e.g. "bitlut run --block")
    needs it and that the `.q` file at `path` predates it. The linear layers of such a file still
    run: only the block features call this."""
    if qmodel.shape is None:
        raise UserError(f"{path}: {what} needs the model's shape (model_shape: heads, KV heads, "
                        "head dim, RoPE, norms), which this .q file does not record; "
                        "re-quantize it with this version of bitlut")
    return qmodel.shape


# ---- names of a block's layers and norms ------------------------------------------------------

def role_of(name):
    """(block, role) of a linear layer's name: (None, role) for a synthetic one-block file's
    `q_proj` ... `down_proj`, (i, role) for a checkpoint's `<prefix>layers.<i>.self_attn.q_proj`
    ... `<prefix>layers.<i>.mlp.down_proj`; None for any other name."""
    return _parse(name, BLOCK_ROLES, ROLE_MODULES)


def norm_of(name):
    """(block, role) of a norm's name in `QModel.norms`, as `role_of` does for layers (roles
    `NORM_ROLES`); (None, "norm") for the final norm; None for any other name."""
    if name == FINAL_NORM:
        return None, FINAL_NORM
    return _parse(name, NORM_ROLES, {r: r for r in NORM_ROLES})


def _parse(name, roles, modules):
    if name in roles:
        return None, name
    m = _IN_BLOCK.fullmatch(name)
    by_module = {path: role for role, path in modules.items()}
    if m and m.group(3) in by_module:
        return int(m.group(2)), by_module[m.group(3)]
    return None


def _where(qmodel, where):
    return where if where is not None else f"model `{qmodel.model}`"


def _find(names, block, role, parse, kind, where):
    """The one name in `names` that `parse` reads as block `block`'s `role`."""
    if type(block) is not int or block < 0:
        raise ValueError(f"block must be an integer >= 0, not {block!r}")
    found = {}                          # name -> its block (None: named by role alone)
    for name in names:
        parsed = parse(name)
        if parsed is not None and parsed[1] == role:
            found[name] = parsed[0]
    if block > 0 and None in found.values():
        raise UserError(f"{where}: block must be 0 (the file holds one block, its {kind}s named "
                        f"without a block number), not {block}")
    hits = [n for n, b in found.items() if b == block or (b is None and block == 0)]
    if not hits:
        raise UserError(f"{where}: block {block}'s {kind} `{role}` must be in the file, "
                        "not missing")
    if len(hits) > 1:
        raise UserError(f"{where}: block {block}'s {kind} `{role}` must be one {kind}, not "
                        f"{len(hits)} ({', '.join(hits[:2])})")
    return hits[0]


def _check_block(qmodel, block, where):
    shape = qmodel.shape
    if shape is not None and type(block) is int and not 0 <= block < shape.blocks:
        raise UserError(f"{where}: block must be in 0..{shape.blocks - 1} (the model's "
                        f"`model_shape.blocks` = {shape.blocks}), not {block}")


def block_layers(qmodel, block, where=None):
    """role -> `QLayer` of block `block`'s linear layers (`BLOCK_ROLES` order), named either by
    role alone (a synthetic one-block file: `block` must be 0) or as a checkpoint's modules
    (`model.layers.<block>.self_attn.q_proj`). Raises `UserError` naming `where` (default: the
    model's name) and the missing role."""
    where = _where(qmodel, where)
    _check_block(qmodel, block, where)
    return {role: qmodel.layers[_find(qmodel.layers, block, role, role_of, "layer", where)]
            for role in BLOCK_ROLES}


def norm_weights(qmodel, block, where=None):
    """(input_layernorm, post_attention_layernorm) weights of block `block`, each [hidden]
    float32. Raises `UserError` (`require_shape`'s) for a file without the model's shape, or
    naming the missing norm."""
    where = _where(qmodel, where)
    require_shape(qmodel, where, f"block {block}'s RMSNorm")
    _check_block(qmodel, block, where)
    norms = qmodel.norms or {}
    return tuple(norms[_find(norms, block, role, norm_of, "norm", where)] for role in NORM_ROLES)


def final_norm(qmodel, where=None):
    """The final RMSNorm's weight (`norm`, before the LM head), [hidden] float32."""
    where = _where(qmodel, where)
    require_shape(qmodel, where, "the final RMSNorm")
    norms = qmodel.norms or {}
    if FINAL_NORM not in norms:
        raise UserError(f"{where}: the final norm `{FINAL_NORM}` must be in the file, "
                        "not missing")
    return norms[FINAL_NORM]
