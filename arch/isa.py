"""The bitlut instruction set, defined once (DESIGN.md section 5).

Every instruction is one 128-bit word. Its low bits are a common header (opcode, the dependency
tokens it waits for and signals), followed by the fields of its format. The formats are declared
below as one field table (`FORMATS`); from it this module builds the Amaranth `data.StructLayout`
of each format (used by the RTL decoder, `Signal(layout(op))`), a fast pure-Python codec (used by
the compiler and the simulators), the text assembler and disassembler, and the reference page
`docs/isa.md`. Nothing else in bitlut writes an opcode number or a field width.

Execution model (decoupled access/execute, as VTA): each opcode belongs to one of five units,
each with its own in-order instruction queue: `load` (DMA DRAM -> scratchpad), `table`
(activation gather, table precompute, codebook expansion), `matmul` (the PE array), `vector`
(activation sums, dequant epilogue, outliers, scaling) and `store` (DMA scratchpad -> DRAM).
Units synchronise only through dependency tokens: an instruction on unit U whose `wait` mask has
bit V pops one token from the FIFO V->U before it
starts; when it completes it pushes one token to U->W for every bit W of its `signal` mask.
`nop` and `finish` belong to the dispatcher; `finish` ends the program once its waits are met.

Addresses are byte offsets into the scratchpad named by the field; counts are element counts
and must be at least 1. Words whose opcode is unassigned, whose enum fields hold unassigned values,
whose reserved bits are not zero, or whose tokens name their own unit are illegal.
"""

import re
from dataclasses import dataclass, field

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from bitlut.errors import UserError

WORD_BITS = 128
WORD_BYTES = WORD_BITS // 8


class IsaError(UserError):
    """A malformed instruction word, assembly line or field value."""


class Unit(enum.Enum, shape=3):
    """Execution units; bit `Unit.X.value` of a token mask names unit X."""
    LOAD = 0
    TABLE = 1
    MATMUL = 2
    VECTOR = 3
    STORE = 4


UNITS = tuple(Unit)
TOKEN_BITS = len(UNITS)


class Opcode(enum.Enum, shape=5):
    """Opcode numbers. 0 is left unassigned so that an all-zero word (unwritten memory) is
    illegal."""
    NOP = 1
    FINISH = 2
    LOAD = 3
    STORE = 4
    TBL = 5
    GATHER = 6
    LMMA = 7
    BSMM = 8
    MMA = 9
    VDEQ = 10
    VOUT = 11
    VSCALE = 12
    CBX = 13
    VSUM = 14
    # the whole decoder block (docs/block.md): statistics, norms, quantization, elementwise,
    # RoPE, the KV-cache write, softmax, fp16 vector products, and the KV image repack
    VSTAT = 15
    VNORM = 16
    VQUANT = 17
    VEW = 18
    VROPE = 19
    VKVQ = 20
    VSMAX = 21
    VMV = 22
    PACK = 23


class Buffer(enum.Enum, shape=4):
    """On-chip scratchpads; sizes are `sram.<name>_kib` in the arch config."""
    ACT = 0        # int8 activations, row-major tiles
    TABLE = 1      # precomputed lookup tables (and the per-row activation sums)
    WEIGHT = 2     # packed weight codes / bit planes
    CODEBOOK = 3   # per-column metadata: fixed-point centroids, gather indices
    SCALE = 4      # per-channel (scale, zero) records, per-row activation scales
    ACC = 5        # int32 accumulators
    OUTLIER = 6    # the sparse outlier list: (n, k, fp16 value) records
    OUT = 7        # fp32 outputs of the vector unit


class Mode(enum.Enum, shape=1):
    """Weight format of a table build or matmul."""
    UNIFORM = 0    # b-bit codes, {-1,+1} bit planes, per-group scale and zero
    CODEBOOK = 1   # per-column codebooks (CLAQ), codes index the centroids


