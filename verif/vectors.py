"""Stimulus and expected results for the PE arrays, from the golden model (`sim.golden`).

Every builder returns a `verif.harness.Scenario`: random tiles from a seeded `numpy` generator and
the directed corners of issue 6 (all-min and all-max activations, every weight width the config
allows, all-zero and all-one codes, the sign plane, back-to-back tiles, a stalled output). Expected
values come from `sim.golden`: `build_table`, `lut_indices` and `uniform_partials_lut` (uniform LUT
path), `build_codebook_table` and `decode_codebook` (codebook), `uniform_partials_bitserial`,
`decode_uniform` and `fast_partials` (bit-serial, MAC and the cross-checks).
"""

import numpy as np

from arch.isa import Mode
from rtl.table_unit import codebook_bits
from sim import golden

from .harness import Scenario

XMAX = golden.XQ_MAX


def wrap(v, bits):
    """Two's-complement wrap of int64 array `v` to `bits`."""
    v = np.asarray(v, np.int64)
    half = 1 << (bits - 1)
    return ((v + half) % (1 << bits)) - half


def saturate(v, bits):
    half = 1 << (bits - 1)
    return np.clip(np.asarray(v, np.int64), -half, half - 1)


def _acc(cfg, v):
    return saturate(v, cfg.pe.acc_bits) if cfg.pe.saturate else wrap(v, cfg.pe.acc_bits)


def _acts(rng, shape, kind):
    if kind == "min":
        return np.full(shape, -XMAX, np.int64)
    if kind == "max":
        return np.full(shape, XMAX, np.int64)
    if kind == "zero":
        return np.zeros(shape, np.int64)
    return rng.integers(-XMAX, XMAX + 1, size=shape)


def _codes(rng, shape, bits, kind):
    if kind == "zeros":
        return np.zeros(shape, np.int64)
    if kind == "ones":
        return np.full(shape, (1 << bits) - 1, np.int64)
    return rng.integers(0, 1 << bits, size=shape)


def _psum(rng, cfg, shape, kind):
    bits = cfg.pe.acc_bits
    if kind == "zero":
        return np.zeros(shape, np.int64)
    if kind == "max":
        return np.full(shape, (1 << (bits - 1)) - 1, np.int64)
    if kind == "min":
        return np.full(shape, -(1 << (bits - 1)), np.int64)
    if kind == "big":
        return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape)
    return rng.integers(-1000, 1001, size=shape)


def _lol(a):
    return np.asarray(a, np.int64).tolist()


# -- the table precompute unit --------------------------------------------------------------------

def table_beat(cfg, geom, rng, mode, bits=None, x_kind="random", cq_kind="random"):
    """One table-unit input and its expected output (only the meaningful entries are checked:
    the rest are masked with `None` by the caller's comparison, see `table_scenario`)."""
    pe = cfg.pe
    x = _acts(rng, geom["cols"], x_kind)
    cq = np.zeros(geom["slots"], np.int64)
    entries = [0] * geom["entries"]
    if mode == Mode.UNIFORM:
        t = golden.build_table(x[: pe.group], pe.group, pe.symmetric)
        entries[: len(t)] = _lol(t)
        bits_field = 0
    else:
        gc = cfg.codebook_group(bits)
        cmax = (1 << (pe.centroid_bits - 1))
        if cq_kind == "min":
            cqc = np.full((gc, 1 << bits), -cmax, np.int64)
        elif cq_kind == "max":
            cqc = np.full((gc, 1 << bits), cmax - 1, np.int64)
        else:
            cqc = rng.integers(-cmax, cmax, size=(gc, 1 << bits))
        cq[: gc << bits] = cqc.reshape(-1)
        t = _lol(golden.build_codebook_table(x[:gc], cqc, bits))
        # Indices above 2^(gc*b) alias lower ones in the hardware (the high index bits are ignored).
        for e in range(geom["entries"]):
            entries[e] = t[e % len(t)]
        bits_field = bits
    beat = {"mode": mode, "bits": bits_field, "x": _lol(x), "cq": _lol(cq)}
    return beat, {"mode": mode.value, "table": entries}


