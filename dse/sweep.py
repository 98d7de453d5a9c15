"""The sweep file: a base config, axes over its fields, workloads, objectives and constraints.

    name: llama7b-block             # names the store (build/dse/<name>/) and report folders
    base: lut                       # an arch config (path, or a shipped name)
    workloads:                      # every point runs every workload
      - {name: claq, model: llama7b.q, tokens: {decode: 1, prefill: 2048}, blocks: 32,
         ctx: [1024, 4096], kv: [fp16, int4]}     # optional: decode as the whole block
    axes:                           # the full product of these...
      pe.cols: [32, 64, 128]
      dram.gbps: [25.6, 51.2]
    zip:                            # ...times each group of paired axes, stepped together
      - {pe.kind: [lut, bitserial, mac], pe.group: [4, 4, 1]}
    exclude:                        # partial points to leave out (a list means any of)
      - {pe.kind: mac, pe.cols: [32, 128]}
    objectives: {decode_tok_s: max, area_mtr: min}
    constraints: {area_mtr: "<= 60"}
    ladder: {epsilon: 0.1, max_sim_points: 40}

Loading checks every key and value and raises `UserError` with one line naming the file and the
field; a point whose config breaks a rule of `arch.config.validate` (or that cannot run a
workload, found later) is not an error but an invalid point kept with its one-line reason.
A workload's `tokens` are per phase; `blocks` is how many copies of the `.q` file's layers make
the whole model (LLaMA-7B: one decoder block x 32), so per-block figures are the file's layers
and per-model figures multiply by `blocks` (see `dse.evaluate`).

`ctx` (decode context, tokens: one or a list) and `kv` (KV-cache format, `arch.kv.KV_FORMATS`:
one or a list; fp16 when left out) make the one-token phase the whole decoder block after `ctx`
cached tokens, attention and KV cache included (`dse.attention`); a workload with lists is one
workload per (ctx, kv), named `<name>-ctx<1k|4k|...>-<kv>`, each with its own front. They are
workload keys, not axes: a context is what runs, not a design choice, and fronts that mixed
contexts would only rank the shortest.
"""

import dataclasses
import itertools
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from arch import config as arch_config
from arch.kv import KV_FORMATS
from bitlut.errors import UserError
from dse import keys

TOP_KEYS = ("name", "base", "workloads", "axes", "zip", "exclude", "objectives",
            "constraints", "ladder")
WORKLOAD_KEYS = ("name", "model", "tokens", "blocks", "ctx", "kv")
CTX_MAX = 1 << 20               # tokens: far beyond any scratchpad's reach (`dse.attention`)
LADDER_DEFAULTS = {"epsilon": 0.10, "max_sim_points": 40, "max_rounds": 4, "batch": 16,
                   "sim": True}