class Deq(enum.Enum, shape=2):
    """How `vdeq` turns an accumulator into the canonical partial P before scaling.

    LUT:   P = (acc - z' * sums) >> 1  ({-1,+1} planes; z' = 2z + 1 - 2^b, stored offline)
    ZERO:  P = acc - z * sums          (unsigned codes on the bit-serial or MAC array)
    BLOCK: P = acc, with one scale record for all n (a codebook block's scale)
    """
    LUT = 0
    ZERO = 1
    BLOCK = 2


class Stat(enum.Enum, shape=1):
    """What `vstat` accumulates per row across the column chunks of a row."""
    SSQ = 0        # sum of squares in `vector_lanes` lane accumulators (RMSNorm)
    AMAX = 1       # max |x| (the int8 row scale of `vquant`)


class Ew(enum.Enum, shape=2):
    """The elementwise function of `vew`."""
    ADD = 0        # dst = a + b (the residual adds)
    SILU_MUL = 1   # dst = silu(a) * b (the MLP's gate)
    MUL = 2        # dst = a * b


# The matmul opcode of each PE array kind (`arch.config.PE_KINDS`).
MATMUL_OPCODE = {"lut": Opcode.LMMA, "bitserial": Opcode.BSMM, "mac": Opcode.MMA}
PE_KIND_OF = {op: kind for kind, op in MATMUL_OPCODE.items()}

UNIT_OF = {
    Opcode.NOP: None, Opcode.FINISH: None,
    Opcode.LOAD: Unit.LOAD, Opcode.STORE: Unit.STORE,
    Opcode.TBL: Unit.TABLE, Opcode.GATHER: Unit.TABLE, Opcode.CBX: Unit.TABLE,
    Opcode.LMMA: Unit.MATMUL, Opcode.BSMM: Unit.MATMUL, Opcode.MMA: Unit.MATMUL,
    Opcode.VDEQ: Unit.VECTOR, Opcode.VOUT: Unit.VECTOR, Opcode.VSCALE: Unit.VECTOR,
    Opcode.VSUM: Unit.VECTOR,
    Opcode.VSTAT: Unit.VECTOR, Opcode.VNORM: Unit.VECTOR, Opcode.VQUANT: Unit.VECTOR,
    Opcode.VEW: Unit.VECTOR, Opcode.VROPE: Unit.VECTOR, Opcode.VKVQ: Unit.VECTOR,
    Opcode.VSMAX: Unit.VECTOR, Opcode.VMV: Unit.VECTOR, Opcode.PACK: Unit.TABLE,
}


@dataclass(frozen=True)
class Field:
    """One field of a format.

    `kind` is "uint" (any value that fits), "count" (at least 1), or "flag"; `enum` makes it an
    enumerated field; `buffer` makes it a byte address into that scratchpad (a `Buffer`, or the
    name of the field of this format that selects the buffer). An `optional` field (a flag added
    to a format later) is 0 when an instruction or assembly line leaves it out, so programs
    written before it keep their meaning, and the disassembler prints it only when set."""
    name: str
    width: int
    doc: str
    kind: str = "uint"
    enum: type | None = None
    buffer: object = None
    optional: bool = False

    @property
    def shape(self):
        return self.enum if self.enum is not None else unsigned(self.width)


def _addr(name, buffer, doc, width=20):
    return Field(name, width, doc, buffer=buffer)


def _dma(sram_role, dram_role):
    """The shared format of `load` and `store`: a 2-D copy between DRAM and a scratchpad."""
    return [
        Field("buf", 4, f"{sram_role} scratchpad", enum=Buffer),
        _addr("sram", "buf", f"{sram_role}; rows are packed back to back"),
        Field("dram", 32, f"{dram_role} byte address in DRAM"),
        Field("rows", 12, "rows to transfer", kind="count"),
        Field("row_bytes", 16, "bytes per row", kind="count"),
        Field("dram_stride", 24, "bytes between row starts in DRAM"),
    ]


