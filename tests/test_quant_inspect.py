"""`bitlut inspect`: bits per weight broken into codes, tables, bit map and outliers."""

import numpy as np

import quant
from bitlut.cli import main
from quant.layer import QLayer, QModel


def _codebook_layer(name, n, bits, nnz=0, seed=0):
    rng = np.random.default_rng(seed)
    k = len(bits)
    bits = np.asarray(bits, np.uint8)
    width = 1 << int(bits.max())
    cb = np.zeros((k, width), np.float16)
    for j, b in enumerate(bits):
        cb[j, :1 << int(b)] = np.sort(rng.standard_normal(1 << int(b))).astype(np.float16)
    codes = (rng.integers(0, 1 << 8, (n, k)) % (1 << bits.astype(np.int64))).astype(np.uint8)
    cols = np.sort(rng.choice(k, nnz))
    rows = np.array([rng.integers(0, n) for _ in cols], np.int64)
    # distinct (col, row) pairs, sorted by (col, row)
    pairs = sorted(set(zip(cols.tolist(), rows.tolist(), strict=True)))
    return QLayer(name=name, kind="codebook", codes=codes, bits=bits,
                  perm=np.arange(k, dtype=np.int32), codebooks=cb,
                  outlier_rows=np.array([r for _, r in pairs], np.int64),
                  outlier_cols=np.array([c for c, _ in pairs], np.int64),
                  outlier_vals=np.ones(len(pairs), np.float16))


def _row(out, name):
    line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
    return [float(v) for v in line.split()[-5:]]


def test_breakdown_of_a_384_row_codebook_layer(tmp_path, capsys):
    # all-2-bit columns on 384 rows: 16-bit x 4 entries per column = 64 bits / 384 rows
    plain = _codebook_layer("plain", 384, [2] * 64)
    # mixed 2/3/4-bit columns with outliers
    bits = [2] * 40 + [3] * 16 + [4] * 8
    mixed = _codebook_layer("mixed", 96, bits, nnz=30, seed=1)
    path = tmp_path / "m.q"
    quant.save(path, QModel("hand", {"name": "claq", "settings": {}},
                            {"plain": plain, "mixed": mixed}))
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    codes, tables, bitmap, outl, total = _row(out, "plain")
    assert (codes, tables, bitmap, outl) == (2.0, round(64 / 384, 4), round(8 / 384, 4), 0.0)
    assert total == round(2 + 64 / 384 + 8 / 384, 3)
    # closed forms: mean bits; 16 * sum(2^b) / (N K); 8 / N; (32 (K + 1) + 32 nnz) / (N K)
    n, k, nnz = 96, 64, mixed.n_outliers
    assert nnz > 20
    want = [np.mean(bits), 16 * (40 * 4 + 16 * 8 + 8 * 16) / (n * k), 8 / n,
            (32 * (k + 1) + 32 * nnz) / (n * k)]
    assert _row(out, "mixed")[:4] == [round(v, 4) for v in want]
    assert _row(out, "mixed")[4] == round(sum(want), 3)
    # the all-layers row is the weight-weighted mean
    allrow = _row(out, "all layers")
    w1, w2 = 384 * 64, n * k
    assert allrow[1] == round((64 / 384 * w1 + want[1] * w2) / (w1 + w2), 4)
