"""Calibrating the area model against synthesis: small PE arrays through Yosys (`stat -tech
cmos`), cached by a hash of the arrays' sources (`SOURCES`) and the CMOS script, and the lane
model of `dse.area` fitted to them.

    python -m dse.synth [--force]     # synthesize what the cache lacks (minutes per array)

The cache (dse/data/synth_cmos.json) records each array's configuration, its transistor count
and the hash of the sources it was synthesized from; when they change, the
records are stale and `fit` says so (the report then marks the model uncalibrated). Each PE
kind's lane cost is fitted by least squares over the `fit` arrays,

    transistors = lanes * (c_acc * acc_bits + c_dp * datapath) + c0,

(`dse.area` defines `datapath`: table entries x entry bits, group x activation bits, or
activation x weight bits), and checked on the `holdout` arrays: the gate is 5% (papers/dse.md
section 4, for CMOS transistors).
"""

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from bitlut.fileio import atomic_write
from dse import area as area_model

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).parent / "data" / "synth_cmos.json"
GATE = 0.05
DESIGN = {"lut": "lut_pe", "bitserial": "bitserial_pe", "mac": "mac_pe"}
# (kind, rows, cols, group, centroid_bits, role): small enough for minutes of synthesis each;
# each kind varies its lane count and its datapath width, so both terms are determined.
POINTS = (
    ("lut", 2, 4, 4, 8, "fit"), ("lut", 2, 8, 4, 8, "fit"), ("lut", 2, 4, 4, 16, "fit"),
    ("lut", 2, 8, 4, 16, "holdout"),
    ("bitserial", 2, 4, 4, 8, "fit"), ("bitserial", 2, 8, 4, 8, "fit"),
    ("bitserial", 2, 4, 2, 8, "fit"), ("bitserial", 2, 8, 2, 8, "holdout"),
    ("mac", 2, 2, 1, 8, "fit"), ("mac", 4, 4, 1, 8, "fit"), ("mac", 2, 2, 1, 16, "fit"),
    ("mac", 4, 4, 1, 16, "holdout"),
)


#: What a PE array's transistor count depends on: the arrays' sources and the CMOS flow (not
#: the rest of `rtl/`, so a change to the core or the FPGA shell keeps the records).
SOURCES = ("common.py", "lut_pe.py", "bitserial_pe.py", "mac_pe.py")


def rtl_hash():
    from rtl import verilog
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (ROOT / "rtl" / name).read_bytes() + b"\0")
    h.update(verilog._SCRIPTS["cmos"].encode())
    return h.hexdigest()[:16]


def point_config(kind, rows, cols, group, centroid_bits):
    from arch import config
    base = config.load(kind)
    return base.replace(pe=dataclasses.replace(base.pe, rows=rows, cols=cols, group=group,
                                               centroid_bits=centroid_bits))


def point_name(spec):
    kind, rows, cols, group, cbits, _ = spec
    return f"{kind}{rows}x{cols}_g{group}_c{cbits}"


def synthesize(spec, out_dir):
    """CMOS transistors of one array (its PE-array design only)."""
    from rtl import verilog
    cfg = point_config(*spec[:5])
    design = DESIGN[cfg.pe.kind]
    folder = Path(out_dir) / point_name(spec)
    paths, _ = verilog.export(cfg, folder, names=[design])
    t0 = time.time()
    res = verilog.resources("cmos", verilog.synth(paths[design], design, "cmos",
                                                  folder / "synth"))
    if "error" in res:
        raise RuntimeError(f"{point_name(spec)}: {res['error']}")
    return {"transistors": res["transistors"], "seconds": round(time.time() - t0, 1)}


def load_cache(path=CACHE):
    if not Path(path).exists():
        return {"rtl_hash": None, "records": {}}
    return json.loads(Path(path).read_text())


def measure(force=False, path=CACHE, out_dir=ROOT / "build" / "dse" / "synth", log=print):
    """Synthesize every point the cache lacks (all of them when the RTL hash changed or
    `force`), updating the cache after each one."""
    cache = load_cache(path)
    now = rtl_hash()
    if force or cache.get("rtl_hash") != now:
        cache = {"rtl_hash": now, "records": {}}
    for spec in POINTS:
        name = point_name(spec)
        if name in cache["records"]:
            continue
        log(f"synth {name} ...")
        cache["records"][name] = {"spec": list(spec), **synthesize(spec, out_dir)}
        log(f"synth {name}: {cache['records'][name]}")
        atomic_write(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cache


def _features(cfg):
    lanes = cfg.pe.rows * cfg.pe.cols
    return [lanes * cfg.pe.acc_bits, lanes * area_model.datapath(cfg), 1.0]


def fit(cache=None):
    """{kind: {coef, fit errors, holdout errors, mape, worst, calibrated}} and whether the cache
    matches the current RTL."""
    cache = load_cache() if cache is None else cache
    fresh = cache.get("rtl_hash") == rtl_hash()
    out = {}
    for kind in DESIGN:
        recs = [r for r in cache["records"].values() if r["spec"][0] == kind]
        train = [r for r in recs if r["spec"][5] == "fit"]
        held = [r for r in recs if r["spec"][5] == "holdout"]
        if len(train) < 3 or not held:
            continue
        a = np.array([_features(point_config(*r["spec"][:5])) for r in train])
        y = np.array([r["transistors"] for r in train], float)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)

        def err(r, coef=coef):
            x = np.array(_features(point_config(*r["spec"][:5])))
            return float(x @ coef) / r["transistors"] - 1

        held_err = {point_name(r["spec"]): err(r) for r in held}
        worst = max(abs(e) for e in held_err.values())
        out[kind] = {"coef": [float(c) for c in coef],
                     "fit_errors": {point_name(r["spec"]): err(r) for r in train},
                     "holdout_errors": held_err,
                     "mape": float(np.mean([abs(e) for e in held_err.values()])),
                     "worst": worst, "calibrated": fresh and worst <= GATE}
    return out, fresh


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m dse.synth", description=__doc__)
    p.add_argument("--force", action="store_true", help="synthesize every point again")
    args = p.parse_args(argv)
    measure(force=args.force)
    fits, fresh = fit()
    for kind, f in fits.items():
        print(f"{kind}: coef {f['coef']}, held-out MAPE {f['mape']:.1%}, worst "
              f"{f['worst']:.1%}, {'calibrated' if f['calibrated'] else 'uncalibrated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