def table_scenario(cfg, geom, rng, name, n=24, ready="always", valid="always", corners=False):
    beats, expected = [], []
    cb_bits = codebook_bits(cfg)
    if corners:
        for xk in ("min", "max", "zero"):
            plan = [(Mode.UNIFORM, None, xk, "random")]
            plan += [(Mode.CODEBOOK, b, xk, ck) for b in cb_bits for ck in ("min", "max")]
            for mode, b, xkind, ckind in plan:
                bt, ex = table_beat(cfg, geom, rng, mode, b, xkind, ckind)
                beats.append(bt)
                expected.append(ex)
    for _ in range(n):
        if rng.random() < 0.4 or not cb_bits:
            bt, ex = table_beat(cfg, geom, rng, Mode.UNIFORM)
        else:
            bt, ex = table_beat(cfg, geom, rng, Mode.CODEBOOK, int(rng.choice(cb_bits)))
        beats.append(bt)
        expected.append(ex)
    return Scenario(name, [("i", b) for b in beats], expected, list(range(len(beats))),
                    ready=ready, valid=valid)


# -- the LUT PE array -----------------------------------------------------------------------------

def _pad_table(t, entries):
    t = list(t)
    return t + [0] * (entries - len(t))


def lut_uniform_tile(cfg, geom, rng, bits, groups=1, x_kind="random", code_kind="random",
                     psum_kind="small", shuffle=True):
    """Beats and expected `[M][N]` of one uniform tile of `groups` activation groups.

    Expected: `psum + acc` where `acc = 2·P + (1 − 2^b)·Σx` with `P` from
    `golden.uniform_partials_lut` (zero z, one scale group over the tile's K): the per-lookup
    golden path, undone to the raw ±1-plane accumulator that the array holds.
    """
    pe = cfg.pe
    M, N, g = pe.rows, pe.cols, pe.group
    K = groups * g
    x = _acts(rng, (M, K), x_kind)
    q = _codes(rng, (N, K), bits, code_kind)
    psum = _psum(rng, cfg, (M, N), psum_kind)
    idx, sign = golden.lut_indices(q, bits, K, g, pe.symmetric)  # [b, N, 1, groups]
    beats = []
    for j in range(groups):
        tables = [_pad_table(golden.build_table(x[m, j * g:(j + 1) * g], g, pe.symmetric).tolist(),
                             geom["entries"]) for m in range(M)]
        planes = list(range(bits))
        if shuffle:
            rng.shuffle(planes)
        for p in planes:
            if pe.symmetric:
                hw = (idx[p, :, 0, j] << 1) | sign[p, :, 0, j]
            else:
                hw = idx[p, :, 0, j]
            beats.append({"mode": Mode.UNIFORM, "plane": p, "first": 0, "last": 0,
                          "idx": _lol(hw), "tables": tables, "psum": _lol(psum)})
    beats[0]["first"], beats[-1]["last"] = 1, 1
    P = golden.uniform_partials_lut(x, q, np.zeros((N, 1), np.int64), bits, K, g, pe.symmetric)
    acc = 2 * P[..., 0] + (1 - 2**bits) * x.sum(1)[:, None]
    # Cross-check the golden path against the plain integer product with q' = 2q − (2^b − 1).
    assert (acc == x @ (2 * q - (2**bits - 1)).T).all()
    return beats, _lol(_acc(cfg, psum + acc))


def lut_codebook_tile(cfg, geom, rng, bits, groups=1, x_kind="random", code_kind="random",
                      psum_kind="small"):
    """Beats and expected `[M][N]` of one codebook tile: `groups` column groups of
    `index_bits // bits` columns, one lookup per group. Expected `psum + x · decode_codebook`."""
    pe = cfg.pe
    M, N = pe.rows, pe.cols
    gc = cfg.codebook_group(bits)
    K = groups * gc
    cmax = 1 << (pe.centroid_bits - 1)
    x = _acts(rng, (M, K), x_kind)
    cq = rng.integers(-cmax, cmax, size=(K, 1 << bits))
    codes = _codes(rng, (N, K), bits, code_kind)
    psum = _psum(rng, cfg, (M, N), psum_kind)
    beats = []
    for j in range(groups):
        cols = slice(j * gc, (j + 1) * gc)
        tables = [_pad_table(golden.build_codebook_table(x[m, cols], cq[cols], bits).tolist(),
                             geom["entries"]) for m in range(M)]
        idx = (codes[:, cols] << (bits * np.arange(gc))).sum(1)
        beats.append({"mode": Mode.CODEBOOK, "plane": 0, "first": int(j == 0),
                      "last": int(j == groups - 1), "idx": _lol(idx), "tables": tables,
                      "psum": _lol(psum)})
    w_int = golden.decode_codebook(codes, cq)
    acc = golden.fast_partials(x, w_int, K)[..., 0]
    return beats, _lol(_acc(cfg, psum + acc))


