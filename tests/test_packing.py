"""Bit packing: the byte layout the compiler writes and every backend reads."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arch import packing


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_round_trip(width, count, seed):
    v = np.random.default_rng(seed).integers(0, 2 ** width, count)
    buf = packing.pack(v, width)
    assert len(buf) == packing.packed_bytes(count, width)
    assert np.array_equal(packing.unpack(buf, count, width), v)


def test_lsb_first_hand_checked():
    # 2-bit values 1, 2, 3, 0 -> bits 01 10 11 00 from bit 0: byte 0b00_11_10_01
    assert packing.pack([1, 2, 3, 0], 2).tolist() == [0b00111001]
    # 3-bit values 5, 3, 7 -> bits 101 110 111 (LSB first), bytes 0b11_011_101, 0b0000000_1
    assert packing.pack([5, 3, 7], 3).tolist() == [0b11011101, 0b00000001]


def test_out_of_range_rejected():
    import pytest
    with pytest.raises(ValueError, match=r"values must fit 2 bits, not range \[0, 4\]"):
        packing.pack([0, 4], 2)
