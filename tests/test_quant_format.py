"""The `.q` file: bit packing, bit-exact round trip, and one-line errors for bad files."""

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quant
from bitlut.errors import UserError
from quant import qformat, reference
from quant.claq import CLAQSettings, claq
from quant.gptq import Hessian
from quant.layer import QModel
from quant.uniform import gptq_uniform


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), k=st.integers(1, 12))
def test_pack_unpack_round_trip(seed, n, k):
    rng = np.random.default_rng(seed)
    bits = rng.choice([1, 2, 3, 4, 8], k).astype(np.uint8)
    codes = (rng.integers(0, 256, (n, k)) % (1 << bits.astype(np.int64))).astype(np.uint8)
    stream = qformat.pack_codes(codes, bits)
    assert stream.shape == (int(sum((n * int(b) + 7) // 8 for b in bits)),)
    back, pad_ok = qformat.unpack_codes(stream, n, bits)
    np.testing.assert_array_equal(back, codes)
    assert pad_ok.all()


def test_packing_layout_is_lsb_first_per_column():
    # column 0: 2-bit codes 1, 2, 3, 0 -> 0b00_11_10_01; column 1: 3-bit codes 5, 1, 7, 2
    # -> bits 101 100 111 010 (LSB first) = 0b1110_0101, 0b0000_0101 over 12 bits
    codes = np.array([[1, 5], [2, 1], [3, 7], [0, 2]], np.uint8)
    stream = qformat.pack_codes(codes, np.array([2, 3], np.uint8))
    assert stream.tolist() == [0b00111001, 0b11001101, 0b00000101]


@pytest.fixture(scope="module")
def qmodel():
    rng = np.random.default_rng(0)
    n, k = 96, 160
    w = torch.tensor(rng.standard_t(4, (n, k)) * 0.02, dtype=torch.float32)
    acc = Hessian(k)
    acc.add(torch.tensor(rng.normal(0, 1, (400, k)), dtype=torch.float32))
    a = claq(w, acc.H, CLAQSettings(bits=2.5, outlier_ratio_top=0.03, outlier_ratio_rest=0.01),
             name="model.layers.0.self_attn.q_proj")
    b = gptq_uniform(w[:40], acc.H, 3, 64, name="down_proj")
    return QModel("test-model", {"name": "mixed", "settings": {"seed": 0}},
                  {a.name: a, b.name: b})


@pytest.fixture()
def saved(qmodel, tmp_path):
    path = tmp_path / "m.q"
    quant.save(path, qmodel)
    return path


def test_round_trip_is_bit_exact(qmodel, saved):
    back = quant.load(saved)
    assert back.model == qmodel.model and back.quantizer == qmodel.quantizer
    assert list(back.layers) == list(qmodel.layers)
    for name, q in qmodel.layers.items():
        r = back.layers[name]
        assert (r.kind, r.shape, r.group_size) == (q.kind, q.shape, q.group_size)
        for f in ("codes", "bits", "perm", "codebooks", "scales", "zeros", "outlier_rows",
                  "outlier_cols", "outlier_vals"):
            a, b = getattr(q, f), getattr(r, f)
            if a is None:
                assert b is None
            else:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f)
        assert torch.equal(quant.dequant(q), quant.dequant(r))
    # saving the loaded model gives the same bytes
    again = saved.with_name("again.q")
    quant.save(again, back)
    assert again.read_bytes() == saved.read_bytes()


def test_dequant_matches_a_brute_force_reference(qmodel):
    q = qmodel.layers["model.layers.0.self_attn.q_proj"]
    assert q.n_outliers > 0
    n, k = q.shape
    w = np.zeros((n, k), np.float32)
    for r in range(n):
        for c in range(k):
            w[r, c] = q.codebooks[c, q.codes[r, c]]
    for r, c, v in zip(q.outlier_rows, q.outlier_cols, q.outlier_vals, strict=True):
        w[r, c] += np.float32(v)
    np.testing.assert_array_equal(quant.dequant(q).numpy(), w)
    u = qmodel.layers["down_proj"]
    g = np.arange(u.shape[1]) // u.group_size
    wu = u.scales.astype(np.float32)[:, g] * (u.codes - u.zeros.astype(np.float32)[:, g])
    np.testing.assert_allclose(quant.dequant(u).numpy(), wu, rtol=1e-6)
    x = torch.randn(5, k)
    assert torch.allclose(reference.reference_matmul(x, quant.dequant(q)), x @ torch.tensor(w).T)


def test_outliers_are_sorted_by_column_then_row(qmodel):
    q = qmodel.layers["model.layers.0.self_attn.q_proj"]
    key = q.outlier_cols * q.shape[0] + q.outlier_rows
    assert np.all(np.diff(key) > 0)


def test_metadata_records_shapes_and_bits(qmodel, saved):
    meta = qformat.read_meta(saved)
    assert meta["version"] == qformat.VERSION and meta["model"] == "test-model"
    lm = meta["layers"][0]
    q = qmodel.layers[lm["name"]]
    assert lm["shape"] == list(q.shape) and lm["n_outliers"] == q.n_outliers
    assert lm["bits_per_weight"] == pytest.approx(q.bits_per_weight(True), abs=1e-6)
    assert lm["bits_per_weight_no_outliers"] == pytest.approx(q.bits_per_weight(False), abs=1e-6)
    assert meta["checksum"].startswith("sha256:")


def _tensors_meta(path):
    from safetensors.numpy import load
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    meta = json.loads(json.loads(data[8:8 + hlen])["__metadata__"][qformat.META_KEY])
    return dict(load(data)), meta


def _one_line_error(path, match):
    with pytest.raises(UserError, match=match) as e:
        quant.load(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:-100])
    _one_line_error(saved, r"safetensors container must be well-formed")
    saved.write_bytes(data[:20])
    _one_line_error(saved, r"safetensors header length must fit in the file")
    saved.write_bytes(data[:3])
    _one_line_error(saved, r"file size must be at least 8 bytes")


def test_bit_flipped_file(saved):
    data = bytearray(saved.read_bytes())
    data[-7] ^= 0x10            # inside the last tensor's bytes
    saved.write_bytes(bytes(data))
    _one_line_error(saved, r"checksum must be 'sha256:[0-9a-f]+' as recorded, not "
                           r"'sha256:[0-9a-f]+': the file was modified or corrupted")


def test_wrong_version(saved):
    t, meta = _tensors_meta(saved)
    qformat.write_raw(saved, t, {**meta, "version": 2})
    _one_line_error(saved, r"format version must be 1, not 2")


def test_not_a_q_file(tmp_path):
    from safetensors.numpy import save_file
    p = tmp_path / "plain.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(p))
    _one_line_error(p, r"safetensors metadata must hold a `bitlut_q` key")
    _one_line_error(tmp_path / "missing.q", r"\.q file must exist, not missing")


Q = "model.layers.0.self_attn.q_proj"


def _set(name, value):
    return lambda t, m: t.__setitem__(name, value(t[name]))


@pytest.mark.parametrize("edit, message", [
    (_set(f"{Q}.codebooks", lambda a: a[:, :8]),
     rf"tensor `{Q}\.codebooks` shape must be \[160, 16\], not \[160, 8\]"),
    (_set(f"{Q}.codes", lambda a: a[:-1]), rf"tensor `{Q}\.codes` shape must be \[\d+\], not"),
    (_set(f"{Q}.perm", lambda a: a.astype(np.int64)),
     rf"tensor `{Q}\.perm` dtype must be int32, not int64"),
    (_set(f"{Q}.perm", lambda a: np.zeros_like(a)),
     rf"tensor `{Q}\.perm` must be a permutation of 0\.\.159"),
    (_set(f"{Q}.bits", lambda a: np.where(np.arange(a.size) == 3, 5, a).astype(np.uint8)),
     rf"tensor `{Q}\.bits` values must be in \[2, 3, 4\], not 5"),
    (_set(f"{Q}.outlier_rows", lambda a: np.full_like(a, 200)),
     rf"tensor `{Q}\.outlier_rows` values must be < N = 96, not 200"),
    (_set(f"{Q}.outlier_rows", lambda a: a[::-1].copy()),
     rf"tensor `{Q}\.outlier_rows` must be strictly increasing within a column"),
    (_set(f"{Q}.codebooks", lambda a: a[:, ::-1].copy()),
     rf"tensor `{Q}\.codebooks` entries beyond 2\*\*bits\[k\] must be 0"),
    (_set("down_proj.zeros", lambda a: np.full_like(a, 9)),
     r"tensor `down_proj\.zeros` values must be < 2\*\*3, not 9"),
    (_set("down_proj.scales", lambda a: -a), r"tensor `down_proj\.scales` values must be finite"),
    (lambda t, m: t.pop(f"{Q}.outlier_vals"),
     rf"tensor `{Q}\.outlier_vals` must be present, not missing"),
    (lambda t, m: t.__setitem__("stray", np.zeros(1, np.uint8)),
     r"tensor `stray` must belong to a layer in the metadata"),
    (lambda t, m: m["layers"][0].__setitem__("shape", [96, 161]),
     rf"tensor `{Q}\.bits` shape must be \[161\], not \[160\]"),
])
def test_malformed_files_give_one_line_errors(saved, edit, message):
    # The checksum is recomputed after the edit, so these reach the structural checks
    t, meta = _tensors_meta(saved)
    edit(t, meta)
    qformat.write_raw(saved, t, meta)
    _one_line_error(saved, message)


def test_padding_bits_must_be_zero(tmp_path):
    rng = np.random.default_rng(1)
    w = torch.tensor(rng.normal(0, 1, (5, 8)), dtype=torch.float32)  # 5 x 3 bits: 1 pad bit
    q = claq(w, torch.eye(8), CLAQSettings(bits=3), name="l")
    path = tmp_path / "p.q"
    quant.save(path, QModel("m", {"name": "claq"}, {"l": q}))
    t, meta = _tensors_meta(path)
    t["l.codes"] = t["l.codes"].copy()
    t["l.codes"][1] |= 0x80
    qformat.write_raw(path, t, meta)
    _one_line_error(path, r"tensor `l\.codes` padding bits must be zero, not set in column 0")


def test_save_is_atomic_and_leaves_no_temp_files(qmodel, tmp_path):
    quant.save(tmp_path / "a.q", qmodel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.q"]