CONSTRAINT = re.compile(r"^\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SWEEP_DIR = Path(__file__).parent / "sweeps"


def config_fields(cls=arch_config.ArchConfig, prefix=""):
    """{dotted path: annotation} of every leaf field of the config (`pe.cols`: int, ...)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in ("name", "source"):
            continue
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(config_fields(tp, path + "."))
        else:
            out[path] = tp
    return out


FIELDS = config_fields()


@dataclass(frozen=True)
class Workload:
    """A `.q` file with its phases' token counts and the blocks that make the whole model."""
    name: str
    model: str                # path as written in the sweep file
    path: Path                # where it was found
    tokens: dict              # phase -> token count M
    blocks: int
    checksum: str             # the .q file's recorded checksum
    ctx: int | None = None    # decode context (tokens cached before the decoded one)
    kv: str | None = None     # KV-cache format (with ctx)
    base: str = ""            # the name as the sweep file gives it (before the ctx/kv suffix)

    @property
    def identity(self):
        """What the key hashes: the content, the token counts, the block count and, for a
        whole-block workload, the context and KV format."""
        ident = {"checksum": self.checksum, "tokens": self.tokens, "blocks": self.blocks}
        if self.ctx is not None:
            ident.update(ctx=self.ctx, kv=self.kv)
        return ident


@dataclass(frozen=True)
class Point:
    """One grid point on one workload. `coords` index each dimension (axes, then zip groups);
    `config` is None for an invalid point, whose `invalid` says why."""
    index: int
    coords: tuple
    values: dict              # swept path -> value
    workload: Workload
    config: object
    invalid: str | None
    key: str

    @property
    def label(self):
        return ", ".join(f"{p}={v}" for p, v in self.values.items())


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    base: str
    base_raw: dict
    workloads: tuple
    dims: tuple               # ((path, ...), [(value, ...), ...]) per dimension
    exclude: tuple            # ({path: (allowed values, ...)}, ...)
    objectives: dict          # metric -> "max" | "min"
    constraints: tuple        # ((metric, op, bound), ...)
    ladder: dict

    @property
    def phases(self):
        return tuple(self.workloads[0].tokens)

    @property
    def swept(self):
        return tuple(p for paths, _ in self.dims for p in paths)

    def grid(self):
        """(coords, values) of every grid point not excluded, in file order."""
        for coords in itertools.product(*(range(len(rows)) for _, rows in self.dims)):
            values = {}
            for (paths, rows), i in zip(self.dims, coords, strict=True):
                values.update(zip(paths, rows[i], strict=True))
            if not any(all(values[p] in allowed for p, allowed in ex.items())
                       for ex in self.exclude):
                yield coords, values

    def points(self, model_version):
        """Every point (grid x workloads), built and keyed; invalid ones kept with a reason."""
        out = []
        src = f"{self.name} point"
        for coords, values in self.grid():
            raw = _with_overrides(self.base_raw, values)
            try:
                cfg = arch_config.from_dict(raw, source=src)
                invalid = None
                ident = {"config": point_config(cfg)}
            except UserError as e:
                cfg, invalid = None, str(e).removeprefix(f"{src}: ")
                ident = {"invalid": {"base": self.base_raw, "values": values}}
            for wl in self.workloads:
                k = point_key(ident, wl, model_version)
                out.append(Point(len(out), coords, values, wl, cfg, invalid, k))
        return out


def point_config(cfg):
    """The validated config as a plain mapping, without its name and source (labels only)."""
    d = dataclasses.asdict(cfg)
    d.pop("name", None)
    d.pop("source", None)
    return d


def point_key(ident, workload, model_version):
    """The store key: the validated point, the workload's content and the model version."""
    return keys.key({"point": ident, "workload": workload.identity, "model": model_version})


def _with_overrides(base_raw, values):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in base_raw.items()}
    for path, value in values.items():
        *sections, leaf = path.split(".")
        d = raw
        for s in sections:
            d = d.setdefault(s, {})
        d[leaf] = list(value) if isinstance(value, tuple) else value
    return raw


# -- loading ------------------------------------------------------------------------------------
def _fail(src, path, rule, value):
    raise UserError(f"{src}: `{path}` must be {rule}, not {value!r}")


def _mapping(src, path, value):
    if not isinstance(value, dict):
        _fail(src, path, "a mapping", value)
    return value


def _list(src, path, value):
    if not isinstance(value, list) or not value:
        _fail(src, path, "a non-empty list", value)
    return value


