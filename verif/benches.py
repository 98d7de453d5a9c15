"""The verif side of `rtl.units`: for each unit name, its scenarios, config variants and interval
check, and `verify`, the one checker that the Amaranth-simulator and cocotb tests share.

A `Bench` holds what differs between units; everything else (bit-exact outputs against
`sim.golden` through `verif.vectors`, the config's timing against the unit's pipeline, the
measured latency against the pipeline) is the same code for every unit and backend.
"""

from dataclasses import dataclass

from arch import timing
from rtl import units
from rtl.mac_pe import mac_weight_bits
from rtl.table_unit import table_geometry

from . import vectors
from .configs import long_run
from .harness import check

__all__ = ["Bench", "BENCHES", "timed", "tiles", "verify"]


@dataclass(frozen=True)
class Bench:
    """What the tests of one unit need besides `rtl.units.Unit`.

    Members
    -------
    scenarios : callable
        `(cfg, rng, n) -> [Scenario]` with `n` random tiles (or beats) each: the timed ones
        (source always valid, sink always ready) and a stalled output.
    shipped : callable
        `(cfg, rng) -> Scenario`: a short timed run for the full-size shipped config.
    tiles : (int, int)
        `n` for `scenarios`, normally and under `BITLUT_RTL_LONG`.
    variants : dict
        Variant name -> `pe` changes for `verif.configs.small`; the first is the plain small
        config (the one cocotb runs).
    intervals : callable
        `(cfg, pipeline, scenario, trace, where)`: asserts the input intervals of a timed run.
    """
    scenarios: object
    shipped: object
    tiles: tuple
    variants: dict
    intervals: object


def timed(scenario):
    """True for a run whose latency and intervals are the unit's own (no stalls on either side)."""
    return scenario.ready == "always" and scenario.valid == "always"


def tiles(bench):
    """The random tiles per scenario for this run (`BITLUT_RTL_LONG` selects the long count)."""
    return bench.tiles[1] if long_run() else bench.tiles[0]


def verify(unit, cfg, scenarios, traces, where):
    """Check a unit's runs: `cfg.timing` equals the unit's pipeline (`rtl.units`), every output
    equals the golden one bit for bit, and in each timed run every latency is the pipeline's
    and the bench's interval check holds."""
    units.check_timing(cfg)
    pipeline = unit.pipeline(cfg)
    for sc, tr in zip(scenarios, traces, strict=True):
        lat, _ = check(sc, tr, where)
        if timed(sc):
            assert set(lat) == {pipeline.latency}, (
                f"{where} scenario {sc.name!r}: latencies {sorted(set(lat))}, but the "
                f"{unit.component.__name__} is built with a latency of {pipeline.latency}")
            BENCHES[unit.name].intervals(cfg, pipeline, sc, tr, where)


def _every_beat(cfg, pipeline, sc, tr, where):
    # No bubbles between beats or tiles: every input handshake follows the previous one by ii.
    ii = {b - a for a, b in zip(tr.in_cycles, tr.in_cycles[1:], strict=False)}
    assert ii == {pipeline.ii}, f"{where} scenario {sc.name!r}: intervals {sorted(ii)}"


def _mac_folds(cfg, pipeline, sc, tr, where):
    pe = cfg.pe
    tag = f"{where} scenario {sc.name!r}"
    # Within a fold, weight rows and then activation rows are accepted one per ii.
    ports = [p for p, _ in sc.items]
    cyc = tr.in_cycles
    runs = {cyc[k + 1] - cyc[k] for k in range(len(cyc) - 1) if ports[k] == ports[k + 1]}
    assert runs == {pipeline.ii}, f"{tag}: intervals {sorted(runs)}"
    # A weight load waits for the array to drain: the first weight row of the next fold is
    # accepted the cycle after the previous fold's last result.
    starts = [k for k in range(len(ports)) if ports[k] == "w" and (k == 0 or ports[k - 1] == "i")]
    for k in starts[1:]:
        last_out = max(c for c in tr.out_cycles if c < cyc[k])
        assert cyc[k] == last_out + 1, f"{tag}: weight row {k} at cycle {cyc[k]}, last result "\
                                       f"at {last_out}"
    # So a fold (R weight rows, T token rows), first weight row to the next fold's, takes what
    # the cycle model charges for it.
    for k0, k1 in zip(starts, starts[1:], strict=False):
        tokens = k1 - k0 - pe.rows
        fold = cyc[k1] - cyc[k0]
        model = timing.mac_fold_cycles(cfg, tokens)
        assert fold == model, f"{tag}: a fold of {tokens} tokens took {fold} cycles, " \
                              f"arch.timing.mac_fold_cycles charges {model}"


