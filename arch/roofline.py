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

GPU: the same layer as a dense GEMM with dequantized weights, `time = max(2*ops / (peak *
compute_eff), bytes / (bandwidth * bandwidth_eff)) + launch_floor`, with the efficiency terms
calibrated by the user from a few measurements (`arch/gpus.yaml`).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

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
