"""Packing stream payloads to and from flat integers, from the Amaranth layouts themselves.

A Struct payload is one flat port in the Verilog with its first field in the low bits (STYLE.md);
both the Amaranth simulator and cocotb drive and read it as one integer, so one packer serves both.
Values are nested Python structures: dicts for `StructLayout`, lists for `ArrayLayout`, ints (or
enum members) for plain shapes.
"""

import enum

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack", "width"]


def width(layout):
    """Bits of `layout` (a data layout or a shape-castable)."""
    if isinstance(layout, data.Layout):
        return layout.size
    return Shape.cast(layout).width


def pack(layout, value):
    """`value` (nested dict/list/int) as the flat integer of `layout`."""
    if isinstance(layout, data.StructLayout):
        bits = 0
        for name, field in layout:
            bits |= pack(field.shape, value[name]) << field.offset
        return bits
    if isinstance(layout, data.ArrayLayout):
        w = width(layout.elem_shape)
        if len(value) != layout.length:
            raise ValueError(f"array of {layout.length} expected, not {len(value)}")
        bits = 0
        for k, v in enumerate(value):
            bits |= pack(layout.elem_shape, v) << (k * w)
        return bits
    if isinstance(value, enum.Enum):
        value = value.value
    w = width(layout)
    value = int(value)
    shape = Shape.cast(layout)
    lo = -(1 << (w - 1)) if shape.signed else 0
    hi = (1 << (w - 1)) - 1 if shape.signed else (1 << w) - 1
    if not lo <= value <= hi:
        raise ValueError(f"value {value} does not fit {shape}")
    return value & ((1 << w) - 1)


def unpack(layout, bits):
    """The flat integer `bits` of `layout` as nested dicts/lists of ints."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, (bits >> field.offset) & ((1 << width(field.shape)) - 1))
                for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        w = width(layout.elem_shape)
        mask = (1 << w) - 1
        return [unpack(layout.elem_shape, (bits >> (k * w)) & mask) for k in range(layout.length)]
    shape = Shape.cast(layout)
    w = shape.width
    bits &= (1 << w) - 1
    if shape.signed and w and bits >> (w - 1):
        bits -= 1 << w
    return bits