def _matmul(src_buffer, src_doc):
    """The shared format of the three matmul opcodes; only the source scratchpad differs."""
    return [
        Field("rows", 12, "token rows (M) in the block", kind="count"),
        Field("n", 16, "output channels (N) in the block", kind="count"),
        Field("kgroups", 16, "input groups (K / g) in the block", kind="count"),
        Field("bits", 5, "bit planes: uniform weight bits, codebook code width (lmma) or "
              "centroid width (bsmm, mma)", kind="count"),
        Field("mode", 1, "weight format", enum=Mode),
        Field("accumulate", 1, "1: add into dst; 0: overwrite dst", kind="flag"),
        _addr("src", src_buffer, src_doc),
        _addr("wgt", Buffer.WEIGHT, "packed weight codes of the block"),
        _addr("dst", Buffer.ACC, "int32 accumulators, rows x n"),
    ]

# The field table: the one definition of every format. Order = bit order, low bits first.
FORMATS = {
    Opcode.NOP: [],
    Opcode.FINISH: [],
    Opcode.LOAD: _dma(sram_role="destination", dram_role="source"),
    Opcode.STORE: _dma(sram_role="source", dram_role="destination"),
    Opcode.TBL: [
        Field("mode", 1, "uniform: signed-sum tables; codebook: centroid-sum tables", enum=Mode),
        Field("bits", 4, "codebook code width b (g = index_bits // b); ignored if uniform",
              kind="count"),
        Field("rows", 8, "token rows", kind="count"),
        Field("ngroups", 16, "tables per row (input groups)", kind="count"),
        _addr("act", Buffer.ACT, "int8 activations, rows x (ngroups*g), row-major"),
        _addr("tbl", Buffer.TABLE, "tables out, row-major"),
        _addr("cb", Buffer.CODEBOOK, "fixed-point centroids (codebook mode)"),
        _addr("sums", Buffer.TABLE, "int32 activation sum per row out (uniform mode)"),
    ],
    Opcode.GATHER: [
        Field("rows", 12, "token rows", kind="count"),
        Field("cols", 16, "columns gathered per row", kind="count"),
        _addr("src", Buffer.ACT, "activations in"),
        _addr("dst", Buffer.ACT, "activations out: dst[r, i] = src[r, idx[i]]"),
        _addr("idx", Buffer.CODEBOOK, "uint16 column indices (the layer's permutation)"),
    ],
    Opcode.CBX: [
        Field("n", 16, "output channels (weight rows)", kind="count"),
        Field("cols", 16, "input columns", kind="count"),
        Field("bits", 4, "code width b", kind="count"),
        _addr("src", Buffer.WEIGHT, "packed b-bit codes, n x cols"),
        _addr("dst", Buffer.WEIGHT, "int8 centroids out, n x cols (for bsmm and mma)"),
        _addr("cb", Buffer.CODEBOOK, "fixed-point centroids, 2^b per column"),
    ],
    Opcode.LMMA: _matmul(Buffer.TABLE, "lookup tables of the block's rows and groups"),
    Opcode.BSMM: _matmul(Buffer.ACT, "int8 activations of the block"),
    Opcode.MMA: _matmul(Buffer.ACT, "int8 activations of the block"),
    Opcode.VDEQ: [
        Field("rows", 12, "token rows", kind="count"),
        Field("n", 16, "output channels", kind="count"),
        Field("deq", 2, "accumulator to partial conversion", enum=Deq),
        Field("first", 1, "1: out = result; 0: out += result", kind="flag"),
        _addr("acc", Buffer.ACC, "int32 accumulators, rows x n"),
        _addr("out", Buffer.OUT, "fp32 outputs, rows x n"),
        _addr("param", Buffer.SCALE, "(fp16 scale, int16 zero) records, one per n (block: one "
              "fp32 scale)"),
        _addr("sums", Buffer.TABLE, "int32 activation sum per row (deq lut, zero)"),
        Field("rowscale", 1, "1: multiply by the k-step's fp32 activation scale per row, read "
              "right after the param records, before the add (pe.act_quant token_group; "
              "arch.timing.ROWSCALE_CYCLES more cycles)",
              kind="flag", optional=True),
    ],
    Opcode.VOUT: [
        Field("rows", 8, "token rows", kind="count"),
        Field("n", 16, "output row stride (elements)", kind="count"),
        Field("k", 16, "activation row stride (elements)", kind="count"),
        Field("count", 12, "outlier records to apply, in list order", kind="count"),
        Field("first", 1, "1: start the correction at zero; 0: add to it", kind="flag"),
        _addr("list", Buffer.OUTLIER, "(u16 n, u16 k, fp16 value, u16 pad) records"),
        _addr("act", Buffer.ACT, "int8 activations"),
        _addr("out", Buffer.OUT, "fp32 outlier correction O, kept apart from the outputs"),
    ],
    Opcode.VSCALE: [
        Field("rows", 12, "token rows", kind="count"),
        Field("n", 16, "output channels", kind="count"),
        Field("add", 1, "1: out = (out + O) * scale; 0: out = out * scale", kind="flag"),
        _addr("out", Buffer.OUT, "fp32 outputs, rows x n, scaled in place"),
        _addr("scale", Buffer.SCALE, "fp32 activation scale per row"),
        _addr("corr", Buffer.OUT, "fp32 outlier correction O, rows x n (when add = 1)"),
    ],
    Opcode.VSUM: [
        Field("rows", 12, "token rows", kind="count"),
        Field("cols", 16, "activations summed per row", kind="count"),
        _addr("act", Buffer.ACT, "int8 activations, rows x cols"),
        _addr("sums", Buffer.TABLE, "int32 sum per row out (zero-point correction)"),
    ],
    # -- the decoder block (docs/block.md; numerics: arch/nonlinear.py) --------------------------
    Opcode.VSTAT: [
        Field("rows", 12, "token rows", kind="count"),
        Field("n", 16, "columns of this chunk (a multiple of vector_lanes unless the row's "
              "last)", kind="count"),
        Field("stat", 1, "what to accumulate", enum=Stat),
        Field("first", 1, "1: start the accumulators; 0: continue them", kind="flag"),
        Field("tlog", 4, "0: rows are row-major; t: tile-major, 2^t columns a tile "
              "([n / 2^t][rows][2^t])"),
        _addr("src", Buffer.OUT, "fp32 rows x n"),
        _addr("acc", Buffer.SCALE, "fp32 accumulators: ssq [rows, vector_lanes], amax [rows]"),
    ],
    Opcode.VNORM: [
        Field("rows", 12, "token rows", kind="count"),
        Field("n", 16, "columns of this chunk", kind="count"),
        _addr("src", Buffer.OUT, "fp32 rows x n, normalized in place"),
        _addr("w", Buffer.SCALE, "fp32 norm weights of the chunk's columns [n]"),
        _addr("acc", Buffer.SCALE, "the rows' ssq lane accumulators from vstat [rows, lanes]"),
        _addr("consts", Buffer.SCALE, "fp32 [1 / hidden, eps]"),
    ],
    Opcode.VQUANT: [
        Field("rows", 12, "token rows", kind="count"),
        Field("n", 16, "columns of this chunk", kind="count"),
        Field("tlog", 4, "0: row-major; t: tile-major as vstat's"),
        _addr("src", Buffer.OUT, "fp32 rows x n"),
        _addr("dst", Buffer.ACT, "int8 rows x n out, in src's layout"),
        _addr("amax", Buffer.SCALE, "fp32 max |x| per row from vstat [rows]"),
        _addr("sx", Buffer.SCALE, "fp32 row scale out [rows] (amax / 127; 1 for a zero row)"),
    ],
    Opcode.VEW: [
        Field("rows", 12, "token rows", kind="count"),
        Field("n", 16, "columns", kind="count"),
        Field("fn", 2, "the function", enum=Ew),
        _addr("a", Buffer.OUT, "fp32 rows x n"),
        _addr("b", Buffer.OUT, "fp32 rows x n"),
        _addr("dst", Buffer.OUT, "fp32 rows x n out (may be a or b)"),
    ],
    Opcode.VROPE: [
        Field("rows", 12, "token rows", kind="count"),
        Field("heads", 8, "heads per row", kind="count"),
        Field("hd", 10, "head dim (even)", kind="count"),
        Field("step", 8, "row r rotates by table row r // step", kind="count"),
        _addr("src", Buffer.OUT, "fp32 rows x (heads*hd), rotated in place"),
        _addr("cs", Buffer.SCALE, "fp32 table rows [cos(hd/2), sin(hd/2)] each"),
    ],
    Opcode.VKVQ: [
        Field("rows", 12, "token rows", kind="count"),
        Field("heads", 8, "KV heads per row", kind="count"),
        Field("hd", 10, "head dim", kind="count"),
        Field("bits", 4, "code width (ignored with fp16)", kind="count"),
        Field("glog", 4, "scale group: 2^glog columns of a head"),
        Field("lut", 1, "records hold the LUT array's zero z' = 1, else z = 2^(bits-1)",
              kind="flag"),
        Field("fp16", 1, "1: write fp16 rows, no codes or records", kind="flag"),
        _addr("src", Buffer.OUT, "fp32 rows x (heads*hd)"),
        _addr("dst", Buffer.ACT, "codes [heads][rows][hd*bits/8] (fp16: [heads][rows][hd])"),
        _addr("param", Buffer.SCALE, "(fp16 scale, int16 zero) records [heads][hd/2^glog][rows]"),
    ],
    Opcode.VSMAX: [
        Field("rows", 12, "query rows", kind="count"),
        Field("cols", 16, "columns per row (the layout's, a whole number of tiles)",
              kind="count"),
        Field("valid", 16, "columns of row 0 that are not masked", kind="count"),
        Field("step", 8, "0: every row has `valid` columns; s: row r has valid + r // s "
              "(the causal mask)"),
        Field("tlog", 4, "0: row-major; t: tile-major as vstat's"),
        Field("colscale", 1, "1: multiply column c by record c's scale after normalizing",
              kind="flag"),
        _addr("src", Buffer.OUT, "fp32 scores rows x cols, replaced by the probabilities"),
        _addr("cs", Buffer.SCALE, "(fp16 scale, int16 zero) records [cols] (the V cache's)"),
    ],
    Opcode.VMV: [
        Field("rows", 12, "rows", kind="count"),
        Field("n", 16, "outputs per row", kind="count"),
        Field("k", 16, "reduction length", kind="count"),
        Field("trans", 1, "0: w is [n, k]; 1: w is [k, n]", kind="flag"),
        Field("accumulate", 1, "1: dst += result; 0: dst = result", kind="flag"),
        _addr("src", Buffer.OUT, "fp32 rows x k"),
        _addr("w", Buffer.WEIGHT, "fp16 matrix"),
        _addr("dst", Buffer.OUT, "fp32 rows x n"),
    ],
    Opcode.PACK: [
        Field("n", 16, "source rows (tokens)", kind="count"),
        Field("cols", 16, "columns taken from each row", kind="count"),
        Field("width", 16, "codes per source row", kind="count"),
        Field("col0", 16, "first column taken"),
        Field("bits", 4, "code width", kind="count"),
        Field("trans", 1, "0: W = the rows [n, cols]; 1: W = their transpose [cols, n]",
              kind="flag"),
        _addr("src", Buffer.WEIGHT, "b-bit codes, row-major [n, width], packed"),
        _addr("dst", Buffer.WEIGHT, "the PE array's uniform weight image of W"),
    ],
}