def tiles_scenario(name, tiles, port="i", ready="always", valid="always"):
    """`tiles` (`(beats, expected)` pairs) back to back on `port`; each tile's last beat
    completes its output."""
    items, expected, completes = [], [], []
    for beats, out in tiles:
        items += [(port, b) for b in beats]
        completes.append(len(items) - 1)
        expected.append(out)
    return Scenario(name, items, expected, completes, ready=ready, valid=valid)


def lut_random(cfg, geom, rng, name, n=12, ready="always", valid="always"):
    pe = cfg.pe
    tiles = []
    for _ in range(n):
        if rng.random() < 0.6 or not codebook_bits(cfg):
            b = int(rng.choice(pe.weight_bits))
            tiles.append(lut_uniform_tile(cfg, geom, rng, b, groups=int(rng.integers(1, 3)),
                                          psum_kind=str(rng.choice(["small", "big", "zero"]))))
        else:
            b = int(rng.choice(codebook_bits(cfg)))
            tiles.append(lut_codebook_tile(cfg, geom, rng, b, groups=int(rng.integers(1, 3)),
                                           psum_kind=str(rng.choice(["small", "big"]))))
    return tiles_scenario(name, tiles, ready=ready, valid=valid)


def lut_corners(cfg, geom, rng, name):
    """Every allowed weight width x {all-min, all-max activations} x {all-zero, all-one codes}
    (all-zero codes: every index has sign bit 0 after inversion, the negation path; all-one:
    sign 1), psum at both accumulator extremes (wrap), and codebook tiles per code width."""
    pe = cfg.pe
    tiles = []
    for b in pe.weight_bits:
        for xk in ("min", "max"):
            for ck in ("zeros", "ones"):
                tiles.append(lut_uniform_tile(cfg, geom, rng, b, 1, xk, ck, "zero", False))
        tiles.append(lut_uniform_tile(cfg, geom, rng, b, 1, "max", "ones", "max", False))
        tiles.append(lut_uniform_tile(cfg, geom, rng, b, 1, "min", "ones", "min", False))
        if b in codebook_bits(cfg):
            for xk in ("min", "max"):
                tiles.append(lut_codebook_tile(cfg, geom, rng, b, 1, xk, "ones", "zero"))
                tiles.append(lut_codebook_tile(cfg, geom, rng, b, 1, xk, "zeros", "zero"))
    return tiles_scenario(name, tiles)


# -- the bit-serial PE array ----------------------------------------------------------------------

def bitserial_tile(cfg, rng, bits, signed=False, groups=1, x_kind="random", code_kind="random",
                   psum_kind="small", shuffle=True):
    """One bit-serial tile. Unsigned b-bit codes: expected `psum + uniform_partials_bitserial`
    (z = 0). Signed (`signed=True`, b-bit two's complement, e.g. int8 centroids): the MSB plane is
    a sign plane and the expected value is `psum + fast_partials(x, w)`."""
    pe = cfg.pe
    M, N, g = pe.rows, pe.cols, pe.group
    K = groups * g
    x = _acts(rng, (M, K), x_kind)
    if signed:
        half = 1 << (bits - 1)
        if code_kind == "zeros":
            w = np.zeros((N, K), np.int64)
        elif code_kind == "ones":       # all bits set: −1
            w = np.full((N, K), -1, np.int64)
        elif code_kind == "min":
            w = np.full((N, K), -half, np.int64)
        else:
            w = rng.integers(-half, half, size=(N, K))
        u = w & ((1 << bits) - 1)
    else:
        u = w = _codes(rng, (N, K), bits, code_kind)
    psum = _psum(rng, cfg, (M, N), psum_kind)
    beats = []
    for j in range(groups):
        cols = slice(j * g, (j + 1) * g)
        planes = list(range(bits))
        if shuffle:
            rng.shuffle(planes)
        for p in planes:
            wb = (((u[:, cols] >> p) & 1) << np.arange(g)).sum(1)
            beats.append({"plane": p, "sign": int(signed and p == bits - 1), "first": 0,
                          "last": 0, "w": _lol(wb), "x": _lol(x[:, cols]), "psum": _lol(psum)})
    beats[0]["first"], beats[-1]["last"] = 1, 1
    if signed:
        acc = golden.fast_partials(x, w, K)[..., 0]
    else:
        acc = golden.uniform_partials_bitserial(x, u, np.zeros((N, 1), np.int64), bits, K)[..., 0]
    return beats, _lol(_acc(cfg, psum + acc))


