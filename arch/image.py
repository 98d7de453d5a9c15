"""The memory image, defined once: what the compiler writes into DRAM and what every backend reads
back from the scratchpads (DESIGN.md section 4: "the memory image is a contract like the ISA").

The compiler encodes with this module (`WeightLayout.encode`, `param_records`,
`block_param_records`, `outlier_records`); the functional executor, the cycle model and the RTL
testbench decode with it (`WeightLayout.words`, `WeightLayout.decode`, the record dtypes); a
round-trip test (`tests/test_image.py`) holds the two directions together, as `tests/test_isa.py`
does for instruction words.

Everything is little-endian. Packed values are `arch.packing`'s: `width`-bit values back to back,
LSB first, which is the order in which the RTL shifts them out.

Weight images (one k-step of `cols` lowered columns for `n` outputs; `g` columns per group,
`kgroups = cols / g`; `lanes = pe.cols` outputs per tile, `tiles = ceil(n / lanes)`, the last tile
padded with zero codes):

- `planes` (lut and bitserial, uniform): g-bit index words in order (tile, group, plane, lane);
  bit i of the word of plane p is bit p of the code of column group*g + i. A symmetric LUT array
  stores the offline-inverted half-table index (`arch.numerics.invert_index`) above the sign in
  bit 0 (LUT Tensor Core Eq. 6); the bit-serial array takes the plane words as they are.
- `indices` (lut, codebook): (g*b)-bit indices in order (tile, group, lane), column i's code in
  bits i*b.. of the index.
- `codes` (mac, and bit-serial codebook): b-bit codes, row-major [n, cols]; codebook codes are
  expanded to centroids on chip by `cbx`.

Records in the scale and outlier buffers:

- `PARAM` (4 bytes, one per output channel and k-step, uniform weights): fp16 scale (the `.q`
  file's own precision) and an int16 zero. On the LUT array the zero is stored as
  `z' = 2z + 1 - 2^b`, so `vdeq` computes `P = (acc - z'·Σx) >> 1` for {-1,+1} planes
  (`arch.isa.Deq`); on the other arrays it is z itself.
- `BLOCK_PARAM` (4 bytes, one per codebook block): the fp32 block scale of the fixed-point
  centroids.
- `OUTLIER` (8 bytes): output row n and lowered column k (relative to the tile and k-step), the
  fp16 value, a pad. `vout` applies them in list order: the float32 sum order is the contract.

Scratchpad layouts (row-major; `E` entries per table, `table_entries`):

- `tbl` uniform: act int8 [rows, ngroups*g] -> tables [rows, ngroups, E] of `table_dtype` and
  int32 sums [rows]. Full table T[idx] = sum_i x_i (2 bit_i(idx) - 1); the half table stores
  H[j] = T[(j << 1) | 1] (LUT Tensor Core Eq. 4-5).
- `tbl` codebook (b = `bits`, g = index_bits // b): act int8 [rows, ngroups*g], centroids
  [ngroups*g, 2^b] of `config.centroid_dtype` -> tables [rows, ngroups, 2^(g*b)],
  T[c] = sum_i x_i C_i[c_i], c_i = bits i*b.. of the index.
- `lmma` reads tables and a `planes` or `indices` weight image; acc int32 [rows, n]:
  uniform acc = sum_groups sum_p T[idx_p] << p, codebook acc = sum_groups T[idx].
- `bsmm` and `mma` read int8 activations [rows, kgroups*g] and a `planes` / `codes` image, or in
  codebook mode the centroids [n, kgroups*g] that `cbx` wrote.
- `cbx`: `codes` [n, cols] -> centroids [n, cols]; `gather`: int8 [rows, cols] with uint16
  indices [cols].
- `vdeq`: acc int32 [rows, n], `PARAM` [n] (or one `BLOCK_PARAM`), int32 sums [rows] -> fp32 out
  [rows, n]. With `rowscale` (`pe.act_quant: token_group`) the k-step's fp32 activation scales
  [rows] follow the records directly (`rowscale_offset`). `vsum`: int8 [rows, cols] -> int32
  sums [rows].
- `vout`: `OUTLIER` records, int8 act with row stride `k`, fp32 correction O with row stride `n`.
  `vscale`: out = (out + O) * s_row, or out * s_row, with fp32 row scales [rows].

This is internal code (the compiler and the executors call it): a bad argument raises
`ValueError`.
"""

from dataclasses import dataclass

import numpy as np

from arch import packing
from arch.isa import PE_KIND_OF, Mode, Opcode
from arch.numerics import invert_index, restore_index

# -- records ------------------------------------------------------------------------------------
PARAM = np.dtype([("scale", "<f2"), ("zero", "<i2")])
BLOCK_PARAM = np.dtype([("scale", "<f4")])
OUTLIER = np.dtype([("n", "<u2"), ("k", "<u2"), ("v", "<f2"), ("pad", "<u2")])