HEADER = [
    Field("op", 5, "opcode", enum=Opcode),
    Field("wait", TOKEN_BITS, "token mask: units to pop a token from before starting"),
    Field("signal", TOKEN_BITS, "token mask: units to push a token to when done"),
]
HEADER_BITS = sum(f.width for f in HEADER)


def _check_table():
    for op in Opcode:
        fields = FORMATS[op]
        names = [f.name for f in HEADER + fields]
        assert len(set(names)) == len(names), op
        assert HEADER_BITS + sum(f.width for f in fields) <= WORD_BITS, op
        for f in fields:
            if f.enum is not None:
                assert f.width == f.enum.as_shape().width, (op, f.name)


_check_table()


def layout(op):
    """The Amaranth layout of `op`'s word: header, fields, and a reserved pad to 128 bits."""
    members = {f.name: f.shape for f in HEADER + FORMATS[op]}
    used = HEADER_BITS + sum(f.width for f in FORMATS[op])
    if used < WORD_BITS:
        members["reserved"] = unsigned(WORD_BITS - used)
    return data.StructLayout(members)


LAYOUTS = {op: layout(op) for op in Opcode}


def field_max(op, name):
    """The largest value field `name` of `op` holds: limits elsewhere derive from this, never
    restate a width."""
    for f in FORMATS[op]:
        if f.name == name:
            return (1 << f.width) - 1
    raise KeyError(f"{op.name.lower()} has no field {name!r}")


