"""The memory image (`arch.image`): every weight encoding round-trips to its codes, the words the
datapath reads are the ones the papers define, and the records decode to what was encoded."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arch import config, image
from arch.config import CODEBOOK_BITS, UNIFORM_BITS
from arch.isa import Mode, Opcode
from arch.numerics import invert_index

PROPERTY = settings(deadline=None, derandomize=True, max_examples=60)


def _config(kind, **pe):
    cfg = config.load(kind)
    return cfg.replace(pe=dataclasses.replace(cfg.pe, **pe)) if pe else cfg


# Every PE kind x format x width the configs allow, on odd array widths too.
CASES = (
    [("lut", "uniform", b, pe) for b in (1, 2, 3, 4)
     for pe in ({}, {"symmetric": False}, {"group": 3, "cols": 8}, {"group": 5, "index_bits": 5})]
    + [("lut", "codebook", b, pe) for b in CODEBOOK_BITS for pe in ({}, {"cols": 2})]
    + [("bitserial", "uniform", b, pe) for b in UNIFORM_BITS for pe in ({}, {"group": 2})]
    + [("bitserial", "codebook", b, {}) for b in CODEBOOK_BITS]
    + [("mac", "uniform", b, {}) for b in UNIFORM_BITS]
    + [("mac", "codebook", b, {}) for b in CODEBOOK_BITS]
)


@pytest.mark.parametrize("kind, fmt, bits, pe", CASES,
                         ids=[f"{k}-{f}-b{b}-{'-'.join(f'{a}{v}' for a, v in p.items()) or 'as'}"
                              for k, f, b, p in CASES])
@PROPERTY
@given(n=st.integers(1, 150), kgroups=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_weight_image_round_trips(kind, fmt, bits, pe, n, kgroups, seed):
    cfg = _config(kind, **pe)
    g = image.group_of(cfg, fmt, bits)
    layout = image.weight_layout(cfg, fmt, n, kgroups * g, bits)
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (n, kgroups * g))
    raw = layout.encode(codes)
    assert raw.dtype == np.uint8 and len(raw) == layout.nbytes
    np.testing.assert_array_equal(layout.decode(raw), codes)
    # the matmul instruction of this array reads the same layout from its own fields
    if fmt == "uniform" or kind == "lut":
        op = {"lut": Opcode.LMMA, "bitserial": Opcode.BSMM, "mac": Opcode.MMA}[kind]
        mode = Mode.UNIFORM if fmt == "uniform" else Mode.CODEBOOK
        assert image.matmul_layout(cfg, op, mode, n, kgroups, bits) == layout


def test_lut_plane_words_by_hand():
    # One output, one group of g=4 columns with codes 1, 2, 3, 0 (2 bits): plane 0 has bits
    # (1, 0, 1, 0) -> word 0b0101, plane 1 has bits (0, 1, 1, 0) -> word 0b0110. On the symmetric
    # array the sign is bit 0 and the stored half-table index sits above it (Eq. 6): 0b0101 has
    # sign 1, stored 0b010; 0b0110 has sign 0, stored (~0b0110 >> 1) & 0b111 = 0b100.
    codes = np.array([[1, 2, 3, 0]])
    sym = image.weight_layout(_config("lut"), "uniform", 1, 4, 2)
    full = image.weight_layout(_config("lut", symmetric=False), "uniform", 1, 4, 2)
    assert full.words(full.encode(codes)).tolist() == [[[0b0101, 0b0110]]]
    assert sym.words(sym.encode(codes)).tolist() == [[[0b010 << 1 | 1, 0b100 << 1 | 0]]]
    sign, stored = invert_index(np.array([0b0101, 0b0110]), 4)
    assert sign.tolist() == [1, 0] and stored.tolist() == [0b010, 0b100]


def test_lane_major_order_by_hand():
    # Bit-serial planes, 2 lanes per tile, 3 outputs -> 2 tiles, the last padded with zeros.
    # g=1 columns, 1 group, 1 plane: words are the codes themselves, ordered (tile, lane).
    cfg = _config("bitserial", group=1, cols=2)
    layout = image.weight_layout(cfg, "uniform", 3, 1, 1)
    raw = layout.encode(np.array([[1], [0], [1]]))
    assert layout.count == 4 and raw.tolist() == [0b0101]
    # LUT codebook indices: column i's code in bits i*b.. of the index (2-bit codes, g = 2)
    cb = image.weight_layout(_config("lut"), "codebook", 1, 2, 2)
    assert cb.words(cb.encode(np.array([[3, 1]]))).tolist() == [[3 | 1 << 2]]


def test_a_short_image_is_refused():
    layout = image.weight_layout(_config("mac"), "uniform", 4, 8, 3)
    with pytest.raises(ValueError, match=r"`raw` must hold 12 bytes, not 11"):
        layout.words(np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match=r"`codes` must have shape \(4, 8\), not \(4, 7\)"):
        layout.encode(np.zeros((4, 7), np.uint8))


@pytest.mark.parametrize("kind", ["lut", "bitserial", "mac"])
def test_param_records_round_trip(kind):
    cfg = _config(kind)
    rng = np.random.default_rng(7)
    bits = np.array([1, 2, 3, 4])
    scales = rng.uniform(1e-3, 1, (5, 4)).astype(np.float16).astype(np.float32)
    zeros = rng.integers(0, 1 << bits[None, :], (5, 4))
    rec = image.param_records(cfg, scales, zeros, bits)
    assert rec.dtype.itemsize == 4 and rec.shape == (4, 5)
    got_s, got_z = image.decode_param_records(cfg, rec, bits)
    np.testing.assert_array_equal(got_s, scales)
    np.testing.assert_array_equal(got_z, zeros)
    if kind == "lut":        # z' = 2z + 1 - 2^b, as `vdeq` of {-1,+1} planes reads it
        assert rec["zero"][1, 0] == 2 * zeros[0, 1] + 1 - 4


def test_outlier_and_block_records():
    rec = image.outlier_records([3, 0], [5, 1], np.array([1.5, -2], np.float16))
    assert rec.dtype.itemsize == 8
    assert rec.tobytes() == (bytes([3, 0, 5, 0]) + np.float16(1.5).tobytes() + bytes(2)
                             + bytes([0, 0, 1, 0]) + np.float16(-2).tobytes() + bytes(2))
    blk = image.block_param_records(np.array([0.25, 4.0], np.float32))
    assert blk.shape == (2, 1) and blk.view(np.uint8).tobytes() == \
        np.array([0.25, 4.0], "<f4").tobytes()


def test_table_sizes():
    cfg = _config("lut")          # g = 4, symmetric: 8 entries; codebook 2-bit: g = 2, 16
    assert image.table_entries(cfg, Mode.UNIFORM, 1) == 8
    assert image.table_entries(cfg, Mode.CODEBOOK, 2) == 16
    assert image.table_entries(cfg, Mode.CODEBOOK, 4) == 16
    assert image.table_entries(cfg, Mode.CODEBOOK, 3) == 8
    assert image.table_bytes(cfg, Mode.CODEBOOK, 3, 5, 2) == 3 * 5 * 16 * cfg.table_entry_bytes
