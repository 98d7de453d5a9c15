"""Lowering a whole LLaMA-family decoder block to one program (docs/block.md).

Ref: LLaMA (Touvron et al. 2023) §2; GQA (Ainslie et al. 2023); LUT Tensor Core (ISCA'25) §3.

The block's operators, in program order, each a section of one `ProgramBuilder` so that the
builder derives every token and the units overlap across sections:

    attn_norm   rmsnorm + quantize x            -> attn_in (int8 + row scales)
    qkv         gather (CLAQ permutation) + q_proj, k_proj, v_proj (compiler.lower)
    rope        q: rotate (the table pre-scaled by 1/sqrt(hd)) -> q_rot
                k: rotate, quantize into the KV format -> the cache; v: quantize -> the cache
    attention   per KV head and query chunk: quantize q, q·Kᵀ on the array (K repacked by
                `pack`) or the vector unit (fp16), masked softmax, p·V
    o_proj      quantize the heads' outputs + o_proj
    mlp_norm    residual add (h = x + o) + rmsnorm + quantize
    mlp         gate_proj, up_proj, silu(gate)·up + quantize, down_proj
    residual    out = h + down

Operators hand their results over through DRAM symbols (named `<operator>.<what>`); their
bytes are the report's activation bytes. Scratchpad regions are reused from one section to the
next (the builder orders the reuse with tokens), and alternate between two slots where a
section loops.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from arch import image as img
from arch import kv as kvmod
from arch.image import OUT, PARAM, SUMS
from arch.isa import MATMUL_OPCODE, Buffer, Deq, Ew, Mode, Opcode, Stat, field_max
from arch.program import Program
from compiler import tiling as tiling_mod
from compiler.builder import ProgramBuilder, Region
from compiler.lower import emit_layer
from compiler.plan import LoweringError, plan_layer
from compiler.tiling import dma_shape

#: The linear layers of a block, in program order (quant.model_shape.BLOCK_ROLES).
ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: The report's operators, in program order.
OPERATORS = ("attn_norm", "qkv", "rope", "attention", "o_proj", "mlp_norm", "mlp", "residual")
#: Rows one vector instruction may carry (the narrowest `rows` field among them).
MAX_ROWS = min(field_max(op, "rows") for op in (Opcode.VSTAT, Opcode.VNORM, Opcode.VQUANT,
                                                 Opcode.VEW, Opcode.VROPE, Opcode.VKVQ,
                                                 Opcode.VSMAX, Opcode.VMV, Opcode.GATHER,
                                                 Opcode.TBL))
DEFAULT_TILE = 64
#: K and V tiles in flight in an attention chunk: each needs a code slot, an image slot and a
#: record slot, so that the loads of the next tiles run ahead of the repack and the matmul.
SLOTS = 4
#: Token FIFOs shallower than this deadlock a block's attention (tests/test_block.py: a depth
#: of 2 deadlocks a decode chunk, where a head's query and record loads signal the vector unit
#: while its softmax waits to release the previous head's regions to them).
MIN_TOKEN_DEPTH = 3


@dataclass
class CompiledBlock:
    """A lowered block: the program, the plans of its linear layers, and where things are.

    Members: `program`; `plans` {role: Plan}; `ops` [(operator, first insn, last insn)] in
    program order; `kv` (`arch.kv.KVLayout`); `tokens`, `past` (tokens already cached), `tile`
    (tokens per attention tile); `report` (sizes, for `bitlut sim`); `batch` (sequences)."""
    program: Program
    plans: dict
    ops: list
    kv: object
    tokens: int
    past: int
    tile: int
    report: dict = field(default_factory=dict)
    batch: int = 1


def _pow2_at_least(n):
    return 1 << max(0, math.ceil(math.log2(n)))


def attention_tile(config):
    """Tokens per attention tile: a power of two that fills the array's lanes and the vector
    unit's (at least `DEFAULT_TILE`)."""
    return max(DEFAULT_TILE, _pow2_at_least(config.pe.cols), _pow2_at_least(
        config.timing.vector_lanes))