def bitserial_random(cfg, rng, name, n=12, ready="always", valid="always"):
    pe = cfg.pe
    tiles = []
    for _ in range(n):
        if rng.random() < 0.7:
            b = int(rng.choice(pe.weight_bits))
            tiles.append(bitserial_tile(cfg, rng, b, False, int(rng.integers(1, 3)),
                                        psum_kind=str(rng.choice(["small", "big"]))))
        else:
            tiles.append(bitserial_tile(cfg, rng, pe.centroid_bits, True,
                                        int(rng.integers(1, 3))))
    return tiles_scenario(name, tiles, ready=ready, valid=valid)


def bitserial_corners(cfg, rng, name):
    pe = cfg.pe
    tiles = []
    for b in pe.weight_bits:
        for xk in ("min", "max"):
            for ck in ("zeros", "ones"):
                tiles.append(bitserial_tile(cfg, rng, b, False, 1, xk, ck, "zero", False))
        tiles.append(bitserial_tile(cfg, rng, b, False, 1, "max", "ones", "max", False))
    for b in sorted({pe.centroid_bits, *[b for b in pe.weight_bits if b >= 2]}):
        for xk in ("min", "max"):
            for ck in ("ones", "min", "zeros"):   # −1, −2^(b−1): the sign plane alone
                tiles.append(bitserial_tile(cfg, rng, b, True, 1, xk, ck, "zero", False))
    return tiles_scenario(name, tiles)


# -- the MAC systolic array -----------------------------------------------------------------------

def mac_tile(cfg, rng, wbits, tokens, x_kind="random", w_kind="random", psum_kind="small",
             uniform_bits=None):
    """A weight load (R beats) and `tokens` activation rows. Weights are signed `wbits`-bit
    integers, or with `uniform_bits` the dequantized `q − z` of random codes and zeros
    (`golden.decode_uniform`). Expected per token row `psum + fast_partials(x, W^T)`."""
    pe = cfg.pe
    R, C = pe.rows, pe.cols
    if uniform_bits:
        q = _codes(rng, (C, R), uniform_bits, w_kind)
        z = rng.integers(0, 1 << uniform_bits, size=(C, 1))
        wt = golden.decode_uniform(q, z, R)          # [C, R]: N x K
    else:
        half = 1 << (wbits - 1)
        if w_kind == "min":
            wt = np.full((C, R), -half, np.int64)
        elif w_kind == "max":
            wt = np.full((C, R), half - 1, np.int64)
        else:
            wt = rng.integers(-half, half, size=(C, R))
    x = _acts(rng, (tokens, R), x_kind)
    psum = _psum(rng, cfg, (tokens, C), psum_kind)
    items = [("w", {"w": _lol(wt[:, r])}) for r in range(R)]
    items += [("i", {"x": _lol(x[t]), "psum": _lol(psum[t])}) for t in range(tokens)]
    acc = golden.fast_partials(x, wt, R)[..., 0]
    return items, [_lol(v) for v in _acc(cfg, psum + acc)]


def mac_scenario(cfg, rng, name, tiles_spec, ready="always", valid="always"):
    items, expected, completes = [], [], []
    for spec in tiles_spec:
        its, outs = mac_tile(cfg, rng, **spec)
        base = len(items)
        items += its
        act_idx = [base + k for k, (p, _) in enumerate(its) if p == "i"]
        completes += act_idx
        expected += outs
    return Scenario(name, items, expected, completes, ready=ready, valid=valid)


def mac_scenarios(cfg, rng, n):
    """Corners (all-min/all-max activations and weights, every uniform width as `q − z`, all-zero
    and all-one codes, psum at the top of the range), `n` random folds back to back, and a
    stalled-output run."""
    pe = cfg.pe
    from rtl.mac_pe import mac_weight_bits
    wb = mac_weight_bits(cfg)
    corners = [dict(wbits=wb, tokens=3, x_kind=xk, w_kind=wk, psum_kind="zero")
               for xk in ("min", "max") for wk in ("min", "max")]
    corners += [dict(wbits=wb, tokens=2, uniform_bits=b, w_kind=wk)
                for b in pe.weight_bits for wk in ("zeros", "ones", "random")]
    corners += [dict(wbits=wb, tokens=2, x_kind="max", w_kind="max", psum_kind="max")]
    rand = [dict(wbits=wb, tokens=int(rng.integers(1, 12)), psum_kind="big") for _ in range(n)]
    return [
        mac_scenario(cfg, rng, "corners", corners),
        mac_scenario(cfg, rng, "back-to-back random", rand),
        mac_scenario(cfg, rng, "stalled output", rand[: max(2, n // 2)], ready="stall",
                             valid="random"),
    ]
