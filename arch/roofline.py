"""Roofline estimates: the closed-form bound of a layer on an accelerator config or on a GPU.

Accelerator: `ops` is the layer's multiply-accumulates, M*N*K. The PE array's peak in MACs per
cycle follows from its kind and the weight format:
- LUT, uniform b bits: rows*cols lanes each resolve g weights of one bit plane per cycle, so
  rows*cols*g/b MACs per cycle; LUT, codebook: one lookup resolves g columns of any width,
  rows*cols*g per cycle (g = index_bits // b).
- bit-serial: rows*cols*group/b (b = weight bits, or the centroid width for codebooks).
- MAC: rows*cols.
The memory side is the minimum DRAM traffic: the weights once (as stored, with codebooks,
scales and outliers), the activations once, the outputs once. The bound is the larger of the
two times; `roofline_fraction` of a simulation is bound / simulated cycles.

Decoder block (docs/block.md): the attention of T new tokens after L cached ones is q·Kᵀ and
p·V over the causal triangle, 2 · heads · head_dim · (T·L + T(T+1)/2) MACs, run by the PE array
at the KV format's code width (K and Vᵀ are its uniform weights) or, for fp16, by the vector
unit at `timing.vector_lanes` MACs per cycle; its DRAM bytes are the cache's L rows read and
the T new rows written (`arch.kv.bytes_per_token` each). Its q and its output are q_proj's output
and o_proj's input, counted there. `block_bound` adds the linear layers' and the attention's
bounds (no overlap between operators) and splits the bytes into weights, KV cache and
activations; `model_bound` multiplies the block out and adds the lm_head.

GPU: the same layer as a dense GEMM with dequantized weights, `time = max(2*ops / (peak *
compute_eff), bytes / (bandwidth * bandwidth_eff)) + launch_floor`, with the efficiency terms
calibrated by the user from a few measurements (`arch/gpus.yaml`).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from arch import kv
from bitlut.errors import UserError

GPU_FILE = Path(__file__).parent / "gpus.yaml"


def peak_macs_per_cycle(config, kind, bits):
    """MACs per cycle of the PE array for weights of `kind` ("uniform" | "codebook") and
    `bits` bits (the average for mixed precision)."""
    pe = config.pe
    lanes = pe.rows * pe.cols
    if pe.kind == "mac":
        return lanes
    if pe.kind == "lut":
        if kind == "codebook":
            return lanes * max(1, pe.index_bits // max(1, round(bits)))
        return lanes * pe.group / bits
    planes = bits if kind == "uniform" else pe.centroid_bits
    return lanes * pe.group / planes


def peak_weights_per_cycle(config, kind="uniform", bits=None):
    """Distinct weights the PE array consumes per cycle: `peak_macs_per_cycle` over the token rows
    that share each weight. The LUT and bit-serial arrays' rows are token rows reading one weight
    stream (cols*group/b weights of b bits per cycle); each PE of the weight-stationary MAC array
    holds a weight of its own (rows*cols). `bits` defaults to the narrowest width the config
    supports."""
    pe = config.pe
    bits = min(pe.weight_bits) if bits is None else bits
    sharing = 1 if pe.kind == "mac" else pe.rows
    return peak_macs_per_cycle(config, kind, bits) / sharing


@dataclass(frozen=True)
class Bound:
    ops: int                 # MACs
    dram_bytes: int
    compute_cycles: float
    memory_cycles: float

    @property
    def cycles(self):
        return max(self.compute_cycles, self.memory_cycles)

    @property
    def bound(self):
        return "compute" if self.compute_cycles >= self.memory_cycles else "memory"

    @property
    def intensity(self):
        """MACs per DRAM byte."""
        return self.ops / self.dram_bytes if self.dram_bytes else math.inf


def stored_weight_bytes(layer):
    """Bytes of a `quant.layer.QLayer`'s weights as stored: codes, codebooks or scales and
    zeros, the bit-width map and the outlier list (its `bits_per_weight`)."""
    n, k = layer.shape
    return math.ceil(layer.bits_per_weight(outliers=True) * n * k / 8)


# Columns per activation scale group under `pe.act_quant: token_group` when the caller does not
# know the layer's k-steps: the compiler's default CLAQ block (and the usual uniform group).
ACT_GROUP_COLS = 128


def layer_bound(config, m, n, k, kind, bits, weight_bytes, scale_groups=None):
    """The roofline of one layer: `bits` is the weight width, or an array of per-column widths
    (mixed precision: each width's columns run at that width's peak); `weight_bytes` is the
    stored size of the weights (codes, codebooks or scales, outliers). `scale_groups` is the
    number of fp32 activation scales per token row: 1 (`pe.act_quant` token, smooth), or the
    layer's k-steps under token_group (default ceil(k / ACT_GROUP_COLS))."""
    ops = m * n * k
    if scale_groups is None:
        grouped = config.pe.act_quant == "token_group"
        scale_groups = math.ceil(k / ACT_GROUP_COLS) if grouped else 1
    # int8 X, fp32 row scales, fp32 Y
    dram = weight_bytes + m * k + 4 * m * scale_groups + 4 * m * n
    widths = np.atleast_1d(np.asarray(bits))
    if widths.size == 1:
        compute = ops / peak_macs_per_cycle(config, kind, float(widths[0]))
    else:
        values, counts = np.unique(widths, return_counts=True)
        compute = sum(m * n * int(c) / peak_macs_per_cycle(config, kind, float(b))
                      for b, c in zip(values, counts, strict=True))
    memory = dram / config.dram_bytes_per_cycle
    return Bound(ops, dram, compute, memory)


