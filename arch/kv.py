"""The KV cache as the memory image holds it (docs/block.md): one definition of its formats, its
DRAM layout and its bytes, read by the compiler (which lays it out and writes a prefix), the
golden block model, the reports and the design-space sweeps.

Per KV head, the cache is row-major by token, so that writing a new token is one contiguous
store: int-b formats hold b-bit codes `[ctx_max, head_dim]` packed LSB first
(`arch.packing`), K's records `[head_dim / group][ctx_max]` and V's `[ctx_max]` (the
`arch.image.PARAM` records: fp16 scale, int16 zero); fp16 holds `[ctx_max, head_dim]` halves.
The table unit's `pack` repacks a tile of tokens into the PE array's weight image on chip.

This is internal code: bad arguments raise `ValueError`; user input (`--kv`) is checked by
`check_format`, which raises `UserError`.
"""

from dataclasses import dataclass

import numpy as np

from arch import packing
from arch.image import PARAM
from arch.nonlinear import KV_FORMATS  # noqa: F401  (by name: code bits, None for fp16)
from bitlut.errors import UserError

#: K's default scale group (columns of a head); V's group is always the whole head.
DEFAULT_GROUP = 128


@dataclass(frozen=True)
class KVFormat:
    """Members: `name` (a key of `KV_FORMATS`), `group` (K's scale group in columns)."""
    name: str
    group: int = DEFAULT_GROUP

    @property
    def bits(self):
        return KV_FORMATS[self.name]

    @property
    def fp16(self):
        return self.bits is None

    def k_group(self, head_dim):
        return min(self.group, head_dim)


def check_format(name, config, head_dim, group=DEFAULT_GROUP, where="--kv"):
    """The `KVFormat` named `name` for `config`, or `UserError` in one line: an unknown name, a
    group that does not divide the head, or a code width the PE array cannot multiply."""
    if name not in KV_FORMATS:
        raise UserError(f"{where} must be one of {', '.join(KV_FORMATS)}, not {name!r}")
    fmt = KVFormat(name, group)
    if fmt.fp16:
        return fmt
    g = fmt.k_group(head_dim)
    if head_dim % g or g & (g - 1):
        raise UserError(f"{where}: the K scale group must be a power of two dividing the head "
                        f"dim ({head_dim}), not {group}")
    if fmt.bits not in config.pe.weight_bits:
        raise UserError(f"{where} {name} must be a format the {config.pe.kind} array serves "
                        f"(codes of {', '.join(map(str, config.pe.weight_bits))} bits, or fp16 "
                        f"on the vector unit), not {fmt.bits}-bit codes")
    return fmt


@dataclass(frozen=True)
class KVLayout:
    """The DRAM layout of one block's KV cache.

    Members: `fmt` (`KVFormat`), `kv_heads`, `head_dim`, `ctx_max` (tokens the cache holds);
    byte sizes and offsets are properties."""
    fmt: KVFormat
    kv_heads: int
    head_dim: int
    ctx_max: int

    @property
    def row_bytes(self):
        """Bytes of one token's row of one head: codes, or halves."""
        if self.fmt.fp16:
            return 2 * self.head_dim
        return packing.packed_bytes(self.head_dim, self.fmt.bits)

    @property
    def k_groups(self):
        return 0 if self.fmt.fp16 else self.head_dim // self.fmt.k_group(self.head_dim)

    @property
    def head_bytes(self):
        """Bytes of one head's K (or V) rows."""
        return self.ctx_max * self.row_bytes

    def k_param_offset(self, h, j, t):
        """Byte offset of K's record for head h, group j, token t in the `kp` symbol."""
        return ((h * self.k_groups + j) * self.ctx_max + t) * PARAM.itemsize

    def v_param_offset(self, h, t):
        return (h * self.ctx_max + t) * PARAM.itemsize

    def symbols(self):
        """{name: bytes} of the cache's DRAM symbols."""
        out = {"k": self.kv_heads * self.head_bytes, "v": self.kv_heads * self.head_bytes}
        if not self.fmt.fp16:
            out["kp"] = self.kv_heads * self.k_groups * self.ctx_max * PARAM.itemsize
            out["vp"] = self.kv_heads * self.ctx_max * PARAM.itemsize
        return out


def bytes_per_token(fmt, kv_heads, head_dim):
    """DRAM bytes one token adds to one block's cache, K and V together (codes or halves plus
    the records): what every decode token reads again per cached token."""
    if fmt.fp16:
        return 2 * 2 * kv_heads * head_dim
    code = packing.packed_bytes(head_dim, fmt.bits)
    records = (head_dim // fmt.k_group(head_dim) + 1) * PARAM.itemsize
    return kv_heads * (2 * code + records)


def zero_point(fmt, lut):
    """The records' zero: z = 2^(b-1) (codes are symmetric around it), or on the LUT array
    z' = 2z + 1 - 2^b = 1 (`arch.image.lut_zero`)."""
    return 1 if lut else 1 << (fmt.bits - 1)


def encode_rows(codes, bits):
    """Packed bytes [rows, row_bytes] of codes [rows, head_dim] (uint8 < 2^bits); head_dim·bits
    is a whole number of bytes (head dims are even, codes 2, 4 or 8 bits)."""
    codes = np.asarray(codes, np.uint8)
    rows, hd = codes.shape
    if hd * bits % 8:
        raise ValueError(f"`head_dim * bits` must be a whole number of bytes, not {hd * bits}")
    return packing.pack(codes.ravel(), bits).reshape(rows, hd * bits // 8)


def decode_rows(raw, head_dim, bits):
    """Codes [rows, head_dim] of packed rows [rows, row_bytes] (inverse of `encode_rows`)."""
    raw = np.asarray(raw, np.uint8)
    rows = raw.shape[0]
    return packing.unpack(raw.ravel(), rows * head_dim, bits).reshape(rows, head_dim) \
        .astype(np.uint8)