# -- scratchpad element types -------------------------------------------------------------------
ACT = np.dtype("i1")            # quantized activations
SUMS = np.dtype("<i4")          # per-row activation sums (zero-point correction)
ACC = np.dtype("<i4")           # accumulators
OUT = np.dtype("<f4")           # outputs and the outlier correction
ROW_SCALE = np.dtype("<f4")     # per-row activation scales
GATHER_INDEX = np.dtype("<u2")  # gather's column indices

FORMATS = ("uniform", "codebook")
ENCODINGS = ("planes", "indices", "codes")


def table_dtype(config):
    """Dtype of one stored table entry."""
    return np.dtype(f"<i{config.table_entry_bytes}")


def table_entries(config, mode, bits):
    """Entries per table: `config.table_entries` in uniform mode, 2^(g*b) in codebook mode."""
    if Mode(mode) is Mode.UNIFORM:
        return config.table_entries
    return 1 << (config.codebook_group(bits) * bits)


def table_bytes(config, mode, rows, ngroups, bits):
    """Bytes of the tables one `tbl` writes for `rows` token rows of `ngroups` groups."""
    return rows * ngroups * table_entries(config, mode, bits) * config.table_entry_bytes


def group_of(config, fmt, bits):
    """Columns per group of a weight image: `pe.group` (the LUT table width, the bit-serial lane
    width, 1 on the MAC array), or on the LUT array in codebook mode the columns whose codes
    share one index."""
    if config.pe.kind == "lut" and fmt == "codebook":
        return config.codebook_group(bits)
    return config.pe.group


