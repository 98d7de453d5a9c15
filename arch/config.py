"""The architecture config: one typed, validated object that the compiler, the simulators, the
roofline and the RTL all read (DESIGN.md section 1).

A config is a YAML file (`arch/configs/*.yaml`) loaded into frozen dataclasses. Loading rejects
unknown keys, wrong types, non-positive sizes, non-powers-of-two where the hardware needs them, and
inconsistent combinations (a tile that does not fit its buffer), each with one line of the form

    arch/configs/x.yaml: `pe.group` must be one of 2, 3, 4, 5, not 7

Field names carry their units (`_kib`, `_mhz`, `_gbps`, `_ns`, `_pj`). Derived values are
properties, never stored twice. `config.tag` (e.g. `lut2x64_g4_w4a8`) names build and report
folders.
"""

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import yaml

from arch import isa
from bitlut.errors import UserError
from bitlut.formats import CODEBOOK_BITS, UNIFORM_BITS

# The hardware's numeric domains, read by the golden model, the compiler and the RTL: one place.
# The weight formats themselves (`UNIFORM_BITS`, `CODEBOOK_BITS`) are `bitlut.formats`', which
# the quantizer shares.
PE_KINDS = ("lut", "bitserial", "mac")
LUT_GROUPS = (2, 3, 4, 5)                # activations per LUT table
BITSERIAL_GROUPS = (1, 2, 4, 8, 16)      # lane width of a bit-serial dot product
LUT_WEIGHT_BITS = (1, 2, 3, 4)           # uniform widths the golden LUT kernel walks as planes
MIN_CODEBOOK_BITS = min(CODEBOOK_BITS)
CENTROID_BITS = (8, 16)                  # fixed-point centroid widths
ACT_BITS = (8,)
# How activations become int8 (docs/numerics.md section 1): one scale per token row (`token`), one
# per token row and k-step (`token_group`: `vdeq` with `rowscale`), or per-token after the host
# divides X by the layer's SmoothQuant migration scales (`smooth`: the `token` program). Every
# model runs all three, the RTL core included.
ACT_QUANTS = ("token", "token_group", "smooth")
ACC_BITS = (16, 24, 32)
TABLE_ENTRY_MAX_BITS = 32                # table entries are stored as int16 or int32

CONFIG_DIR = Path(__file__).parent / "configs"

# Upper bounds of a config's numbers, so that a config that loads is one the tools can run (a
# number past them is a typo, or hostile). A scratchpad may not be larger than the narrowest
# address field that points into scratchpads can reach; the other bounds are far beyond any
# physical design (a 100 GHz clock, a PB/s DRAM, a millisecond of DRAM latency).
SRAM_MAX_KIB = (1 << min(f.width for fs in isa.FORMATS.values() for f in fs
                         if f.buffer is not None)) // 1024
FLOAT_MAX = {"clock_mhz": 1e5, "dram.gbps": 1e6, "dram.latency_ns": 1e6}
ENERGY_MAX = 1e6               # pJ per event, mW static
INT_MAX = 1 << 16              # PE shape, queue depths, timing cycles, DMA slots, banks
BURST_MAX_BYTES = 1 << 16
YAML_DEPTH_MAX = 32            # a config is three levels deep; deeper nesting is refused early


class ConfigError(UserError):
    """An invalid architecture config (one line: file, field, rule, value)."""


def _decimal(x):
    """The exact rational of a number as the YAML wrote it (25.6 is 128/5, not the nearest
    binary double)."""
    return Fraction(repr(x))


def _is_pow2(v):
    return v > 0 and v & (v - 1) == 0


@dataclass(frozen=True)
class PE:
    """The processing-element array.

    For `lut` and `bitserial`, `rows` × `cols` lanes: `rows` token rows (M) by `cols` output
    channels (N) per tile. A `lut` lane consumes one table index of `group` weights per cycle (one
    bit plane in uniform mode); a `bitserial` lane is a `group`-wide dot product consuming one
    weight bit per cycle. For `mac`, a weight-stationary systolic array: `rows` input features (K)
    by `cols` output channels (N) of int8 MACs hold a weight tile while tokens stream through
    (`group` must be 1).
    """
    kind: str
    rows: int
    cols: int
    group: int
    index_bits: int = 4
    symmetric: bool = True
    weight_bits: tuple[int, ...] = (1, 2, 3, 4)
    act_bits: int = 8
    acc_bits: int = 32
    centroid_bits: int = 8
    saturate: bool = False
    codebook: bool = True        # serves CLAQ codebook layers too (false: uniform weights only)
    table_entry_bits: int = 0    # LUT table entry width; 0: the narrowest that serves the
    #                              formats (`ArchConfig.table_entry_bits_needed`)
    act_quant: str = "token"


