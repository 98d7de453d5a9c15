"""Small random quantized layers for tests (no quantizer involved: codes, codebooks and scales are
drawn directly, so the compiler and executors are tested on every corner the format allows)."""

import numpy as np

from quant.layer import QLayer


def uniform_layer(rng, n, k, bits, group_size, name="u", outliers=0):
    j = -(-k // group_size)
    layer = QLayer(
        name=name, kind="uniform",
        codes=rng.integers(0, 2 ** bits, (n, k)).astype(np.uint8),
        bits=np.full(k, bits, np.uint8), perm=np.arange(k, dtype=np.int32),
        scales=(rng.random((n, j)) * 0.05 + 0.005).astype(np.float16),
        zeros=rng.integers(0, 2 ** bits, (n, j)).astype(np.uint8), group_size=group_size)
    return _with_outliers(rng, layer, outliers)


def codebook_layer(rng, n, k, bit_choices, name="c", outliers=0):
    bits = rng.choice(bit_choices, k).astype(np.uint8)
    width = 1 << int(bits.max())
    cb = np.sort(rng.standard_normal((k, width)), axis=1).astype(np.float16)
    # columns differ in range by 10x and more, as in real layers (DESIGN.md section 3)
    cb = (cb * rng.choice([0.1, 1.0, 3.0], k)[:, None]).astype(np.float16)
    cb[np.arange(width)[None, :] >= (1 << bits.astype(int))[:, None]] = 0
    codes = rng.integers(0, 1 << 16, (n, k)) % (1 << bits.astype(np.int64))[None, :]
    layer = QLayer(name=name, kind="codebook", codes=codes.astype(np.uint8), bits=bits,
                   perm=np.arange(k, dtype=np.int32), codebooks=cb)
    return _with_outliers(rng, layer, outliers)


def _with_outliers(rng, layer, count):
    if not count:
        return layer
    n, k = layer.shape
    flat = rng.choice(n * k, count, replace=False)
    rows, cols = np.divmod(flat, k)
    order = np.lexsort((rows, cols))
    layer.outlier_rows = rows[order].astype(np.int64)
    layer.outlier_cols = cols[order].astype(np.int64)
    layer.outlier_vals = (rng.standard_normal(count) * 2).astype(np.float16)
    return layer