def _field_value(src, where, field, value):
    """A swept value checked against the config field's type: integral floats are accepted for
    integer fields (64.0 is 64), integers for float fields; tuples are lists of integers."""
    tp = FIELDS[field]
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:                                  # tuple[int, ...]
        ok = (isinstance(value, list) and value
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
        value = tuple(value) if ok else value
    if not ok:
        rule = {bool: "true or false", int: "an integer", float: "a number",
                str: "a string"}.get(tp, "a non-empty list of integers")
        _fail(src, where, f"{rule} (the type of `{field}`)", value)
    return value


def _field(src, where, path):
    if path not in FIELDS:
        raise UserError(f"{src}: `{where}` must name a config field (pe.kind, pe.cols, "
                        f"sram.act_kib, dram.gbps, clock_mhz, ...), not {path!r}")
    return path


def _workload(src, i, raw, here):
    where = f"workloads[{i}]"
    _mapping(src, where, raw)
    for k in raw:
        if k not in WORKLOAD_KEYS:
            raise UserError(f"{src}: `{where}.{k}` is not a known field (known: "
                            f"{', '.join(WORKLOAD_KEYS)})")
    model = raw.get("model")
    if not isinstance(model, str):
        _fail(src, f"{where}.model", "the path of a .q file", model)
    path = next((p for p in (Path(model), here / model) if p.is_file()), None)
    if path is None:
        raise UserError(f"{src}: `{where}.model` must be an existing .q file, not {model!r} "
                        "(`make dse` builds the shipped sweep's files)")
    from quant.qformat import read_meta
    meta = read_meta(path)
    checksum = meta["checksum"]
    tokens = _mapping(src, f"{where}.tokens", raw.get("tokens"))
    if not tokens:
        _fail(src, f"{where}.tokens", "a non-empty mapping of phase: tokens", tokens)
    for phase, m in tokens.items():
        if not isinstance(phase, str) or not NAME.match(phase):
            _fail(src, f"{where}.tokens", "keyed by phase names such as decode", phase)
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            _fail(src, f"{where}.tokens.{phase}", "a positive integer", m)
    blocks = raw.get("blocks", 1)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        _fail(src, f"{where}.blocks", "a positive integer", blocks)
    name = raw.get("name", Path(model).stem)
    if not isinstance(name, str) or not NAME.match(name):
        _fail(src, f"{where}.name", "a name of letters, digits, _ . -", name)
    plain = Workload(name, model, path, dict(tokens), blocks, checksum, base=name)
    if "ctx" not in raw:
        if "kv" in raw:
            _fail(src, f"{where}.kv", "given with `ctx` (the decode context that reads the "
                  "cache)", raw["kv"])
        return [plain]
    ctxs = _one_or_list(src, f"{where}.ctx", raw["ctx"], _ctx)
    kvs = _one_or_list(src, f"{where}.kv", raw.get("kv", "fp16"), _kv)
    if 1 not in tokens.values():
        _fail(src, f"{where}.ctx", "set for a workload with a one-token (decode) phase",
              raw["ctx"])
    if "model_shape" not in meta:
        _fail(src, f"{where}.ctx", f"set for a .q file that records the model's shape (heads, "
              f"KV heads, head dim; {model} predates it: re-quantize it)", raw["ctx"])
    return [dataclasses.replace(plain, name=f"{name}-ctx{ctx_label(c)}-{kv}", ctx=c, kv=kv)
            for c in ctxs for kv in kvs]


def ctx_label(ctx):
    """`1k` for 1024 tokens, `16k` for 16384, the number otherwise."""
    return f"{ctx // 1024}k" if ctx % 1024 == 0 else str(ctx)


def _one_or_list(src, where, value, check):
    values = value if isinstance(value, list) else [value]
    if not values:
        _fail(src, where, "a value or a non-empty list", value)
    out = [check(src, f"{where}[{i}]" if isinstance(value, list) else where, v)
           for i, v in enumerate(values)]
    if len(set(out)) != len(out):
        _fail(src, where, "a list without repeats", value)
    return out


def _ctx(src, where, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CTX_MAX:
        _fail(src, where, f"a context length in tokens from 1 to {CTX_MAX}", value)
    return value


def _kv(src, where, value):
    if not isinstance(value, str) or value not in KV_FORMATS:
        _fail(src, where, f"a KV format ({', '.join(KV_FORMATS)})", value)
    return value


def _dims(src, raw):
    dims, seen = [], set()

    def claim(where, path):
        _field(src, where, path)
        if path in seen:
            _fail(src, where, "swept once (in axes or one zip group)", path)
        seen.add(path)

    for path, values in _mapping(src, "axes", raw.get("axes", {})).items():
        claim(f"axes.{path}", path)
        values = _list(src, f"axes.{path}", values)
        rows = [(_field_value(src, f"axes.{path}[{j}]", path, v),) for j, v in enumerate(values)]
        dims.append(((path,), rows))
    for i, group in enumerate(_list(src, "zip", raw["zip"]) if "zip" in raw else []):
        group = _mapping(src, f"zip[{i}]", group)
        if not group:
            _fail(src, f"zip[{i}]", "a non-empty mapping of paired axes", group)
        lengths = set()
        for path, values in group.items():
            claim(f"zip[{i}].{path}", path)
            lengths.add(len(_list(src, f"zip[{i}].{path}", values)))
        if len(lengths) != 1:
            _fail(src, f"zip[{i}]", "lists of one length (paired values)", sorted(lengths))
        paths = tuple(group)
        rows = [tuple(_field_value(src, f"zip[{i}].{p}[{j}]", p, group[p][j]) for p in paths)
                for j in range(lengths.pop())]
        dims.append((paths, rows))
    return tuple(dims), seen


def _exclude(src, raw, swept):
    out = []
    for i, ex in enumerate(_list(src, "exclude", raw["exclude"]) if "exclude" in raw else []):
        ex = _mapping(src, f"exclude[{i}]", ex)
        if not ex:
            _fail(src, f"exclude[{i}]", "a non-empty mapping", ex)
        clause = {}
        for path, v in ex.items():
            where = f"exclude[{i}].{path}"
            _field(src, where, path)
            if path not in swept:
                _fail(src, where, "a swept axis", path)
            listed = isinstance(v, list) and typing.get_origin(FIELDS[path]) is not tuple
            vs = v if listed else [v]
            clause[path] = tuple(_field_value(src, where, path, x) for x in vs)
        out.append(clause)
    return tuple(out)


def _objectives(src, raw, known):
    obj = _mapping(src, "objectives", raw.get("objectives"))
    if not obj:
        _fail(src, "objectives", "a non-empty mapping of metric: max | min", obj)
    for metric, sense in obj.items():
        if metric not in known:
            _fail(src, f"objectives.{metric}", f"a metric ({', '.join(known)})", metric)
        if sense not in ("max", "min"):
            _fail(src, f"objectives.{metric}", "max or min", sense)
    return dict(obj)


def _constraints(src, raw, known):
    out = []
    for metric, rule in _mapping(src, "constraints", raw.get("constraints", {})).items():
        if metric not in known:
            _fail(src, f"constraints.{metric}", f"a metric ({', '.join(known)})", metric)
        m = CONSTRAINT.match(str(rule))
        try:
            bound = float(m.group(2)) if m else None
        except ValueError:
            bound = None
        if bound is None:
            _fail(src, f"constraints.{metric}", "a comparison such as '<= 60'", rule)
        out.append((metric, m.group(1), bound))
    return tuple(out)


def _ladder(src, raw):
    ladder = dict(LADDER_DEFAULTS)
    for k, v in _mapping(src, "ladder", raw.get("ladder", {})).items():
        if k not in LADDER_DEFAULTS:
            raise UserError(f"{src}: `ladder.{k}` is not a known field (known: "
                            f"{', '.join(LADDER_DEFAULTS)})")
        if k == "epsilon":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                _fail(src, "ladder.epsilon", "a number in [0, 1)", v)
            v = float(v)
        elif k == "sim":
            if not isinstance(v, bool):
                _fail(src, "ladder.sim", "true or false", v)
        elif k == "max_sim_points" and v is None:
            pass                                    # no cap: the ladder runs to convergence
        elif isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "max_sim_points"
                                                                   else 1):
            _fail(src, f"ladder.{k}", "a positive integer" if k != "max_sim_points"
                  else "null (no cap), zero or a positive integer", v)
        ladder[k] = v
    return ladder


def resolve(path):
    """A sweep file path, or the name of a shipped sweep (`llama7b` -> dse/sweeps/llama7b.yaml)."""
    p = Path(path)
    if not p.exists() and not p.suffix and (SWEEP_DIR / f"{path}.yaml").exists():
        return SWEEP_DIR / f"{path}.yaml"
    return p


def load(path):
    """Load and validate a sweep file; `UserError` (one line) on any bad key or value."""
    from dse.evaluate import metric_names  # the metrics the evaluators produce
    p = resolve(path)
    src = str(path)
    raw = arch_config.read_yaml(p, src, "sweep file")
    _mapping(src, "<top level>", raw)
    for k in raw:
        if k not in TOP_KEYS:
            raise UserError(f"{src}: `{k}` is not a known field (known: {', '.join(TOP_KEYS)})")
    name = raw.get("name", p.stem)
    if not isinstance(name, str) or not NAME.match(name):
        _fail(src, "name", "a name of letters, digits, _ . -", name)
    base = raw.get("base")
    if not isinstance(base, str):
        _fail(src, "base", "an arch config path or shipped name", base)
    arch_config.load(base)                          # validates the base itself
    base_raw = arch_config.read_yaml(arch_config.resolve(base), base, "config file")
    workloads = tuple(wl for i, w in enumerate(_list(src, "workloads", raw.get("workloads")))
                      for wl in _workload(src, i, w, p.parent))
    phases = list(workloads[0].tokens)
    for i, wl in enumerate(workloads):
        if list(wl.tokens) != phases:
            _fail(src, f"workloads[{i}].tokens", f"the phases of workloads[0] ({phases})",
                  list(wl.tokens))
    if len({wl.name for wl in workloads}) != len(workloads):
        _fail(src, "workloads", "named uniquely", [wl.name for wl in workloads])
    dims, swept = _dims(src, raw)
    known = metric_names(phases)
    return Sweep(name=name, source=src, base=base, base_raw=base_raw, workloads=workloads,
                 dims=dims, exclude=_exclude(src, raw, swept),
                 objectives=_objectives(src, raw, known),
                 constraints=_constraints(src, raw, known), ladder=_ladder(src, raw))