@dataclass(frozen=True)
class Timing:
    """Per-unit cycle costs of the pipeline. They are measured on the RTL by its tests and the cycle
    model reads them from here; a test fails if the RTL drifts from these numbers."""
    pe_latency: int = 2          # cycles from a tile's last beat to its result (pipeline depth)
    pe_ii: int = 1               # cycles between successive bit planes / tiles, steady state
    table_latency: int = 2       # table precompute unit pipeline depth
    table_ii: int = 1            # cycles per table (one token row, one group) built
    table_read_latency: int = 1  # tbl: scratchpad read in front of the table unit
    table_stream_latency: int = 2  # gather, cbx: the two scratchpad reads of a chunk
    vector_lanes: int = 16       # elements per cycle of the vector unit
    vector_latency: int = 13     # vector unit pipeline depth (rtl.vector_unit.DEPTH)
    dma_setup: int = 4           # cycles to issue one DMA command
    dispatch_latency: int = 1    # cycles from dispatch into a unit queue to the earliest start
    matmul_overhead: int = 2     # lmma/bsmm/mma: cycles besides the beats (mma: the folds)
    #                              and pe_latency (the sequencer's start and the scratchpad read
    #                              before the array)


@dataclass(frozen=True)
class Sram:
    """Scratchpad capacities in KiB."""
    act_kib: int
    table_kib: int
    weight_kib: int
    codebook_kib: int
    scale_kib: int
    acc_kib: int
    outlier_kib: int
    out_kib: int
    banks: int = 1               # independent ports per scratchpad

    def bytes(self, buffer):
        """Capacity of one buffer (`act`, `table`, ...) in bytes."""
        return getattr(self, f"{buffer}_kib") * 1024


@dataclass(frozen=True)
class Dram:
    gbps: float                  # sustained bandwidth, GB/s (1e9 bytes per second)
    latency_ns: float            # first-byte latency of a request
    burst_bytes: int             # transfer granularity: requests round up to whole bursts
    outstanding: int = 8         # DMA requests one unit may have in flight (latency hiding)


@dataclass(frozen=True)
class Queues:
    insn_depth: int = 32         # instruction queue in front of each unit
    token_depth: int = 8         # dependency-token FIFO between two units


@dataclass(frozen=True)
class Energy:
    """Energy per event in pJ. Each shipped YAML cites a source for every value."""
    lookup_pj: float             # one table read + accumulate (LUT lane, one bit plane)
    table_entry_pj: float        # one table entry built (one add/sub of int8 operands)
    bitserial_step_pj: float     # one bit-serial lane step (AND + shift-add)
    mac_pj: float                # one int8 x int8 multiply + int32 accumulate
    vector_op_pj: float          # one fp32 multiply-add in the vector unit
    sram_byte_pj: float          # one byte read or written in a scratchpad
    dram_byte_pj: float          # one byte moved to or from DRAM
    static_mw: float = 0.0       # leakage and clock, charged per cycle