# -- the Python view of one instruction ---------------------------------------------------------
@dataclass(frozen=True)
class Insn:
    """One decoded instruction: its opcode, token masks and field values (ints, or enum members
    for enumerated fields)."""
    op: Opcode
    args: dict = field(default_factory=dict)
    wait: int = 0
    signal: int = 0

    def __getattr__(self, name):
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def unit(self):
        return UNIT_OF[self.op]

    def __hash__(self):
        return hash((self.op, tuple(sorted(self.args.items())), self.wait, self.signal))


def _fail(index, op, fname, rule, value, where=""):
    what = f"insn {index}" if index is not None else "insn"
    name = f" ({op.name.lower()})" if op is not None else ""
    raise IsaError(f"{where}{what}{name}: `{fname}` must be {rule}, not {value}")


# Precomputed (name, offset, width, Field) per opcode for the fast codec; offsets are read off
# the Amaranth layouts so the codec and the RTL cannot disagree.
_CODEC = {}
for _op, _lay in LAYOUTS.items():
    _fields = {f.name: f for f in HEADER + FORMATS[_op]}
    _CODEC[_op] = [(name, m.offset, m.width, _fields.get(name)) for name, m in _lay]
_OP_MASK = (1 << HEADER[0].width) - 1
_OP_BY_VALUE = {op.value: op for op in Opcode}