def _ceil64(n):
    return -(-n // 64) * 64


@dataclass(frozen=True)
class AttentionLayout:
    """Scratchpad regions of one attention chunk of `rows` query rows over `ncols` tokens
    (`tile` a tile); every region is a byte address, slots alternate where the chunk loops.

    out: q rows, the output rows, the scores (tile-major); scale: V's records, two K record
    slots, V's constant records, the row statistics; weight: two code slots, two image slots;
    table: the q tables of every K group, two p table slots, the sums; act: two slots."""
    rows: int
    ncols: int
    tile: int
    hd: int
    k_group: int
    table_entry: int        # bytes of one table's entries (E x entry bytes); 0: no tables
    group: int              # pe.group
    slots: int = SLOTS      # K/V tiles in flight (code, image and record slots)

    @property
    def q(self):
        return 0

    @property
    def o(self):
        return self.rows * self.hd * 4

    @property
    def scores(self):
        return 2 * self.rows * self.hd * 4

    def out_bytes(self):
        return self.scores + self.rows * self.ncols * 4

    # scale
    @property
    def vrec(self):
        return 0

    def krec(self, p):
        return _ceil64(self.ncols * 4) + p * _ceil64(self.tile * 4)

    @property
    def vconst(self):
        return self.krec(self.slots)

    @property
    def stats(self):
        return self.vconst + _ceil64(self.hd * 4)

    def amax(self):
        return self.stats

    def sx(self):
        return self.stats + _ceil64(self.rows * 4)

    def sp(self):
        return self.stats + 2 * _ceil64(self.rows * 4)

    def scale_bytes(self):
        return self.stats + 3 * _ceil64(self.rows * 4)

    # table
    def qtbl(self, j):
        return j * self.rows * (self.k_group // self.group) * self.table_entry

    def ptbl(self, p):
        return self.qtbl(self.hd // self.k_group) + p * self.rows * (self.tile // self.group) \
            * self.table_entry

    def sums(self, i):
        """Sums slot i: the q groups' (0 .. J-1), then two for p."""
        return _ceil64(self.ptbl(2)) + i * _ceil64(self.rows * 4)

    def table_bytes(self):
        return self.sums(self.hd // self.k_group + 2)


def attention_fits(config, shape, fmt, rows, ncols, tile):
    """None if `rows` query rows over `ncols` tokens fit every scratchpad, else the first
    buffer that is too small."""
    hd = shape.head_dim
    lay = _layout(config, shape, fmt, rows, ncols, tile)
    sram = config.sram
    need = {"out": lay.out_bytes(), "scale": lay.scale_bytes() if not fmt.fp16 else
            _ceil64(rows * 4) * 3}
    if fmt.fp16:
        need["weight"] = SLOTS * tile * hd * 2
    else:
        need["weight"] = 2 * SLOTS * _weight_slot(config, shape, fmt, tile)
        need["act"] = 2 * max(rows * ncols, rows * hd)
        need["acc"] = 2 * rows * max(tile, hd) * 4
        need["table"] = lay.table_bytes()
    for buf, nbytes in need.items():
        if nbytes > sram.bytes(buf):
            return buf
    return None


def _weight_slot(config, shape, fmt, tile):
    """Bytes of one WEIGHT slot: a tile's codes or its image, whichever is larger."""
    hd = shape.head_dim
    row = kvmod.KVLayout(fmt, 1, hd, tile).row_bytes
    wimg = max(img.weight_layout(config, "uniform", tile, fmt.k_group(hd), fmt.bits).nbytes,
               img.weight_layout(config, "uniform", hd, tile, fmt.bits).nbytes)
    return _ceil64(max(tile * row, wimg))


def _layout(config, shape, fmt, rows, ncols, tile):
    entry = config.table_entries * config.table_entry_bytes if config.pe.kind == "lut" else 0
    kg = shape.head_dim if fmt.fp16 else fmt.k_group(shape.head_dim)
    return AttentionLayout(rows, ncols, tile, shape.head_dim, kg, entry, config.pe.group)


def attention_rows(config, shape, fmt, ncols, tile):
    """The most query rows (a whole number of GQA groups) one attention chunk over `ncols`
    tokens takes: 0 when not even one group fits."""
    g = shape.heads // shape.kv_heads
    best = 0
    r = g
    while r <= MAX_ROWS and attention_fits(config, shape, fmt, r, ncols, tile) is None:
        best = r
        r += g
    return best


def ctx_capacity(config, shape, fmt, tile=None):
    """The largest context (cached plus new tokens) whose attention this config can run: one
    query token's rows of its GQA group over the whole (tile-padded) context must fit the
    scratchpads (the scores of a row live in the out buffer whole: no online softmax)."""
    tile = tile or attention_tile(config)
    lo, hi = 0, 1 << 16
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if attention_rows(config, shape, fmt, mid * tile, tile):
            lo = mid
        else:
            hi = mid - 1
    return lo * tile


def check_block(shape, config, tokens, past, kv_fmt, where="--ctx"):
    """Refuse in one line (`LoweringError`) what this config cannot run."""
    if config.pe.act_quant != "token":
        raise LoweringError(f"pe.act_quant must be token for a whole block (the vector unit "
                            f"quantizes per token), not {config.pe.act_quant}")
    if shape.head_dim % 2 or shape.head_dim > field_max(Opcode.VROPE, "hd"):
        raise LoweringError(f"head_dim must be even and at most "
                            f"{field_max(Opcode.VROPE, 'hd')}, not {shape.head_dim}")
    if config.queues.token_depth < MIN_TOKEN_DEPTH:
        raise LoweringError(f"queues.token_depth must be at least {MIN_TOKEN_DEPTH} for a whole "
                            f"block (its loads run ahead of the softmax by two tokens), not "
                            f"{config.queues.token_depth}")
    reach = ctx_capacity(config, shape, kv_fmt)
    if past + tokens > reach:
        tile = attention_tile(config)
        ncols = -(-(past + tokens) // tile) * tile
        buf = attention_fits(config, shape, kv_fmt, shape.heads // shape.kv_heads, ncols, tile)
        raise LoweringError(f"{where}: a context of {past + tokens} tokens must be at most "
                            f"{reach}, the reach of {config.source}'s scratchpads (its {buf} "
                            f"buffer, {config.sram.bytes(buf) // 1024} KiB, cannot hold one "
                            f"query row's attention over it: the scores live whole on chip; "
                            f"longer contexts need an online softmax, not built)")


def lower_block(shape, layers, norms, config, tokens, past, kv_fmt, image=True, tile=None,
                plans=None, past_cache=None, rope=None, ops=OPERATORS, linear=True,
                chunks=None, batch=1):
    """Compile one decoder block for `tokens` new tokens after `past` cached ones.

    `shape` (quant.model_shape.ModelShape or alike), `layers` {role: QLayer}, `norms` (attention
    and MLP norm weights [hidden]), `kv_fmt` (`arch.kv.KVFormat`, checked by
    `arch.kv.check_format`). `image=False` leaves weights, norms and the cache out of the DRAM
    image (timing only). `past_cache` (sim.block_golden.PastKV, or one per sequence) writes
    the cached tokens; `rope` (cs_k, cs_q) the host's tables [tokens, hd].

    `batch` sequences of `tokens` new tokens each, all after `past` cached ones in caches of
    their own (a batched decode): their rows share the linear layers (row b·tokens + t), each
    attends to its own cache (the `kv.*` symbols hold the sequences' caches one after another).

    Parts of a block, for timing them apart (`sim.block_driver` samples a long prefill so):
    `ops` the operators to emit, `linear=False` leaves the linear layers out of them (their
    gathers and quantizations stay), `chunks` [(KV head, first query token)] the attention
    chunks to emit (None: all). Raises `LoweringError`."""
    check_block(shape, config, tokens, past, kv_fmt)
    tile = tile or attention_tile(config)
    plans = plans or {r: plan_layer(layers[r], config) for r in ROLES}
    if not 1 <= batch * tokens <= MAX_ROWS * 16:
        raise LoweringError(f"--batch x tokens must be in [1, {MAX_ROWS * 16}], not "
                            f"{batch * tokens}")
    prog = Program(words=[], meta={"block": True, "tokens": tokens, "past": past,
                                   "batch": batch, "config": config.tag, "kv": kv_fmt.name,
                                   "tile": tile})
    e = _BlockEmitter(shape, plans, config, prog, tokens, past, kv_fmt, tile, image, batch)
    e.emit_linear, e.chunks = linear, chunks
    e.inputs(norms, past_cache, rope)
    e.emit(ops)
    program = e.b.finish()
    prog.meta["ops"] = e.ops
    return CompiledBlock(program, plans, e.ops, e.kv, tokens, past, tile,
                         {"instructions": len(program.words)}, batch)


def _identity(plan):
    """True when a layer's lowered activations are its input as it is (no permutation, no
    padding): it reads the operator's codes directly, without a gather."""
    return plan.kp == plan.k and bool(np.all(plan.src_col == np.arange(plan.k)))


def query_chunk(config, shape, tokens, past, kv_fmt, tile=None):
    """Query tokens per attention chunk of a block of `tokens` after `past` (the chunks start
    at 0, q, 2q, ...)."""
    tile = tile or attention_tile(config)
    ncols = -(-(past + tokens) // tile) * tile
    return attention_rows(config, shape, kv_fmt, ncols, tile) // (shape.heads // shape.kv_heads)


class _BlockEmitter:
    """Emits the sections of the module docstring; one method per operator."""

    def __init__(self, shape, plans, cfg, prog, tokens, past, kv_fmt, tile, image, batch=1):
        self.s, self.plans, self.cfg, self.prog = shape, plans, cfg, prog
        self.T, self.L, self.fmt, self.tile, self.image = tokens, past, kv_fmt, tile, image
        self.B, self.M = batch, batch * tokens       # sequences; rows of the linear layers
        self.seq = 0                                 # the sequence being emitted
        self.b = ProgramBuilder(cfg, prog)
        self.lanes = cfg.timing.vector_lanes
        self.G = shape.heads // shape.kv_heads
        self.ops = []
        ctx_max = -(-(past + tokens) // tile) * tile
        self.kv = kvmod.KVLayout(kv_fmt, shape.kv_heads, shape.head_dim, ctx_max)
        self.lut = cfg.pe.kind == "lut"
        self.slot = 0
        self.rings = {}

    # -- helpers ----------------------------------------------------------------------------
    def alloc(self, name, shape, dtype):
        self.prog.alloc(name, shape, dtype)
        return name

    def addr(self, sym, off=0):
        return self.prog.symbols[sym].addr + off

    @staticmethod
    def R(buf, addr, nbytes):
        return Region(buf, addr, addr + nbytes)

    def D(self, sym, off, nbytes):
        a = self.addr(sym, off)
        return Region("dram", a, a + nbytes)

    def dma(self, op, buf, sram, sym, off, rows, row_bytes, stride):
        """A 2-D DMA between scratchpad `buf` at `sram` and DRAM symbol `sym` at `off`."""
        span = (rows - 1) * stride + row_bytes
        mem = self.R(buf, sram, rows * row_bytes)
        dram = self.D(sym, off, span)
        reads, writes = ([dram], [mem]) if op is Opcode.LOAD else ([mem], [dram])
        return self.b.emit(op, reads=reads, writes=writes, buf=buf, sram=sram,
                           dram=self.addr(sym, off), rows=rows, row_bytes=row_bytes,
                           dram_stride=stride)

    def load(self, buf, sram, sym, off, rows, row_bytes, stride=None):
        return self.dma(Opcode.LOAD, buf, sram, sym, off, rows, row_bytes, stride or row_bytes)

    def store(self, buf, sram, sym, off, rows, row_bytes, stride=None):
        return self.dma(Opcode.STORE, buf, sram, sym, off, rows, row_bytes, stride or row_bytes)

    def load_flat(self, buf, sram, sym, off, nbytes):
        """A contiguous copy of `nbytes` in rows the DMA's `row_bytes` holds."""
        rows, rb = dma_shape(nbytes)
        return self.load(buf, sram, sym, off, rows, rb)

    def vec(self, op, reads, writes, **fields):
        return self.b.emit(op, reads=reads, writes=writes, **fields)

    def section(self, name, fn, *args):
        first = len(self.b)
        fn(*args)
        self.ops.append((name, first, len(self.b) - 1))

    # -- the DRAM image -------------------------------------------------------------------------
    def inputs(self, norms, past_cache, rope):
        s, M = self.s, self.M
        self.alloc("x", (M, s.hidden), "float32")
        self.alloc("out", (M, s.hidden), "float32")
        self._symbols()
        for name, w in zip(("norm.attn", "norm.mlp"), norms, strict=True):
            self.alloc(name, (s.hidden,), "float32")
            if self.image:
                self.prog.write(name, np.asarray(w, np.float32))
        self.alloc("norm.consts", (2,), "float32")
        self.prog.write("norm.consts", np.array([1.0 / s.hidden, s.norm_eps], np.float32))
        self.alloc("rope.k", (M, s.head_dim), "float32")
        self.alloc("rope.q", (M, s.head_dim), "float32")
        if rope is not None:          # every sequence's rows at the same positions
            self.prog.write("rope.k", np.tile(rope[0], (self.B, 1)))
            self.prog.write("rope.q", np.tile(rope[1], (self.B, 1)))
        for name, nbytes in self.kv.symbols().items():
            self.alloc(f"kv.{name}", (self.B * nbytes,), "uint8")
        if not self.fmt.fp16:
            # the host initializes every record with the codes' zero (and scale 0), so that a
            # tile's tokens past the context are well-formed operands (their scores are masked)
            z = kvmod.zero_point(self.fmt, self.lut)
            for name in ("kp", "vp"):
                view = self.prog.view(f"kv.{name}").view(PARAM)
                view["zero"] = z
        if past_cache is not None and self.L:
            pasts = past_cache if isinstance(past_cache, (list, tuple)) else [past_cache]
            for b, past in enumerate(pasts):
                self.seq = b
                self._write_past(past)
            self.seq = 0
        if not self.fmt.fp16:
            rec = np.zeros(s.head_dim, PARAM)
            rec["scale"] = 1.0
            rec["zero"] = kvmod.zero_point(self.fmt, self.lut)
            self.alloc("kv.vconst", (rec.nbytes,), "uint8")
            self.prog.write("kv.vconst", rec.view(np.uint8))

    def _write_past(self, past):
        """The host's cache of the `past` tokens (`sim.block_golden.PastKV`), in the layout
        of `arch.kv`."""
        lay, L = self.kv, self.L
        for h in range(self.s.kv_heads):
            for which in ("k", "v"):
                view = self.prog.view(f"kv.{which}")
                at = self.seq_off(which) + h * lay.head_bytes
                if self.fmt.fp16:
                    rows = getattr(past, f"{which}16")[h].astype(np.float16).view(np.uint8)
                else:
                    rows = kvmod.encode_rows(getattr(past, f"{which}_codes")[h], self.fmt.bits)
                view[at:at + L * lay.row_bytes] = rows.reshape(-1)
            if not self.fmt.fp16:
                z = kvmod.zero_point(self.fmt, self.lut)
                kp = self.prog.view("kv.kp")
                for j in range(lay.k_groups):
                    rec = np.zeros(L, PARAM)
                    rec["scale"], rec["zero"] = past.k_scales[h, j], z
                    o = self.seq_off("kp") + lay.k_param_offset(h, j, 0)
                    kp[o:o + rec.nbytes] = rec.view(np.uint8)
                rec = np.zeros(L, PARAM)
                rec["scale"], rec["zero"] = past.v_scales[h], z
                o = self.seq_off("vp") + lay.v_param_offset(h, 0)
                self.prog.view("kv.vp")[o:o + rec.nbytes] = rec.view(np.uint8)

    def seq_off(self, name):
        """Byte offset of the current sequence's cache in symbol `kv.<name>`."""
        return self.seq * self.kv.symbols()[name]

    # -- the block --------------------------------------------------------------------------
    def emit(self, ops):
        s = self.s
        sections = {
            "attn_norm": (self.rowwise, s.hidden, ["x"], None, None, "norm.attn", "attn_in"),
            "qkv": (self.linears, ("q_proj", "k_proj", "v_proj"), "attn_in"),
            "rope": (self.rope_and_cache,),
            "attention": (self.attention,),
            "o_proj": (self.quantized_linear, "attn", "o_proj", s.heads * s.head_dim),
            "mlp_norm": (self.rowwise, s.hidden, ["x", "o_proj.y"], Ew.ADD, "h", "norm.mlp",
                         "mlp_in"),
            "mlp": (self.mlp,),
            "residual": (self.rowwise, s.hidden, ["h", "down_proj.y"], Ew.ADD, "out", None,
                         None),
        }
        for name in OPERATORS:
            if name in ops:
                self.section(name, *sections[name])

    def _symbols(self):
        """Every symbol an operator hands to the next: allocated up front, so that any
        subset of the operators compiles."""
        s, T = self.s, self.M
        pad = max(p.kp for p in self.plans.values())
        for name, k in (("attn_in", s.hidden), ("o_proj_in", s.heads * s.head_dim),
                        ("mlp_in", s.hidden), ("down_in", s.intermediate)):
            self.alloc(f"{name}.xq", (T * k + pad,), "int8")    # room for a gather's over-read
            self.alloc(f"{name}.sx", (T,), "float32")
        for role, plan in self.plans.items():
            self.alloc(f"{role}.y", (T, plan.n), "float32")
            if not _identity(plan):
                self.alloc(f"{role}.x", (T, plan.kp), "int8")
        for name, n in (("q_rot", s.heads * s.head_dim), ("attn", s.heads * s.head_dim),
                        ("h", s.hidden), ("act", s.intermediate)):
            self.alloc(name, (T, n), "float32")

    # -- row-wise vector operators ---------------------------------------------------------
    def _chunking(self, n):
        """(row chunk, column chunk, resident): whole rows stay in the out buffer (each input
        in one half) when they fit, passing through every step without a DRAM round trip;
        otherwise rows stream through in column chunks (a whole number of lanes, so the lane
        accumulators continue across chunks) and are re-read from DRAM between passes."""
        half = self.cfg.sram.bytes("out") // 2
        w_cap = self.cfg.sram.bytes("scale") // 4 // OUT.itemsize    # norm weights of a chunk
        act_cap = self.cfg.sram.bytes("act") // 2                     # int8 codes of a chunk
        # a row's statistics in the other half of the scale buffer: lane sums, amax, scale
        row_cap = self.cfg.sram.bytes("scale") // 2 // ((self.lanes + 2) * OUT.itemsize) - 1
        if n * OUT.itemsize <= half and n <= w_cap and n <= act_cap:
            rc = min(self.M, MAX_ROWS, half // (n * OUT.itemsize), act_cap // n, row_cap)
            return max(1, rc), n, True
        rc = max(1, min(self.M, 8, row_cap))
        cc = min(n, w_cap, half // 2 // (rc * OUT.itemsize), act_cap // rc)
        cc = cc // self.lanes * self.lanes
        if cc < self.lanes:
            raise LoweringError(f"the out buffer ({self.cfg.sram.out_kib} KiB) must hold two "
                                f"{self.lanes}-column chunks of {rc} rows")
        return rc, cc, False

    def rowwise(self, n, inputs, combine, keep, norm, quant):
        """Row-wise vector work over [T, n] fp32 rows: `inputs` (one or two DRAM symbols),
        combined by `combine` (`Ew`) when two, stored to `keep` when given, RMSNorm by the
        weights `norm` when given, and quantized into `quant` (`<name>.xq`, `.sx`) when given;
        without `quant` the result is stored to `keep`."""
        rc, cc, resident = self._chunking(n)
        half = self.cfg.sram.bytes("out") // 2
        f4 = OUT.itemsize
        tmp = None
        if not resident and norm is not None and quant is not None:
            tmp = self.alloc(f"{quant}.tmp", (self.M, n), "float32")
        for r0 in range(0, self.M, rc):
            rows = min(rc, self.M - r0)
            self._rowwise_rows(n, r0, rows, cc, resident, half, f4, inputs, combine, keep, norm,
                               quant, tmp)

    def _rowwise_rows(self, n, r0, rows, cc, resident, half, f4, inputs, combine, keep, norm,
                      quant, tmp):
        lanes = self.lanes
        ssq = 0
        amax = ssq + rows * lanes * f4
        sxa = amax + rows * f4
        consts = sxa + rows * f4
        w_at = consts + 4 * f4
        chunks = [(c0, min(cc, n - c0)) for c0 in range(0, n, cc)]
        stride = n * f4
        A = lambda k: (k % 2) * (half // 2) if not resident else 0  # noqa: E731
        B = lambda k: half + A(k)  # noqa: E731
        cur = inputs[0] if combine is None else keep
        # pass 1: load (and combine), keep, statistics
        for k, (c0, w) in enumerate(chunks):
            a = A(k)
            nb = rows * w * f4
            self.load(Buffer.OUT, a, inputs[0], (r0 * n + c0) * f4, rows, w * f4, stride)
            if combine is not None:
                b = B(k)
                self.load(Buffer.OUT, b, inputs[1], (r0 * n + c0) * f4, rows, w * f4, stride)
                self.vec(Opcode.VEW, [self.R(Buffer.OUT, a, nb), self.R(Buffer.OUT, b, nb)],
                         [self.R(Buffer.OUT, a, nb)], rows=rows, n=w, fn=combine, a=a, b=b,
                         dst=a)
                if keep is not None:
                    self.store(Buffer.OUT, a, keep, (r0 * n + c0) * f4, rows, w * f4, stride)
            elif keep is not None and quant is None and norm is None:
                self.store(Buffer.OUT, a, keep, (r0 * n + c0) * f4, rows, w * f4, stride)
            if norm is not None:
                self.vec(Opcode.VSTAT, [self.R(Buffer.OUT, a, nb)],
                         [self.R(Buffer.SCALE, ssq, rows * lanes * f4)], rows=rows, n=w,
                         stat=Stat.SSQ, first=int(k == 0), tlog=0, src=a, acc=ssq)
            elif quant is not None:
                self._amax(a, rows, w, amax, k == 0)
        if norm is None and quant is None:
            return
        if norm is not None:
            self.load(Buffer.SCALE, consts, "norm.consts", 0, 1, 2 * f4)
            for k, (c0, w) in enumerate(chunks):
                a = A(k)
                nb = rows * w * f4
                if not resident:
                    self.load(Buffer.OUT, a, cur, (r0 * n + c0) * f4, rows, w * f4, stride)
                self.load(Buffer.SCALE, w_at, norm, c0 * f4, 1, w * f4)
                self.vec(Opcode.VNORM, [self.R(Buffer.OUT, a, nb),
                                        self.R(Buffer.SCALE, w_at, w * f4),
                                        self.R(Buffer.SCALE, ssq, rows * lanes * f4),
                                        self.R(Buffer.SCALE, consts, 2 * f4)],
                         [self.R(Buffer.OUT, a, nb)], rows=rows, n=w, src=a, w=w_at, acc=ssq,
                         consts=consts)
                if quant is not None:
                    self._amax(a, rows, w, amax, k == 0)
                    if not resident:
                        self.store(Buffer.OUT, a, tmp, (r0 * n + c0) * f4, rows, w * f4, stride)
            cur = tmp
        # pass 3: quantize
        act = self.cfg.sram.bytes("act") // 2
        for k, (c0, w) in enumerate(chunks):
            a = A(k)
            nb = rows * w * f4
            if not resident:
                self.load(Buffer.OUT, a, cur, (r0 * n + c0) * f4, rows, w * f4, stride)
            q = (k % 2) * (act // 2)
            if rows * w > act // 2:
                raise LoweringError(f"the act buffer ({self.cfg.sram.act_kib} KiB) must hold "
                                    f"two {rows} x {w} int8 chunks")
            self.vec(Opcode.VQUANT, [self.R(Buffer.OUT, a, nb),
                                     self.R(Buffer.SCALE, amax, rows * f4)],
                     [self.R(Buffer.ACT, q, rows * w), self.R(Buffer.SCALE, sxa, rows * f4)],
                     rows=rows, n=w, tlog=0, src=a, dst=q, amax=amax, sx=sxa)
            self.store(Buffer.ACT, q, f"{quant}.xq", r0 * n + c0, rows, w, n)
        self.store(Buffer.SCALE, sxa, f"{quant}.sx", r0 * f4, 1, rows * f4)

    def _amax(self, a, rows, w, amax, first, tlog=0):
        f4 = OUT.itemsize
        self.vec(Opcode.VSTAT, [self.R(Buffer.OUT, a, rows * w * f4)],
                 [self.R(Buffer.SCALE, amax, rows * f4)], rows=rows, n=w, stat=Stat.AMAX,
                 first=int(first), tlog=tlog, src=a, acc=amax)

    # -- linear layers ---------------------------------------------------------------------
    def linears(self, roles, source):
        for role in roles:
            self.linear(role, source)

    def linear(self, role, source):
        """`role`'s layer on the quantized `source` (`<source>.xq`, `.sx`): its lowered
        activations gathered on chip when the plan permutes or pads them, then the layer's
        loop nest (compiler.lower)."""
        plan = self.plans[role]
        x = f"{source}.xq"
        if not _identity(plan):
            x = self.gather(role, plan, source)
        if not self.emit_linear:
            return
        tile = tiling_mod.choose(plan, self.cfg, self.M)
        emit_layer(self.b, plan, self.cfg, self.M, tile, self.image, prefix=f"{role}.",
                   inputs={"x": x, "sx": f"{source}.sx", "y": f"{role}.y"})

    def gather(self, role, plan, source):
        """The layer's lowered activations [T, kp] from the operator's [T, k] codes: a row
        block read kp wide at a stride of k (a padding column reads a neighbour's code, which
        meets a zero weight), permuted by `gather` (the plan's `src_col`), stored."""
        k, kp = plan.k, plan.kp
        if plan.kind == "uniform" and kp != k:
            raise LoweringError(f"layer `{plan.name}`: a uniform layer with padded k-steps "
                                f"cannot take on-chip activations")
        dst = f"{role}.x"
        idx = np.where(plan.src_col >= 0, plan.src_col, 0).astype(np.uint16)
        isym = self.alloc(f"{role}.gather", (kp,), "uint16")
        self.prog.write(isym, idx)
        self.load_flat(Buffer.CODEBOOK, 0, isym, 0, kp * 2)
        act = self.cfg.sram.bytes("act")
        rg = max(1, min(self.M, MAX_ROWS, act // (2 * kp)))
        if act < 2 * kp:
            raise LoweringError(f"the act buffer ({self.cfg.sram.act_kib} KiB) must hold two "
                                f"rows of {kp} codes for `{plan.name}`'s gather")
        for r0 in range(0, self.M, rg):
            rows = min(rg, self.M - r0)
            self.load(Buffer.ACT, 0, f"{source}.xq", r0 * k, rows, kp, k)
            self.vec(Opcode.GATHER, [self.R(Buffer.ACT, 0, rows * kp),
                                     self.R(Buffer.CODEBOOK, 0, kp * 2)],
                     [self.R(Buffer.ACT, rows * kp, rows * kp)],
                     rows=rows, cols=kp, src=0, dst=rows * kp, idx=0)
            self.store(Buffer.ACT, rows * kp, dst, r0 * kp, rows, kp)
        return dst

    def quantized_linear(self, src, role, k):
        self.rowwise(k, [src], None, None, None, f"{role}_in")
        self.linear(role, f"{role}_in")

    def mlp(self):
        s = self.s
        self.linears(("gate_proj", "up_proj"), "mlp_in")
        self.rowwise(s.intermediate, ["gate_proj.y", "up_proj.y"], Ew.SILU_MUL, "act", None,
                     "down_in")
        self.linear("down_proj", "down_in")

    # -- RoPE and the cache write -----------------------------------------------------------
    def rope_and_cache(self):
        s, T, f4 = self.s, self.T, OUT.itemsize
        hd = s.head_dim
        for which, heads in (("q", s.heads), ("k", s.kv_heads), ("v", s.kv_heads)):
            half = self.cfg.sram.bytes("out") // 2
            hc = max(1, min(heads, half // (hd * f4), field_max(Opcode.VROPE, "heads")))
            rc = max(1, min(T, MAX_ROWS, half // (hc * hd * f4)))
            for b in range(self.B):          # a chunk's new rows go to one sequence's cache
                self.seq = b
                for t0 in range(0, T, rc):
                    rows = min(rc, T - t0)
                    for h0 in range(0, heads, hc):
                        nh = min(hc, heads - h0)
                        self._rope_chunk(which, heads, b * T + t0, rows, h0, nh)
        self.seq = 0

    def _rope_chunk(self, which, heads, r0, rows, h0, nh):
        f4, hd = OUT.itemsize, self.s.head_dim
        p = self.slot % 2
        self.slot += 1
        half = self.cfg.sram.bytes("out") // 2
        a = p * half
        nb = rows * nh * hd * f4
        width = heads * hd
        self.load(Buffer.OUT, a, f"{which}_proj.y", (r0 * width + h0 * hd) * f4, rows,
                  nh * hd * f4, width * f4)
        if which != "v":
            cs = p * (rows * hd * f4)
            self.load(Buffer.SCALE, cs, f"rope.{'q' if which == 'q' else 'k'}", r0 * hd * f4, 1,
                      rows * hd * f4)
            self.vec(Opcode.VROPE, [self.R(Buffer.OUT, a, nb),
                                    self.R(Buffer.SCALE, cs, rows * hd * f4)],
                     [self.R(Buffer.OUT, a, nb)], rows=rows, heads=nh, hd=hd, step=1, src=a,
                     cs=cs)
        if which == "q":
            self.store(Buffer.OUT, a, "q_rot", (r0 * width + h0 * hd) * f4, rows,
                       nh * hd * f4, width * f4)
            return
        self._cache_write(which, a, rows, r0, h0, nh)

    def _cache_write(self, which, a, rows, r0, h0, nh):
        """`vkvq` of [rows, nh heads] (the block's rows r0 .., of the current sequence) into
        its cache's rows L + (r0 - its first row) .. of heads h0 .."""
        lay, fmt, hd, f4 = self.kv, self.fmt, self.s.head_dim, OUT.itemsize
        act_half = self.cfg.sram.bytes("act") // 2
        dst = (self.slot % 2) * act_half
        rb = lay.row_bytes
        group = hd if (which == "v" or fmt.fp16) else fmt.k_group(hd)
        j = hd // group
        param = 2 * rows * hd * f4 + (self.slot % 2) * nh * j * rows * PARAM.itemsize
        writes = [self.R(Buffer.ACT, dst, nh * rows * rb)]
        if not fmt.fp16:
            writes.append(self.R(Buffer.SCALE, param, nh * j * rows * PARAM.itemsize))
        if nh * rows * rb > act_half:
            raise LoweringError("the act buffer must hold a chunk of the cache's new rows")
        self.vec(Opcode.VKVQ, [self.R(Buffer.OUT, a, rows * nh * hd * f4)], writes, rows=rows,
                 heads=nh, hd=hd, bits=fmt.bits or 1, glog=int(math.log2(group)),
                 lut=int(self.lut), fp16=int(fmt.fp16), src=a, dst=dst, param=param)
        t0 = self.L + r0 - self.seq * self.T
        self.store(Buffer.ACT, dst, f"kv.{which}",
                   self.seq_off(which) + h0 * lay.head_bytes + t0 * rb, nh, rows * rb,
                   lay.head_bytes)
        if fmt.fp16:
            return
        if which == "k":
            self.store(Buffer.SCALE, param, "kv.kp",
                       self.seq_off("kp") + lay.k_param_offset(h0, 0, t0), nh * j,
                       rows * PARAM.itemsize, lay.ctx_max * PARAM.itemsize)
        else:
            self.store(Buffer.SCALE, param, "kv.vp",
                       self.seq_off("vp") + lay.v_param_offset(h0, t0), nh,
                       rows * PARAM.itemsize, lay.ctx_max * PARAM.itemsize)

    # -- attention ------------------------------------------------------------------------------
    def attention(self):
        s, T = self.s, self.T
        tq = self.query_chunk()
        for b in range(self.B):
            self.seq = b
            for h in range(s.kv_heads):
                for t0 in range(0, T, tq):
                    if self.chunks is None or (h, t0) in self.chunks:
                        self._attention_chunk(h, t0, min(tq, T - t0))
        self.seq = 0

    def query_chunk(self):
        return query_chunk(self.cfg, self.s, self.T, self.L, self.fmt, self.tile)

    def _attention_chunk(self, h, t0, tq):
        """One KV head's attention for query tokens t0 .. t0+tq: rows (t, g) of its GQA
        group, over the tokens up to the last row's (causal) context."""
        s, G, hd, f4, tile = self.s, self.G, self.s.head_dim, OUT.itemsize, self.tile
        R = tq * G
        ncols = -(-(self.L + t0 + tq) // tile) * tile
        ntiles = ncols // tile
        lay = _layout(self.cfg, s, self.fmt, R, ncols, tile)
        qd = s.heads * hd
        self._load_queries(h, t0, tq, lay)
        if self.fmt.fp16:
            self._scores_fp16(h, lay, ntiles)
        else:
            self._scores_int(h, lay, ntiles)
        scores = self.R(Buffer.OUT, lay.scores, R * ncols * f4)
        reads = [scores]
        if not self.fmt.fp16:
            self.load_flat(Buffer.SCALE, lay.vrec, "kv.vp",
                           self.seq_off("vp") + self.kv.v_param_offset(h, 0),
                           ncols * PARAM.itemsize)
            reads.append(self.R(Buffer.SCALE, lay.vrec, ncols * PARAM.itemsize))
        self.vec(Opcode.VSMAX, reads, [scores], rows=R, cols=ncols, valid=self.L + t0 + 1,
                 step=G, tlog=int(math.log2(tile)), colscale=int(not self.fmt.fp16),
                 src=lay.scores, cs=lay.vrec)
        if self.fmt.fp16:
            self._pv_fp16(h, lay, ntiles)
        else:
            self._pv_int(h, lay, ntiles)
        row = self.seq * self.T + t0
        self.store(Buffer.OUT, lay.o, "attn", (row * qd + h * G * hd) * f4, tq, G * hd * f4,
                   qd * f4)

    def _load_queries(self, h, t0, tq, lay):
        """The rows (t, g) of KV head h's query heads: row-major [R, hd] (fp16, or K's scale
        group the whole head), else k-step-major [hd / group][R][group], the layout in which
        each K scale group's columns are one block for `tbl` or the array (`vstat` and `vquant`
        read it tile-major with tiles of a group)."""
        s, G, hd, f4 = self.s, self.G, self.s.head_dim, OUT.itemsize
        qd = s.heads * hd
        group = lay.k_group
        t0 += self.seq * self.T                 # the sequence's rows in the block
        if self.fmt.fp16 or group == hd:
            self.load(Buffer.OUT, lay.q, "q_rot", (t0 * qd + h * G * hd) * f4, tq, G * hd * f4,
                      qd * f4)
            return
        R = tq * G
        for j in range(hd // group):
            for t in range(tq):
                self.load(Buffer.OUT, lay.q + (j * R + t * G) * group * f4, "q_rot",
                          ((t0 + t) * qd + h * G * hd + j * group) * f4, G, group * f4, hd * f4)

    def _next(self):
        self.slot += 1
        return self.slot % 2

    def _ring(self, name, n=SLOTS):
        """The next of `n` slots of the region `name`, round robin."""
        i = self.rings.get(name, -1) + 1
        self.rings[name] = i
        return i % n

    def _kv_tile(self, which, h, jt, wslot, nbytes):
        """Load token tile jt of head h's K or V rows into WEIGHT at `wslot`."""
        lay = self.kv
        self.load_flat(Buffer.WEIGHT, wslot, f"kv.{which}",
                       self.seq_off(which) + h * lay.head_bytes + jt * self.tile * lay.row_bytes,
                       nbytes)

    def _scores_fp16(self, h, lay, ntiles):
        R, hd, tile, f4 = lay.rows, lay.hd, lay.tile, OUT.itemsize
        wbytes = tile * hd * 2
        for jt in range(ntiles):
            w = self._ring("w") * wbytes
            self._kv_tile("k", h, jt, w, wbytes)
            dst = lay.scores + jt * R * tile * f4
            self.vec(Opcode.VMV, [self.R(Buffer.OUT, lay.q, R * hd * f4),
                                  self.R(Buffer.WEIGHT, w, wbytes)],
                     [self.R(Buffer.OUT, dst, R * tile * f4)],
                     rows=R, n=tile, k=hd, trans=0, accumulate=0, src=lay.q, w=w, dst=dst)

    def _pv_fp16(self, h, lay, ntiles):
        R, hd, tile, f4 = lay.rows, lay.hd, lay.tile, OUT.itemsize
        wbytes = tile * hd * 2
        o = self.R(Buffer.OUT, lay.o, R * hd * f4)
        for jt in range(ntiles):
            w = self._ring("w") * wbytes
            self._kv_tile("v", h, jt, w, wbytes)
            src = lay.scores + jt * R * tile * f4
            self.vec(Opcode.VMV, [self.R(Buffer.OUT, src, R * tile * f4),
                                  self.R(Buffer.WEIGHT, w, wbytes)] + ([o] if jt else []),
                     [o], rows=R, n=hd, k=tile, trans=1, accumulate=int(jt > 0), src=src, w=w,
                     dst=lay.o)

    def _quantize_block(self, R, n, src, tlog, dst, amax, sx):
        """vstat amax + vquant of [R, n] fp32 at `src` (layout `tlog`) into int8 at `dst`."""
        f4 = OUT.itemsize
        self._amax(src, R, n, amax, True, tlog)
        self.vec(Opcode.VQUANT, [self.R(Buffer.OUT, src, R * n * f4),
                                 self.R(Buffer.SCALE, amax, R * f4)],
                 [self.R(Buffer.ACT, dst, R * n), self.R(Buffer.SCALE, sx, R * f4)],
                 rows=R, n=n, tlog=tlog, src=src, dst=dst, amax=amax, sx=sx)

    def _operand(self, R, width, act, sums, tbl):
        """The array's operand of the [R, width] int8 block at `act`: LUT tables (and row
        sums), or row sums for the zero correction. Returns (matmul source, its bytes)."""
        cfg = self.cfg
        g = cfg.pe.group
        srange = self.R(Buffer.TABLE, sums, R * SUMS.itemsize)
        if self.lut:
            tb = img.table_bytes(cfg, Mode.UNIFORM, R, width // g, 1)
            self.vec(Opcode.TBL, [self.R(Buffer.ACT, act, R * width)],
                     [self.R(Buffer.TABLE, tbl, tb), srange], mode=Mode.UNIFORM, bits=1,
                     rows=R, ngroups=width // g, act=act, tbl=tbl, cb=0, sums=sums)
            return tbl, tb
        self.vec(Opcode.VSUM, [self.R(Buffer.ACT, act, R * width)], [srange], rows=R,
                 cols=width, act=act, sums=sums)
        return act, R * width

    def _matmul(self, R, n, width, src, src_bytes, wgt, wbytes, acc):
        lut = self.lut
        self.vec(MATMUL_OPCODE[self.cfg.pe.kind],
                 [self.R(Buffer.TABLE if lut else Buffer.ACT, src, src_bytes),
                  self.R(Buffer.WEIGHT, wgt, wbytes)],
                 [self.R(Buffer.ACC, acc, R * n * 4)], rows=R, n=n,
                 kgroups=width // self.cfg.pe.group, bits=self.fmt.bits, mode=Mode.UNIFORM,
                 accumulate=0, src=src, wgt=wgt, dst=acc)

    def _pack(self, n, cols, col0, trans, src, src_bytes, dst):
        """`pack` of columns col0 .. col0+cols of the [n, head_dim] code tile at `src` into
        the array's image of W (transposed with `trans`); returns the image's bytes."""
        bits = self.fmt.bits
        shape = (cols, n) if trans else (n, cols)
        lay = img.weight_layout(self.cfg, "uniform", *shape, bits)
        self.vec(Opcode.PACK, [self.R(Buffer.WEIGHT, src, src_bytes)],
                 [self.R(Buffer.WEIGHT, dst, lay.nbytes)], n=n, cols=cols,
                 width=self.s.head_dim, col0=col0, bits=bits, trans=int(trans), src=src,
                 dst=dst)
        return lay.nbytes

    def _deq(self, R, n, acc, param, pbytes, sums, out, first):
        f4 = OUT.itemsize
        reads = [self.R(Buffer.ACC, acc, R * n * 4), self.R(Buffer.SCALE, param, pbytes),
                 self.R(Buffer.TABLE, sums, R * SUMS.itemsize)]
        if not first:
            reads.append(self.R(Buffer.OUT, out, R * n * f4))
        self.vec(Opcode.VDEQ, reads, [self.R(Buffer.OUT, out, R * n * f4)], rows=R, n=n,
                 deq=Deq.LUT if self.lut else Deq.ZERO, first=int(first), acc=acc, out=out,
                 param=param, sums=sums, rowscale=0)

    def _vscale(self, R, n, out, scale):
        f4 = OUT.itemsize
        region = self.R(Buffer.OUT, out, R * n * f4)
        self.vec(Opcode.VSCALE, [region, self.R(Buffer.SCALE, scale, R * f4)], [region],
                 rows=R, n=n, add=0, out=out, scale=scale, corr=0)

    def _wslots(self, p):
        """(codes, image) addresses of WEIGHT slot p."""
        q = _weight_slot(self.cfg, self.s, self.fmt, self.tile)
        return p * q, (SLOTS + p) * q

    def _scores_int(self, h, lay, ntiles):
        """q·Kᵀ on the array: q quantized k-step-major (one K scale group a tile of the
        layout), its tables or sums once, then per token tile: the codes, per group a `pack`
        (none on a MAC array with one group: the codes are its image), the records, the matmul
        and `vdeq` into the scores tile; then `vscale` by q's row scales."""
        kvl, R, hd, tile, f4 = self.kv, lay.rows, lay.hd, lay.tile, OUT.itemsize
        group = lay.k_group
        J = hd // group
        act = self.cfg.sram.bytes("act") // 2
        qq = self._next() * act
        self._quantize_block(R, hd, lay.q, int(math.log2(group)), qq, lay.amax(), lay.sx())
        operands = [self._operand(R, group, qq + j * R * group, lay.sums(j), lay.qtbl(j))
                    for j in range(J)]
        cbytes = tile * kvl.row_bytes
        rbytes = tile * PARAM.itemsize
        for jt in range(ntiles):
            codes, _ = self._wslots(self._ring("codes"))
            self._kv_tile("k", h, jt, codes, cbytes)
            out = lay.scores + jt * R * tile * f4
            for j in range(J):
                p = self._ring("image")
                _, image = self._wslots(p)
                if self.cfg.pe.kind == "mac" and J == 1:
                    image, wbytes = codes, cbytes
                else:
                    wbytes = self._pack(tile, group, j * group, False, codes, cbytes, image)
                rec = lay.krec(p)
                self.load_flat(Buffer.SCALE, rec, "kv.kp",
                               self.seq_off("kp") + kvl.k_param_offset(h, j, jt * tile),
                               rbytes)
                acc = (p % 2) * R * max(tile, hd) * 4
                src, nbytes = operands[j]
                self._matmul(R, tile, group, src, nbytes, image, wbytes, acc)
                self._deq(R, tile, acc, rec, rbytes, lay.sums(j), out, j == 0)
            self._vscale(R, tile, out, lay.sx())

    def _pv_int(self, h, lay, ntiles):
        """p·V on the array: p quantized tile-major (a token tile a k-step), then per tile its
        tables or sums, V's codes repacked transposed (Vᵀ is the weight), the matmul and
        `vdeq` (constant records: scale 1, the codes' zero) into the output rows; then
        `vscale` by p's row scales."""
        kvl, R, hd, tile = self.kv, lay.rows, lay.hd, lay.tile
        J = hd // lay.k_group
        act = self.cfg.sram.bytes("act") // 2
        pq = self._next() * act
        self._quantize_block(R, lay.ncols, lay.scores, int(math.log2(tile)), pq, lay.amax(),
                             lay.sp())
        self.load_flat(Buffer.SCALE, lay.vconst, "kv.vconst", 0, hd * PARAM.itemsize)
        cbytes = tile * kvl.row_bytes
        for jt in range(ntiles):
            p = self._next()
            src, nbytes = self._operand(R, tile, pq + jt * R * tile, lay.sums(J + p),
                                        lay.ptbl(p))
            codes, _ = self._wslots(self._ring("codes"))
            _, image = self._wslots(self._ring("image"))
            self._kv_tile("v", h, jt, codes, cbytes)
            wbytes = self._pack(tile, hd, 0, True, codes, cbytes, image)
            acc = p * R * max(tile, hd) * 4
            self._matmul(R, hd, tile, src, nbytes, image, wbytes, acc)
            self._deq(R, hd, acc, lay.vconst, hd * PARAM.itemsize, lay.sums(J + p), lay.o,
                      jt == 0)
        self._vscale(R, hd, lay.o, lay.sp())


def write_inputs(compiled, x):
    """Write the residual stream `x [T, hidden]` into the block's image."""
    compiled.program.write("x", np.asarray(x, np.float32))