# -- the decoder block -------------------------------------------------------------------------
def attention_macs(q_dim, ctx, tokens=1):
    """MACs of q·Kᵀ and p·V together for `tokens` new tokens after `ctx` cached ones, each
    product `q_dim` (heads x head_dim) MACs per (row, attended token): row t attends to
    ctx + t + 1 tokens (causal, itself included). The triangle, not the tiles a program pads
    it to."""
    return 2 * q_dim * (tokens * ctx + tokens * (tokens + 1) // 2)


def attention_peak(config, kv_fmt):
    """MACs per cycle of the attention's products for the `arch.kv.KVFormat` `kv_fmt`: the PE
    array's at the codes' width (the uniform-weight product, K and Vᵀ as the weights), or the
    vector unit's `vector_lanes` for fp16 (`vmv`: one fp32 multiply-add per lane a cycle)."""
    if kv_fmt.fp16:
        return config.timing.vector_lanes
    return peak_macs_per_cycle(config, "uniform", kv_fmt.bits)


def attention_bound(config, shape, ctx, kv_fmt, tokens=1):
    """The roofline of one block's attention (module docstring) for `tokens` new tokens after
    `ctx` cached ones: decode is tokens = 1, a causal prefill from an empty cache ctx = 0.
    `shape` has `heads`, `kv_heads` and `head_dim` (`quant.model_shape.ModelShape`)."""
    return attention_bound_of(config, shape.heads * shape.head_dim,
                              kv.bytes_per_token(kv_fmt, shape.kv_heads, shape.head_dim),
                              ctx, kv_fmt, tokens)


def attention_bound_of(config, q_dim, token_bytes, ctx, kv_fmt, tokens=1):
    """`attention_bound` from the two sizes it needs: `q_dim` (heads x head_dim) and
    `token_bytes`, the KV cache bytes of one token of the block (`arch.kv.bytes_per_token`, as
    a `bitlut sim` report records it)."""
    ops = attention_macs(q_dim, ctx, tokens)
    dram = (ctx + tokens) * token_bytes
    return Bound(ops, dram, ops / attention_peak(config, kv_fmt),
                 dram / config.dram_bytes_per_cycle)


def attention_name(kv_fmt):
    """The attention's name in tables and figures: it says the KV format."""
    return f"attention {kv_fmt.name} KV"


#: The categories of DRAM bytes, as `sim.block_driver` splits them.
CATEGORIES = ("weights", "kv", "activations")


@dataclass(frozen=True)
class BlockBound:
    """The roofline of one decoder block for `tokens` new tokens.

    Members: `tokens`; `ops` {name: `Bound`} in program order (the linear layers by role,
    "attention" after v_proj); `dram` {category: bytes}: the weights as stored, the KV cache
    read and written, the activations (the linear layers' inputs, row scales and outputs).
    The block's cycles are its operators' bounds added: the bound of running them one after
    another."""
    tokens: int
    ops: dict
    dram: dict

    @property
    def cycles(self):
        return sum(b.cycles for b in self.ops.values())

    @property
    def dram_bytes(self):
        return sum(self.dram.values())

    @property
    def kv_share(self):
        """The KV cache's fraction of the block's DRAM bytes."""
        return self.dram["kv"] / self.dram_bytes if self.dram_bytes else 0.0


def block_bound(config, shape, layers, ctx, kv_fmt, tokens=1):
    """The roofline of one decoder block: `layers` {role: `quant.layer.QLayer`} (the seven
    linear layers, `quant.model_shape.block_layers`), each bounded by `layer_bound` at M =
    `tokens`, and the attention (`attention_bound`) after v_proj."""
    ops, dram = {}, dict.fromkeys(CATEGORIES, 0)
    for role, layer in layers.items():
        n, k = layer.shape
        weights = stored_weight_bytes(layer)
        b = layer_bound(config, tokens, n, k, layer.kind, layer.bits, weights)
        ops[role] = b
        dram["weights"] += weights
        dram["activations"] += b.dram_bytes - weights
        if role == "v_proj":
            ops["attention"] = attention_bound(config, shape, ctx, kv_fmt, tokens)
            dram["kv"] += ops["attention"].dram_bytes
    if "attention" not in ops:
        raise ValueError(f"layers must hold a v_proj, not only {', '.join(layers)}")
    return BlockBound(tokens, ops, dram)


@dataclass(frozen=True)
class ModelBound:
    """The roofline of the whole model for `tokens` new tokens: `block` (`BlockBound`) times
    `blocks`, plus the lm_head and the embedding rows. Members: `tokens`, `blocks`, `block`,
    `lm_head` (`Bound`), `cycles`, `dram` {category: bytes}, `cycle_ns`."""
    tokens: int
    blocks: int
    block: BlockBound
    lm_head: Bound
    cycles: float
    dram: dict
    cycle_ns: float

    @property
    def latency_s(self):
        return self.cycles * self.cycle_ns * 1e-9

    @property
    def tokens_per_s(self):
        return self.tokens / self.latency_s if self.cycles else math.inf

    @property
    def dram_bytes_per_token(self):
        return {k: v / self.tokens for k, v in self.dram.items()}

    @property
    def kv_share(self):
        total = sum(self.dram.values())
        return self.dram["kv"] / total if total else 0.0


def model_bound(config, shape, layers, ctx, kv_fmt, tokens=1, lm_head_bits=8, blocks=None):
    """The whole model (`shape.blocks` blocks, or `blocks`): the block of `block_bound` that
    many times, the lm_head [vocab, hidden] for the last token at `lm_head_bits` bits a weight
    (8: as `bitlut sim` runs it; a checkpoint holds it in 16), and the `tokens` embedding rows
    read (fp16), as `sim.block_driver.model_totals` counts them."""
    blocks = shape.blocks if blocks is None else blocks
    block = block_bound(config, shape, layers, ctx, kv_fmt, tokens)
    lm_weights = math.ceil(lm_head_bits * shape.vocab * shape.hidden / 8)
    lm = layer_bound(config, 1, shape.vocab, shape.hidden, "uniform", lm_head_bits, lm_weights)
    embed = 2 * shape.hidden * tokens
    dram = {k: v * blocks for k, v in block.dram.items()}
    dram["weights"] += lm_weights
    dram["activations"] += lm.dram_bytes - lm_weights + embed
    cycles = blocks * block.cycles + lm.cycles + embed / config.dram_bytes_per_cycle
    return ModelBound(tokens, blocks, block, lm, cycles, dram, config.cycle_ns)


# -- GPUs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPU:
    """A GPU for side-by-side estimates. Peaks are dense (no sparsity), per dtype in TFLOP/s or
    TOP/s; the efficiency terms are calibrated from measurements."""
    name: str
    peak_tflops: dict            # dtype -> dense peak, e.g. {"fp16": 989.0, "int8": 1979.0}
    bandwidth_gbps: float        # HBM, GB/s
    compute_eff: float = 0.7     # achievable fraction of peak on large GEMMs
    bandwidth_eff: float = 0.8   # achievable fraction of HBM bandwidth (streaming)
    launch_floor_us: float = 5.0 # kernel launch and tail latency per layer
    source: str = ""

    def layer_seconds(self, m, n, k, weight_bytes, dtype="fp16"):
        peak = self.peak_tflops.get(dtype)
        if peak is None:
            raise UserError(f"{self.name}: dtype must be one of {', '.join(self.peak_tflops)}, "
                            f"not {dtype!r}")
        act_bytes = 2 * m * k + 2 * m * n
        t_compute = 2 * m * n * k / (peak * 1e12 * self.compute_eff)
        t_memory = (weight_bytes + act_bytes) / (self.bandwidth_gbps * 1e9 * self.bandwidth_eff)
        return max(t_compute, t_memory) + self.launch_floor_us * 1e-6


def load_gpus(path=GPU_FILE):
    raw = yaml.safe_load(Path(path).read_text())
    gpus = {}
    for name, d in raw.items():
        try:
            gpus[name] = GPU(name=name, **d)
        except TypeError as e:
            raise UserError(f"{path}: `{name}` must have the GPU fields, not {e}") from None
    return gpus