def _check_value(index, op, f, value, config=None, args=None, where=""):
    """Validate one field value (already an int or enum member); return its integer encoding."""
    if f.enum is not None:
        if not isinstance(value, f.enum):
            try:
                value = f.enum(value)
            except ValueError:
                names = ", ".join(m.name.lower() for m in f.enum)
                _fail(index, op, f.name, f"one of {names}", value, where)
        return value.value
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(index, op, f.name, "an integer", repr(value), where)
    if f.kind == "flag" and value not in (0, 1):
        _fail(index, op, f.name, "0 or 1", value, where)
    if not 0 <= value < (1 << f.width):
        _fail(index, op, f.name, f"in [0, {(1 << f.width) - 1}] ({f.width} bits)", value, where)
    if f.kind == "count" and value < 1:
        _fail(index, op, f.name, "at least 1", value, where)
    if f.name in ("wait", "signal") and UNIT_OF.get(op) is not None:
        if value >> UNIT_OF[op].value & 1:
            _fail(index, op, f.name, f"free of the instruction's own unit "
                  f"({UNIT_OF[op].name.lower()})", _mask_text(value), where)
    if f.buffer is not None and config is not None:
        buf = f.buffer if isinstance(f.buffer, Buffer) else args.get(f.buffer)
        if isinstance(buf, int) and not isinstance(buf, Buffer):
            buf = Buffer(buf)
        if buf is not None:
            cap = config.sram.bytes(buf.name.lower())
            if value >= cap:
                _fail(index, op, f.name, f"inside the {buf.name.lower()} buffer "
                      f"({cap} bytes)", hex(value), where)
    return value


def check(insn, index=None, config=None, where=""):
    """Validate `insn` (every field present and in range; with `config`, every address and every
    DMA extent inside its scratchpad). Return its encoded word."""
    op = insn.op
    if not isinstance(op, Opcode):
        _fail(index, None, "op", "an opcode", op, where)
    known = {f.name for f in FORMATS[op]}
    extra = set(insn.args) - known
    if extra:
        _fail(index, op, sorted(extra)[0], f"one of the fields of {op.name.lower()} "
              f"({', '.join(f.name for f in FORMATS[op]) or 'none'})", "present", where)
    word = 0
    values = {"op": op, "wait": insn.wait, "signal": insn.signal, **insn.args}
    for name, offset, _width, f in _CODEC[op]:
        if f is None:        # reserved pad
            continue
        if name not in values and f.optional:
            values[name] = 0
        if name not in values:
            _fail(index, op, name, "given", "missing", where)
        word |= _check_value(index, op, f, values[name], config, values, where) << offset
    if config is not None and op in (Opcode.LOAD, Opcode.STORE):
        cap = config.sram.bytes(Buffer(values["buf"]).name.lower())
        end = values["sram"] + values["rows"] * values["row_bytes"]
        if end > cap:
            _fail(index, op, "rows", f"such that sram + rows*row_bytes <= {cap} "
                  f"(the {Buffer(values['buf']).name.lower()} buffer)", values["rows"], where)
    return word