@dataclass(frozen=True)
class ArchConfig:
    pe: PE
    sram: Sram
    dram: Dram
    clock_mhz: float
    energy: Energy
    timing: Timing = field(default_factory=Timing)
    queues: Queues = field(default_factory=Queues)
    name: str = ""
    source: str = field(default="<memory>", compare=False)

    # -- derived values -------------------------------------------------------------------------
    @property
    def tag(self):
        """Short name for build and report folders, e.g. `lut2x64_g4_w4a8`."""
        pe = self.pe
        kind = {"lut": "lut", "bitserial": "bs", "mac": "mac"}[pe.kind]
        group = f"_g{pe.group}" if pe.kind != "mac" else ""
        act = {"token": "", "token_group": "tg", "smooth": "sq"}[pe.act_quant]
        return f"{kind}{pe.rows}x{pe.cols}{group}_w{max(pe.weight_bits)}a{pe.act_bits}{act}"

    @property
    def table_entries(self):
        """Entries stored per table in uniform mode: 2^(g-1) with symmetrization, else 2^g."""
        return 1 << (self.pe.group - 1 if self.pe.symmetric else self.pe.group)

    @property
    def codebook_table_entries(self):
        """Entries per table in codebook mode: one per value of the `index_bits`-wide index."""
        return 1 << self.pe.index_bits

    def codebook_group(self, bits):
        """Columns of `bits`-bit codes that share one codebook-mode table: their codes together
        form one `index_bits`-wide index (2-bit columns pair up at index_bits = 4)."""
        widest = max(CODEBOOK_BITS)
        if bits not in CODEBOOK_BITS or bits > self.pe.index_bits:
            hi = (f"pe.index_bits ({self.pe.index_bits})" if self.pe.index_bits <= widest
                  else f"{widest} (the widest codebook format)")
            raise ConfigError(f"{self.source}: codebook code width must be between "
                              f"{MIN_CODEBOOK_BITS} and {hi}, not {bits}")
        return self.pe.index_bits // bits

    @property
    def table_entry_bits_needed(self):
        """The narrowest table entry that serves the array's formats: the largest |sum| of
        `group` activations (uniform mode) or, where the array serves codebooks
        (`pe.codebook`), of activation x centroid products over one index (codebook mode), plus
        a sign bit. A uniform-only A8 array with g = 4 needs 10 bits; int16 codebooks, 24."""
        pe = self.pe
        amax = (1 << (pe.act_bits - 1)) - 1
        cmax = (1 << (pe.centroid_bits - 1)) - 1
        need = pe.group * amax
        if pe.codebook:
            need = max(need, (pe.index_bits // MIN_CODEBOOK_BITS) * amax * cmax)
        return need.bit_length() + 1

    @property
    def table_entry_bits(self):
        """Width of one table entry: `pe.table_entry_bits`, or the narrowest that serves the
        array's formats when that is 0. The table unit and the LUT PEs are built this wide."""
        return self.pe.table_entry_bits or self.table_entry_bits_needed

    @property
    def table_entry_bytes(self):
        """Bytes per stored table entry: int16 when the entries fit, else int32."""
        return 2 if self.table_entry_bits <= 16 else 4

    @property
    def centroid_dtype(self):
        """numpy dtype name of a fixed-point centroid."""
        return f"int{self.pe.centroid_bits}"

    @property
    def cycle_ns(self):
        return 1e3 / self.clock_mhz

    @property
    def dram_bytes_per_cycle(self):
        return self.dram.gbps * 1e9 / (self.clock_mhz * 1e6)

    @functools.cached_property
    def dram_bytes_per_cycle_exact(self):
        """DRAM bytes per cycle as an exact fraction of the config's decimal numbers, for the
        cycle counts that the cycle model and the RTL's memory model must agree on (computed
        once: the cycle model asks for every DMA)."""
        return _decimal(self.dram.gbps) * 1000 / _decimal(self.clock_mhz)

    @functools.cached_property
    def dram_latency_cycles(self):
        """The DRAM latency in whole cycles, rounded up exactly (latency_ns * clock_mhz / 1000)."""
        return math.ceil(_decimal(self.dram.latency_ns) * _decimal(self.clock_mhz) / 1000)

    def replace(self, **changes):
        """A copy with top-level fields replaced (sections as dataclasses), validated again."""
        cfg = dataclasses.replace(self, **changes)
        validate(cfg)
        return cfg


# -- loading ------------------------------------------------------------------------------------

def _fail(source, path, rule, value):
    text = repr(value)
    if len(text) > 60:                  # one readable line, whatever the file holds
        text = text[:57] + "..."
    raise ConfigError(f"{source}: `{path or 'config'}` must be {rule}, not {text}")


def _coerce(source, path, tp, value):
    """Check `value` against the annotation `tp`; YAML ints are accepted for float fields."""
    if tp is bool:
        if not isinstance(value, bool):
            _fail(source, path, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(source, path, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(source, path, "a number", value)
        try:
            number = float(value)
        except OverflowError:           # a YAML integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            _fail(source, path, "a finite number", value)
        return number
    if tp is str:
        if not isinstance(value, str):
            _fail(source, path, "a string", value)
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list) or not value:
            _fail(source, path, "a non-empty list of integers", value)
        return tuple(_coerce(source, f"{path}[{i}]", int, v) for i, v in enumerate(value))
    raise TypeError(f"unsupported field type {tp}")  # a bug in this module, not user input


def _build(source, prefix, cls, raw):
    if not isinstance(raw, dict):
        _fail(source, prefix, "a mapping of fields", raw)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{source}: `{path}` is not a known field (known: {known})")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = _build(source, path, tp, value)
        else:
            kwargs[key] = _coerce(source, path, tp, value)
    for name, f in fields.items():
        no_default = (f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING)
        if name not in kwargs and no_default:
            path = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{source}: `{path}` is required but missing")
    return cls(**kwargs)


def from_dict(raw, source="<memory>"):
    """Build and validate an `ArchConfig` from a plain mapping (as parsed from YAML)."""
    cfg = _build(source, "", ArchConfig, raw)
    cfg = dataclasses.replace(cfg, source=str(source))
    validate(cfg)
    return cfg


def resolve(path):
    """The file of `path`: itself, or the shipped config it names (`lut` -> configs/lut.yaml)."""
    p = Path(path)
    if not p.exists() and not p.suffix and (CONFIG_DIR / f"{path}.yaml").exists():
        p = CONFIG_DIR / f"{path}.yaml"
    return p


def load(path):
    """Load `path` (a YAML file, or the name of a shipped config such as `lut`)."""
    return from_dict(read_yaml(resolve(path), path, "config file"), source=path)


def read_yaml(p, path, what):
    """The YAML document of file `p` (named `path` in messages), safely: a folder, a missing or
    binary file, YAML nested deeper than `YAML_DEPTH_MAX` and a syntax error are each one
    line, `ConfigError`. `what` names the file (`config file`, `sweep file`)."""
    p = Path(p)
    if p.is_dir():
        raise ConfigError(f"{path}: {what} must be a file, not a folder")
    if not p.is_file():
        raise ConfigError(f"{path}: {what} must exist, not missing")
    try:
        text = p.read_text(encoding="utf-8")
        _check_depth(path, text)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: file must be valid YAML{where}, not "
                          f"{getattr(e, 'problem', 'malformed')!r}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: file must be UTF-8 text, not binary") from None


def _check_depth(path, text):
    """Refuse YAML nested deeper than `YAML_DEPTH_MAX` before the parser recurses into it (a
    config nested thousands deep would exhaust Python's stack inside `yaml.safe_load`)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > YAML_DEPTH_MAX:
                raise ConfigError(f"{path}: file must nest at most {YAML_DEPTH_MAX} levels "
                                  f"deep, not more")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def shipped():
    """Paths of the configs shipped in `arch/configs/`."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


# -- validation ---------------------------------------------------------------------------------
def validate(cfg):
    """Raise `ConfigError` for the first rule `cfg` breaks."""
    src = cfg.source
    pe = cfg.pe

    def positive(path, value):
        if value <= 0:
            _fail(src, path, "positive", value)

    def at_most(path, value, hi):
        if value > hi:
            _fail(src, path, f"at most {hi:g}", value)

    def pow2(path, value):
        if not _is_pow2(value):
            _fail(src, path, "a power of two", value)

    def one_of(path, value, allowed):
        if value not in allowed:
            _fail(src, path, "one of " + ", ".join(map(str, allowed)), value)

    one_of("pe.kind", pe.kind, PE_KINDS)
    pow2("pe.rows", pe.rows)
    pow2("pe.cols", pe.cols)
    if pe.kind == "lut":
        one_of("pe.group", pe.group, LUT_GROUPS)
    elif pe.kind == "bitserial":
        one_of("pe.group", pe.group, BITSERIAL_GROUPS)
    else:
        one_of("pe.group", pe.group, (1,))
    one_of("pe.act_bits", pe.act_bits, ACT_BITS)
    one_of("pe.act_quant", pe.act_quant, ACT_QUANTS)
    one_of("pe.acc_bits", pe.acc_bits, ACC_BITS)
    one_of("pe.centroid_bits", pe.centroid_bits, CENTROID_BITS)
    if not 1 <= pe.index_bits <= 8:
        _fail(src, "pe.index_bits", "between 1 and 8", pe.index_bits)
    for i, b in enumerate(pe.weight_bits):
        one_of(f"pe.weight_bits[{i}]", b, UNIFORM_BITS)
    if len(set(pe.weight_bits)) != len(pe.weight_bits):
        _fail(src, "pe.weight_bits", "a list without repeats", list(pe.weight_bits))
    if pe.kind == "lut":
        if pe.index_bits < pe.group:
            _fail(src, "pe.index_bits", f"at least pe.group ({pe.group})", pe.index_bits)
        if max(pe.weight_bits) > pe.index_bits:
            _fail(src, "pe.weight_bits", f"at most pe.index_bits ({pe.index_bits}) wide so a "
                  "codebook index fits the table", list(pe.weight_bits))
    if pe.kind == "lut" and pe.table_entry_bits:
        need = cfg.table_entry_bits_needed
        if not need <= pe.table_entry_bits <= TABLE_ENTRY_MAX_BITS:
            serves = "uniform weights" + (f" and int{pe.centroid_bits} codebooks"
                                          if pe.codebook else "")
            _fail(src, "pe.table_entry_bits", f"0 (derived) or between {need} (what "
                  f"{serves} need at pe.group {pe.group}) and {TABLE_ENTRY_MAX_BITS}",
                  pe.table_entry_bits)
    if pe.kind == "mac" and pe.rows != pe.cols:
        _fail(src, "pe.rows", f"equal to pe.cols ({pe.cols}) for a square systolic array",
              pe.rows)

    at_most("pe.rows", pe.rows, INT_MAX)
    at_most("pe.cols", pe.cols, INT_MAX)
    for f in dataclasses.fields(Sram):
        positive(f"sram.{f.name}", getattr(cfg.sram, f.name))
        if f.name != "banks":
            at_most(f"sram.{f.name}", getattr(cfg.sram, f.name), SRAM_MAX_KIB)
    pow2("sram.banks", cfg.sram.banks)
    at_most("sram.banks", cfg.sram.banks, INT_MAX)
    positive("dram.gbps", cfg.dram.gbps)
    if cfg.dram.latency_ns < 0:
        _fail(src, "dram.latency_ns", "zero or positive", cfg.dram.latency_ns)
    pow2("dram.burst_bytes", cfg.dram.burst_bytes)
    at_most("dram.burst_bytes", cfg.dram.burst_bytes, BURST_MAX_BYTES)
    positive("dram.outstanding", cfg.dram.outstanding)
    at_most("dram.outstanding", cfg.dram.outstanding, INT_MAX)
    positive("clock_mhz", cfg.clock_mhz)
    for path, hi in FLOAT_MAX.items():
        section, _, name = path.rpartition(".")
        at_most(path, getattr(getattr(cfg, section) if section else cfg, name), hi)
    for f in dataclasses.fields(Energy):
        if getattr(cfg.energy, f.name) < 0:
            _fail(src, f"energy.{f.name}", "zero or positive", getattr(cfg.energy, f.name))
        at_most(f"energy.{f.name}", getattr(cfg.energy, f.name), ENERGY_MAX)
    for f in dataclasses.fields(Timing):
        value = getattr(cfg.timing, f.name)
        if f.name in ("pe_ii", "table_ii", "vector_lanes", "dma_setup", "dispatch_latency"):
            positive(f"timing.{f.name}", value)
        elif value < 0:
            _fail(src, f"timing.{f.name}", "zero or positive", value)
        at_most(f"timing.{f.name}", value, INT_MAX)
    for name in ("insn_depth", "token_depth"):
        positive(f"queues.{name}", getattr(cfg.queues, name))
        at_most(f"queues.{name}", getattr(cfg.queues, name), INT_MAX)

    # One tile of every operand must fit its buffer twice over (double buffering), or the compiler
    # has no legal tiling at all.
    for buffer, need in tile_bytes(cfg).items():
        have = cfg.sram.bytes(buffer)
        if 2 * need > have:
            _fail(src, f"sram.{buffer}_kib",
                  f"at least {math.ceil(2 * need / 1024)} to double-buffer one "
                  f"{pe.rows}x{pe.cols} tile ({need} bytes)", getattr(cfg.sram, f"{buffer}_kib"))


def tile_bytes(cfg):
    """Bytes that one minimal tile of each operand occupies on chip (one table group deep)."""
    pe = cfg.pe
    entry_bytes = -(-cfg.table_entry_bits // 8)
    wbits = max(pe.weight_bits)
    need = {
        "act": pe.rows * max(pe.group, 1) * pe.act_bits // 8,
        "weight": -(-pe.cols * max(pe.group, 1) * wbits // 8),
        "acc": pe.rows * pe.cols * pe.acc_bits // 8,
        "out": pe.rows * pe.cols * 4,
    }
    if pe.kind == "lut":
        need["table"] = pe.rows * max(cfg.table_entries, cfg.codebook_table_entries) * entry_bytes
    return need
