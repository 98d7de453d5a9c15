"""Bit packing shared by the compiler (which packs weights into the DRAM image) and every
backend (which unpacks them): values of `width` bits, back to back, least significant bit first,
starting at bit 0 of the first byte. This is the order in which the RTL shifts them out."""

import numpy as np


def packed_bytes(count, width):
    """Bytes that `count` values of `width` bits occupy."""
    return -(-count * width // 8)


def pack(values, width):
    """uint8 array of the values (each in [0, 2^width)) packed LSB-first."""
    v = np.asarray(values).ravel()
    if v.size and (v.min() < 0 or v.max() >= 1 << width):
        raise ValueError(f"values must fit {width} bits, not range [{v.min()}, {v.max()}]")
    if width in (1, 2, 4, 8):            # whole values per byte: shift and OR, no bit arrays
        per = 8 // width
        v = np.concatenate([v.astype(np.uint8), np.zeros(-len(v) % per, np.uint8)])
        lanes = v.reshape(-1, per)
        out = np.zeros(len(lanes), np.uint8)
        for i in range(per):
            out |= lanes[:, i] << np.uint8(i * width)
        return out
    v = v.astype(np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.int64)
    bits = ((v[:, None] >> np.arange(width, dtype=v.dtype)) & 1).astype(np.uint8).ravel()
    return np.packbits(bits, bitorder="little")


def unpack(buf, count, width):
    """int64 array of `count` values of `width` bits read LSB-first from the uint8 array `buf`."""
    bits = np.unpackbits(np.asarray(buf, np.uint8), count=count * width, bitorder="little")
    planes = bits.reshape(count, width).astype(np.int64)
    return planes @ (np.int64(1) << np.arange(width, dtype=np.int64))