def encode(insn, index=None, config=None):
    """The 128-bit word of `insn` (an int). Raises `IsaError` naming index and field."""
    return check(insn, index, config)


def decode(word, index=None):
    """The `Insn` of a 128-bit word. Raises `IsaError` for an illegal word, naming `index`."""
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < (1 << WORD_BITS):
        _fail(index, None, "word", f"a {WORD_BITS}-bit unsigned integer", word)
    opv = word & _OP_MASK
    op = _OP_BY_VALUE.get(opv)
    if op is None:
        _fail(index, None, "op", "an assigned opcode", opv)
    args = {}
    wait = signal = 0
    for name, offset, width, f in _CODEC[op]:
        raw = (word >> offset) & ((1 << width) - 1)
        if f is None:
            if raw:
                _fail(index, op, "reserved", "zero", hex(raw))
            continue
        if name == "op":
            continue
        if f.enum is not None:
            try:
                value = f.enum(raw)
            except ValueError:
                names = ", ".join(m.name.lower() for m in f.enum)
                _fail(index, op, name, f"one of {names}", raw)
        else:
            value = raw
            _check_value(index, op, f, value)
        if name == "wait":
            wait = value
        elif name == "signal":
            signal = value
        else:
            args[name] = value
    return Insn(op, args, wait, signal)


def to_bytes(words):
    """Little-endian 16-byte words, back to back (the binary program format)."""
    return b"".join(w.to_bytes(WORD_BYTES, "little") for w in words)


def from_bytes(blob, source="<bytes>"):
    """Words of a binary program; the length must be a whole number of words."""
    if len(blob) % WORD_BYTES:
        raise IsaError(f"{source}: length must be a multiple of {WORD_BYTES} bytes, "
                       f"not {len(blob)}")
    return [int.from_bytes(blob[i:i + WORD_BYTES], "little")
            for i in range(0, len(blob), WORD_BYTES)]


# -- text form ----------------------------------------------------------------------------------
def _mask_text(mask):
    names = [u.name.lower() for u in UNITS if mask >> u.value & 1]
    return ",".join(names) if names else "none"


def _parse_mask(text):
    if text == "none":
        return 0
    mask = 0
    for name in text.split(","):
        try:
            unit = Unit[name.upper()]
        except KeyError:
            raise ValueError(name) from None
        mask |= 1 << unit.value
    return mask


def format_insn(insn):
    """One line of assembly: `mnemonic field=value ... [wait=units] [signal=units]`."""
    parts = [insn.op.name.lower()]
    for f in FORMATS[insn.op]:
        v = insn.args.get(f.name, 0) if f.optional else insn.args[f.name]
        if f.optional and not v:
            continue
        if f.enum is not None:
            parts.append(f"{f.name}={f.enum(v).name.lower()}")
        elif f.buffer is not None or f.name == "dram":
            parts.append(f"{f.name}={v:#x}")
        else:
            parts.append(f"{f.name}={v}")
    if insn.wait:
        parts.append(f"wait={_mask_text(insn.wait)}")
    if insn.signal:
        parts.append(f"signal={_mask_text(insn.signal)}")
    return " ".join(parts)


def disassemble(words, numbered=False):
    """Assembly text of a list of words (decoding validates each one)."""
    lines = []
    for i, w in enumerate(words):
        text = format_insn(decode(w, i))
        lines.append(f"{i:6d}: {text}" if numbered else text)
    return "\n".join(lines) + ("\n" if lines else "")