# -- weight images ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightLayout:
    """The weight image of one k-step: `cols` lowered columns (a multiple of `g`) of `n` outputs.

    Members: `pe` (PE kind), `fmt` ("uniform" | "codebook"), `n`, `cols`, `bits` (code width),
    `g` (columns per group), `lanes` (outputs per tile), `symmetric` (LUT half tables)."""
    pe: str
    fmt: str
    n: int
    cols: int
    bits: int
    g: int
    lanes: int
    symmetric: bool = False

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"`fmt` must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if self.encoding != "codes" and self.cols % self.g:
            raise ValueError(f"`cols` must be a multiple of g = {self.g}, not {self.cols}")

    @property
    def encoding(self):
        """`planes`, `indices` or `codes` (the module docstring's table)."""
        if self.fmt == "uniform" and self.pe in ("lut", "bitserial"):
            return "planes"
        if self.fmt == "codebook" and self.pe == "lut":
            return "indices"
        return "codes"

    @property
    def kgroups(self):
        return self.cols // self.g

    @property
    def tiles(self):
        return -(-self.n // self.lanes)

    @property
    def value_bits(self):
        """Width of one packed value."""
        return {"planes": self.g, "indices": self.g * self.bits, "codes": self.bits}[
            self.encoding]

    @property
    def count(self):
        """Packed values in the image."""
        lanes = self.tiles * self.lanes
        return {"planes": lanes * self.kgroups * self.bits, "indices": lanes * self.kgroups,
                "codes": self.n * self.cols}[self.encoding]

    @property
    def nbits(self):
        return self.count * self.value_bits

    @property
    def nbytes(self):
        return packing.packed_bytes(self.count, self.value_bits)

    def encode(self, codes):
        """uint8 bytes of codes [n, cols] (each below 2^bits; padding columns 0)."""
        codes = np.asarray(codes)
        if codes.shape != (self.n, self.cols):
            raise ValueError(f"`codes` must have shape {(self.n, self.cols)}, not {codes.shape}")
        codes = codes.astype(np.uint8)
        enc = self.encoding
        if enc == "codes":
            return packing.pack(codes, self.bits)
        g = self.g
        c = codes.reshape(self.n, self.kgroups, g)
        if enc == "planes":
            words = np.zeros((self.n, self.kgroups, self.bits), np.uint8)
            for p in range(self.bits):
                for i in range(g):
                    words[:, :, p] |= ((c[:, :, i] >> p) & 1) << i
            if self.pe == "lut" and self.symmetric:
                sign, stored = invert_index(words, g)
                words = (sign | stored << 1).astype(np.uint8)
        else:
            words = np.zeros((self.n, self.kgroups), np.uint8)
            for i in range(g):
                words |= c[:, :, i] << (self.bits * i)
        return packing.pack(self._lane_major(words), self.value_bits)

    def _lane_major(self, words):
        """Order [n, a, (b)] words as (tile, a, (b), lane), the last tile padded with zeros."""
        padded = np.zeros((self.tiles * self.lanes,) + words.shape[1:], words.dtype)
        padded[:self.n] = words
        padded = padded.reshape((self.tiles, self.lanes) + words.shape[1:])
        return np.moveaxis(padded, 1, -1).ravel()

    def words(self, raw):
        """The values as the datapath reads them, int64: `planes` [n, kgroups, bits] (as
        stored: the sign in bit 0 on a symmetric LUT array), `indices` [n, kgroups], `codes`
        [n, cols]."""
        raw = np.asarray(raw, np.uint8)
        if len(raw) < self.nbytes:
            raise ValueError(f"`raw` must hold {self.nbytes} bytes, not {len(raw)}")
        v = packing.unpack(raw[:self.nbytes], self.count, self.value_bits)
        enc = self.encoding
        if enc == "codes":
            return v.reshape(self.n, self.cols)
        if enc == "planes":
            v = v.reshape(self.tiles, self.kgroups, self.bits, self.lanes).transpose(0, 3, 1, 2)
            return v.reshape(self.tiles * self.lanes, self.kgroups, self.bits)[:self.n]
        v = v.reshape(self.tiles, self.kgroups, self.lanes).transpose(0, 2, 1)
        return v.reshape(self.tiles * self.lanes, self.kgroups)[:self.n]

    def decode(self, raw):
        """The codes [n, cols] int64 that `encode` was given."""
        w = self.words(raw)
        enc, g = self.encoding, self.g
        if enc == "codes":
            return w
        col = np.arange(g)
        if enc == "planes":
            if self.pe == "lut" and self.symmetric:
                w = restore_index(w & 1, w >> 1, g)
            bits = (w[..., None] >> col) & 1                              # [n, kg, bits, g]
            codes = (bits << np.arange(self.bits)[:, None]).sum(axis=2)   # [n, kg, g]
        else:
            codes = (w[..., None] >> (self.bits * col)) & ((1 << self.bits) - 1)
        return codes.reshape(self.n, self.cols)


def weight_layout(config, fmt, n, cols, bits):
    """The `WeightLayout` of `n` outputs x `cols` lowered columns of `bits`-bit codes on
    `config`'s PE array."""
    pe = config.pe
    return WeightLayout(pe.kind, fmt, n, cols, bits, group_of(config, fmt, bits), pe.cols,
                        pe.symmetric)


def matmul_layout(config, op, mode, n, kgroups, bits):
    """The weight layout that matmul instruction `op` (`lmma`, `bsmm`, `mma`) with these fields
    reads: the opcode, not the config, fixes the encoding. Codebook `bsmm` and `mma` read the
    centroids `cbx` wrote instead: None."""
    pe = config.pe
    fmt = "uniform" if Mode(mode) is Mode.UNIFORM else "codebook"
    if fmt == "codebook" and op is not Opcode.LMMA:
        return None
    g = config.codebook_group(bits) if fmt == "codebook" else pe.group
    return WeightLayout(PE_KIND_OF[op], fmt, n, kgroups * g, bits, g, pe.cols, pe.symmetric)


def codes_layout(n, cols, bits):
    """Packed b-bit codes [n, cols], row-major (what `cbx` expands)."""
    return WeightLayout("mac", "codebook", n, cols, bits, 1, 1)


# -- records ------------------------------------------------------------------------------------
def lut_zero(zeros, bits):
    """The zero as the LUT array's `vdeq` reads it: z' = 2z + 1 - 2^b ({-1,+1} planes)."""
    return 2 * np.asarray(zeros, np.int64) + 1 - (1 << np.asarray(bits, np.int64))


def param_records(config, scales, zeros, bits):
    """`PARAM` records [J, N] of uniform weights: `scales [N, J]`, `zeros [N, J]`, `bits [J]`
    per k-step."""
    scales, zeros = np.asarray(scales), np.asarray(zeros, np.int64)
    rec = np.zeros(scales.shape[::-1], PARAM)
    rec["scale"] = scales.T
    zp = lut_zero(zeros, np.asarray(bits)[None, :]) if config.pe.kind == "lut" else zeros
    rec["zero"] = zp.T
    return rec


def decode_param_records(config, rec, bits):
    """(scales [N, J] float32, zeros [N, J] int64) of `param_records`' output."""
    zp = rec["zero"].T.astype(np.int64)
    if config.pe.kind == "lut":
        zp = (zp - 1 + (1 << np.asarray(bits, np.int64))[None, :]) // 2
    return rec["scale"].T.astype(np.float32), zp


def param_bytes(deq_block, n):
    """Bytes of the scale records one `vdeq` reads: one `BLOCK_PARAM` (codebook) or n `PARAM`."""
    return BLOCK_PARAM.itemsize if deq_block else PARAM.itemsize * n


def rowscale_offset(deq_block, n):
    """Where a `vdeq` with `rowscale` finds its fp32 row scales, relative to its `param`
    address: right after the records (4-byte records keep the scales aligned)."""
    return param_bytes(deq_block, n)


def block_param_records(block_scale):
    """`BLOCK_PARAM` records [J, 1] of codebook blocks."""
    rec = np.zeros((len(block_scale), 1), BLOCK_PARAM)
    rec["scale"][:, 0] = block_scale
    return rec


def outlier_records(n, k, values):
    """`OUTLIER` records of (tile row, k-step column, fp16 value), in the order given (the order
    `vout` applies them)."""
    rec = np.zeros(len(values), OUTLIER)
    rec["n"], rec["k"], rec["v"] = n, k, values
    return rec