def _table_scenarios(cfg, rng, n):
    geom = table_geometry(cfg)
    return [
        vectors.table_scenario(cfg, geom, rng, "corners+random", n=n, corners=True),
        vectors.table_scenario(cfg, geom, rng, "stalled output", n=n, ready="stall",
                               valid="random"),
    ]


def _table_shipped(cfg, rng):
    return vectors.table_scenario(cfg, table_geometry(cfg), rng, "shipped table unit", n=8)


def _lut_scenarios(cfg, rng, n):
    geom = table_geometry(cfg)
    return [
        vectors.lut_corners(cfg, geom, rng, "corners"),
        vectors.lut_random(cfg, geom, rng, "back-to-back random", n=n),
        vectors.lut_random(cfg, geom, rng, "stalled output", n=n, ready="stall", valid="random"),
    ]


def _lut_shipped(cfg, rng):
    geom = table_geometry(cfg)
    tiles = [vectors.lut_uniform_tile(cfg, geom, rng, b) for b in cfg.pe.weight_bits]
    tiles.append(vectors.lut_codebook_tile(cfg, geom, rng, 2, groups=2))
    return vectors.tiles_scenario("shipped lut", tiles)


def _bitserial_scenarios(cfg, rng, n):
    return [
        vectors.bitserial_corners(cfg, rng, "corners"),
        vectors.bitserial_random(cfg, rng, "back-to-back random", n=n),
        vectors.bitserial_random(cfg, rng, "stalled output", n=n, ready="stall", valid="random"),
    ]


def _bitserial_shipped(cfg, rng):
    tiles = [vectors.bitserial_tile(cfg, rng, b) for b in (1, 4, 8)]
    tiles.append(vectors.bitserial_tile(cfg, rng, cfg.pe.centroid_bits, signed=True))
    return vectors.tiles_scenario("shipped bitserial", tiles)


def _mac_shipped(cfg, rng):
    return vectors.mac_scenario(cfg, rng, "shipped mac",
                                [dict(wbits=mac_weight_bits(cfg), tokens=3)])


BENCHES = {
    "table_unit": Bench(
        _table_scenarios, _table_shipped, (24, 400),
        {"g4_sym": {}, "g4_full": {"symmetric": False}, "g2_sym": {"group": 2},
         "g3_sym": {"group": 3}, "g5_sym_ib5": {"group": 5, "index_bits": 5},
         "w1_only": {"weight_bits": (1,)},
         "uniform_only": {"codebook": False, "centroid_bits": 16}},
        _every_beat),
    "lut_pe": Bench(
        _lut_scenarios, _lut_shipped, (10, 200),
        {"g4_sym": {}, "g4_full": {"symmetric": False}, "g2_sym": {"group": 2},
         "g3_full": {"group": 3, "symmetric": False},
         "g5_sym_ib5": {"group": 5, "index_bits": 5}, "acc16": {"acc_bits": 16},
         "acc16_sat": {"acc_bits": 16, "saturate": True},
         "w1_only": {"weight_bits": (1,)},
         "uniform_only": {"codebook": False, "centroid_bits": 16}},
        _every_beat),
    "bitserial_pe": Bench(
        _bitserial_scenarios, _bitserial_shipped, (10, 200),
        {"g4": {}, "g1": {"group": 1}, "g8_acc24": {"group": 8, "acc_bits": 24},
         "acc16_sat": {"acc_bits": 16, "saturate": True}, "cb16": {"centroid_bits": 16}},
        _every_beat),
    "mac_pe": Bench(
        vectors.mac_scenarios, _mac_shipped, (8, 200),
        {"4x4": {}, "2x2": {"rows": 2, "cols": 2}, "1x1": {"rows": 1, "cols": 1},
         "8x8_cb16": {"rows": 8, "cols": 8, "centroid_bits": 16}},
        _mac_folds),
}
