"""Bit packing shared by the compiler (which packs weights into the DRAM image) and every
backend (which unpacks them): values of `width` bits, back to back, least significant bit first,
starting at bit 0 of the first byte. This is the order in which the RTL shifts them out."""

import numpy as np


def packed_bytes(count, width):
    """Bytes that `count` values of `width` bits occupy."""
    return -(-count * width // 8)


def pack(values, width):
    """uint8 array of the values (each in [0, 2^width)) packed LSB-first."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size and (v.min() < 0 or v.max() >= 1 << width):
        raise ValueError(f"values must fit {width} bits, not range [{v.min()}, {v.max()}]")
    bits = ((v[:, None] >> np.arange(width)) & 1).astype(np.uint8).ravel()
    return np.packbits(bits, bitorder="little")


def unpack(buf, count, width):
    """int64 array of `count` values of `width` bits read LSB-first from the uint8 array `buf`."""
    bits = np.unpackbits(np.asarray(buf, np.uint8), count=count * width, bitorder="little")
    planes = bits.reshape(count, width).astype(np.int64)
    return planes @ (np.int64(1) << np.arange(width, dtype=np.int64))