_ASM_INT = re.compile(r"(0|-?[1-9][0-9]*|0[xX][0-9a-fA-F]+)\Z", re.ASCII)


def parse_line(line, index, where=""):
    """The `Insn` of one assembly line (comments after `#` or `;` already stripped)."""
    tokens = line.split()
    mnemonic = tokens[0]
    try:
        op = Opcode[mnemonic.upper()]
    except KeyError:
        names = ", ".join(o.name.lower() for o in Opcode)
        raise IsaError(f"{where}insn {index}: `mnemonic` must be one of {names}, "
                       f"not {mnemonic!r}") from None
    fields = {f.name: f for f in FORMATS[op]}
    args, wait, signal = {}, 0, 0
    for tok in tokens[1:]:
        key, eq, text = tok.partition("=")
        if not eq or not text:
            _fail(index, op, tok, "written as name=value", repr(tok), where)
        if key in ("wait", "signal"):
            try:
                mask = _parse_mask(text)
            except ValueError as e:
                units = ", ".join(u.name.lower() for u in UNITS)
                _fail(index, op, key, f"a comma-separated list of {units}", repr(str(e)), where)
            if key == "wait":
                wait = mask
            else:
                signal = mask
            continue
        f = fields.get(key)
        if f is None:
            _fail(index, op, key, f"one of the fields of {op.name.lower()} "
                  f"({', '.join(fields) or 'none'})", "present", where)
        if key in args:
            _fail(index, op, key, "given once", "repeated", where)
        if f.enum is not None:
            try:
                args[key] = f.enum[text.upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in f.enum)
                _fail(index, op, key, f"one of {names}", repr(text), where)
        else:
            if not _ASM_INT.match(text):      # int(text, 0) would take 1_0, +4, non-ASCII
                _fail(index, op, key, "an integer", repr(text), where)
            args[key] = int(text, 0)
    return Insn(op, args, wait, signal)


def assemble(text, config=None, source="<asm>"):
    """Words of an assembly program. With `config`, addresses are checked against the buffers.
    Errors name the source line, the instruction index, the field and the value."""
    words = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}: "
        insn = parse_line(line, len(words), where)
        words.append(check(insn, len(words), config, where))
    return words


# -- the reference page -------------------------------------------------------------------------
def reference_markdown():
    """`docs/isa.md`, generated from the field table (a test keeps the checked-in copy fresh)."""
    out = ["# bitlut instruction set", "",
           "Generated from `arch/isa.py` by `bitlut isa-doc`; do not edit by hand.", ""]
    out += [line.strip() for line in __doc__.strip().splitlines()[2:]]
    out += ["", f"Words are {WORD_BITS} bits, stored little-endian; fields are listed from bit 0.",
            "", "## Enumerations", ""]
    for e in (Opcode, Unit, Buffer, Mode, Deq, Stat, Ew):
        out.append(f"- `{e.__name__}` ({e.as_shape().width} bits): " + ", ".join(
            f"{m.name.lower()}={m.value}" for m in e))
    out += ["", "## Formats", ""]
    for op in Opcode:
        unit = UNIT_OF[op]
        out += [f"### `{op.name.lower()}` (opcode {op.value}, unit "
                f"{unit.name.lower() if unit else 'dispatch'})", "",
                "| bits | field | meaning |", "|---|---|---|"]
        docs = {f.name: f for f in HEADER + FORMATS[op]}
        for name, m in LAYOUTS[op]:
            f = docs.get(name)
            lo, hi = m.offset, m.offset + m.width - 1
            if f is None:
                meaning, label = "must be zero", "reserved"
            else:
                meaning, label = f.doc, name
                if f.kind == "count":
                    meaning += " (>= 1)"
                if f.buffer is not None:
                    b = f.buffer if isinstance(f.buffer, Buffer) else None
                    where = b.name.lower() if b else f"the `{f.buffer}` buffer"
                    meaning += f"; byte address in {where}"
                if f.enum is not None:
                    meaning += f"; `{f.enum.__name__}`"
            out.append(f"| {hi}:{lo} | `{label}` | {meaning} |")
        out.append("")
    return "\n".join(out)
