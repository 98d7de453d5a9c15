"""Random quantized layers, drawn directly: codes, codebooks, scales and outliers come from a seeded
generator, no quantizer involved. The tests use them to reach every corner the format allows,
`bitlut sim --gemm` and the benchmarks to time a GEMM of a given shape, and the SCALE-Sim
comparison to count the MAC array's cycles. (quant.synthetic draws LLM-like weights and
activations and quantizes them; this module draws the quantized form itself.)

The order of the draws is part of the contract: the same generator state gives the same layer,
which the tests, the README's `bitlut sim --gemm` figures and `sim/data/scalesim_ws32.json`
rely on.
"""

import numpy as np

from quant.layer import QLayer


def uniform_layer(rng, n, k, bits, group_size, name="u", outliers=0, *, scale_min=0.005,
                  scale_spread=0.05, zero=None):
    """A uniform `QLayer` of `n` x `k` codes of `bits` bits, one scale and zero point per row and
    group of `group_size` input columns (the last group may be shorter).

    `rng` is a `numpy.random.Generator` (drawn from, in this order: codes, scales, zero points,
    outliers) or a seed for one. Scales are uniform in `[scale_min, scale_min + scale_spread)`
    (fp16); `zero` is None for zero points drawn uniformly from the codes' range, or one code
    that every group uses. `outliers` fp16 values at distinct random positions are added (see
    `with_outliers`)."""
    rng = np.random.default_rng(rng)
    j = -(-k // group_size)
    codes = rng.integers(0, 2 ** bits, (n, k)).astype(np.uint8)
    scales = (rng.random((n, j)) * scale_spread + scale_min).astype(np.float16)
    zeros = (rng.integers(0, 2 ** bits, (n, j)) if zero is None
             else np.full((n, j), zero)).astype(np.uint8)
    layer = QLayer(name=name, kind="uniform", codes=codes, bits=np.full(k, bits, np.uint8),
                   perm=np.arange(k, dtype=np.int32), scales=scales, zeros=zeros,
                   group_size=group_size)
    return with_outliers(rng, layer, outliers)


def codebook_layer(rng, n, k, bit_choices, name="c", outliers=0):
    """A codebook (CLAQ-format) `QLayer` of `n` x `k` codes, each column's width drawn from
    `bit_choices`, with sorted fp16 centroids whose range differs by column (x0.1, x1, x3) and
    zeros past each column's `2**bits` entries. `rng` and `outliers` as for `uniform_layer`
    (drawn in this order: widths, centroids, column ranges, codes, outliers)."""
    rng = np.random.default_rng(rng)
    bits = rng.choice(bit_choices, k).astype(np.uint8)
    width = 1 << int(bits.max())
    cb = np.sort(rng.standard_normal((k, width)), axis=1).astype(np.float16)
    # columns differ in range by 10x and more, as in real layers (DESIGN.md section 3)
    cb = (cb * rng.choice([0.1, 1.0, 3.0], k)[:, None]).astype(np.float16)
    cb[np.arange(width)[None, :] >= (1 << bits.astype(int))[:, None]] = 0
    codes = rng.integers(0, 1 << 16, (n, k)) % (1 << bits.astype(np.int64))[None, :]
    layer = QLayer(name=name, kind="codebook", codes=codes.astype(np.uint8), bits=bits,
                   perm=np.arange(k, dtype=np.int32), codebooks=cb)
    return with_outliers(rng, layer, outliers)


def with_outliers(rng, layer, count):
    """`layer` with `count` outliers at distinct random positions (column-major order, as the
    format stores them), values normal with standard deviation 2 (fp16); `layer` itself when
    `count` is 0, with nothing drawn. `rng` as for `uniform_layer`."""
    if not count:
        return layer
    rng = np.random.default_rng(rng)
    n, k = layer.shape
    flat = rng.choice(n * k, count, replace=False)
    rows, cols = np.divmod(flat, k)
    order = np.lexsort((rows, cols))
    layer.outlier_rows = rows[order].astype(np.int64)
    layer.outlier_cols = cols[order].astype(np.int64)
    layer.outlier_vals = (rng.standard_normal(count) * 2).astype(np.float16)
    return layer


def gemm_layer(m, k, n, bits, seed=0):
    """The layer of the GEMM `bitlut sim --gemm M,K,N --wbits B` simulates (the benchmarks time
    the same one): `n` x `k` uniform `bits`-bit codes, groups of 128 columns (or all `k` if
    fewer), scales in [0.001, 0.021), the mid-range zero point. `m` only names it."""
    return uniform_layer(seed, n, k, bits, min(128, k), name=f"gemm_{m}x{k}x{n}",
                         scale_min=0.001, scale_spread=0.02, zero=2 ** (bits - 1))
