"""Calibrating the area model against synthesis: small PE arrays through Yosys (`stat -tech
cmos`), cached by a hash of the arrays' sources (`SOURCES`) and the CMOS script, and the lane
model of `dse.area` fitted to them.

    python -m dse.synth [--force]     # synthesize what the caches lack (seconds per array)

The caches (dse/data/synth_cmos.json; dse/data/synth_fpga.json: ECP5 LUTs, FFs and DSPs,
7-series LUTs) record each array's configuration, its resources and the hash of the sources and
scripts it was synthesized from; when they change, the records are stale and `fit` / `fit_fpga`
say so (the report then marks the model uncalibrated). Each PE
kind's lane cost is fitted by least squares over the `fit` arrays,

    transistors = lanes * (c_acc * acc_bits + c_dp * datapath) + c0,

(`dse.area` defines `datapath`: table entries x entry bits, group x activation bits, or
activation x weight bits), and checked on the `holdout` arrays: the gate is 5% (papers/dse.md
section 4, for CMOS transistors and ECP5 resources), 15% for 7-series LUTs. The FPGA
resources are fitted with the same terms per target.
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
FPGA_CACHE = Path(__file__).parent / "data" / "synth_fpga.json"
GATE = 0.05
# The FPGA resources fitted per target, each with its held-out gate (papers/dse.md section 4:
# 5%, and 15% for 7-series LUTs, whose packing into LUT6/MUXF is less regular).
FPGA = {("ecp5", "luts"): 0.05, ("ecp5", "ffs"): 0.05, ("ecp5", "dsps"): 0.05,
        ("xilinx", "luts"): 0.15}
FPGA_TARGETS = tuple(dict.fromkeys(t for t, _ in FPGA))
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


def rtl_hash(targets=("cmos",)):
    """sha256 (16 hex digits) of the arrays' sources and the synthesis scripts of `targets`."""
    from rtl import verilog
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (ROOT / "rtl" / name).read_bytes() + b"\0")
    for target in targets:
        h.update(verilog._SCRIPTS[target].encode())
    return h.hexdigest()[:16]


def fpga_hash():
    return rtl_hash(FPGA_TARGETS)


def point_config(kind, rows, cols, group, centroid_bits):
    from arch import config
    base = config.load(kind)
    return base.replace(pe=dataclasses.replace(base.pe, rows=rows, cols=cols, group=group,
                                               centroid_bits=centroid_bits))


def point_name(spec):
    kind, rows, cols, group, cbits, _ = spec
    return f"{kind}{rows}x{cols}_g{group}_c{cbits}"


def _synth(spec, out_dir, target):
    """`rtl.verilog.resources` of one array (its PE-array design only) for `target`."""
    from rtl import verilog
    cfg = point_config(*spec[:5])
    design = DESIGN[cfg.pe.kind]
    folder = Path(out_dir) / point_name(spec)
    paths, _ = verilog.export(cfg, folder, names=[design])
    res = verilog.resources(target, verilog.synth(paths[design], design, target,
                                                  folder / "synth"))
    if "error" in res:
        raise RuntimeError(f"{point_name(spec)} ({target}): {res['error']}")
    return res


def synthesize(spec, out_dir):
    """CMOS transistors of one array."""
    t0 = time.time()
    res = _synth(spec, out_dir, "cmos")
    return {"transistors": res["transistors"], "seconds": round(time.time() - t0, 1)}


def synthesize_fpga(spec, out_dir):
    """The fitted FPGA resources (`FPGA`) of one array: {target: {resource: count}}."""
    t0 = time.time()
    out = {}
    for target in FPGA_TARGETS:
        res = _synth(spec, out_dir, target)
        out[target] = {r: res[r] for t, r in FPGA if t == target}
    return {**out, "seconds": round(time.time() - t0, 1)}


def load_cache(path=CACHE):
    if not Path(path).exists():
        return {"rtl_hash": None, "records": {}}
    return json.loads(Path(path).read_text())


def measure(force=False, path=CACHE, out_dir=ROOT / "build" / "dse" / "synth", log=print,
            fpga=False):
    """Synthesize every point the cache lacks (all of them when the RTL hash changed or
    `force`), updating the cache after each one: CMOS into `CACHE`, or with `fpga` the FPGA
    targets into `FPGA_CACHE`."""
    now, run = (fpga_hash(), synthesize_fpga) if fpga else (rtl_hash(), synthesize)
    cache = load_cache(path)
    if force or cache.get("rtl_hash") != now:
        cache = {"rtl_hash": now, "records": {}}
    for spec in POINTS:
        name = point_name(spec)
        if name in cache["records"]:
            continue
        log(f"synth {name} ...")
        cache["records"][name] = {"spec": list(spec), **run(spec, out_dir)}
        log(f"synth {name}: {cache['records'][name]}")
        atomic_write(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cache


def _features(cfg):
    lanes = cfg.pe.rows * cfg.pe.cols
    return [lanes * cfg.pe.acc_bits, lanes * area_model.datapath(cfg), 1.0]


def _fit_kind(recs, value, gate, fresh):
    """The lane model fitted to the `fit` records of one kind (least squares) and checked on
    its `holdout` ones, `value(record)` the synthesized figure; None without enough records.
    An error is relative to the synthesized figure, or absolute where that is 0 (the DSPs of
    an array without multipliers)."""
    train = [r for r in recs if r["spec"][5] == "fit"]
    held = [r for r in recs if r["spec"][5] == "holdout"]
    if len(train) < 3 or not held:
        return None
    a = np.array([_features(point_config(*r["spec"][:5])) for r in train])
    y = np.array([value(r) for r in train], float)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)

    def err(r):
        x = np.array(_features(point_config(*r["spec"][:5])))
        got = value(r)
        return float(x @ coef) / got - 1 if got else float(x @ coef)

    held_err = {point_name(r["spec"]): err(r) for r in held}
    worst = max(abs(e) for e in held_err.values())
    return {"coef": [float(c) for c in coef],
            "fit_errors": {point_name(r["spec"]): err(r) for r in train},
            "holdout_errors": held_err,
            "mape": float(np.mean([abs(e) for e in held_err.values()])),
            "worst": worst, "calibrated": fresh and worst <= gate}


def _by_kind(cache):
    return {kind: [r for r in cache["records"].values() if r["spec"][0] == kind]
            for kind in DESIGN}


def fit(cache=None):
    """{kind: {coef, fit errors, holdout errors, mape, worst, calibrated}} of the CMOS
    transistors and whether the cache matches the current RTL."""
    cache = load_cache() if cache is None else cache
    fresh = cache.get("rtl_hash") == rtl_hash()
    out = {}
    for kind, recs in _by_kind(cache).items():
        f = _fit_kind(recs, lambda r: r["transistors"], GATE, fresh)
        if f is not None:
            out[kind] = f
    return out, fresh


def fit_fpga(cache=None):
    """{(target, resource): {kind: fit}} of the FPGA resources (`FPGA`, each with its gate)
    and whether the cache matches the current RTL and scripts."""
    cache = load_cache(FPGA_CACHE) if cache is None else cache
    fresh = cache.get("rtl_hash") == fpga_hash()
    out = {}
    for (target, res), gate in FPGA.items():
        for kind, recs in _by_kind(cache).items():
            f = _fit_kind(recs, lambda r, t=target, q=res: r[t][q], gate, fresh)
            if f is not None:
                out.setdefault((target, res), {})[kind] = f
    return out, fresh


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m dse.synth", description=__doc__)
    p.add_argument("--force", action="store_true", help="synthesize every point again")
    args = p.parse_args(argv)
    measure(force=args.force)
    measure(force=args.force, path=FPGA_CACHE, fpga=True)
    fits = {("cmos", "transistors"): fit()[0], **fit_fpga()[0]}
    for (target, res), kinds in fits.items():
        for kind, f in kinds.items():
            print(f"{target} {res} {kind}: coef {[round(c, 3) for c in f['coef']]}, held-out "
                  f"MAPE {f['mape']:.1%}, worst {f['worst']:.1%}, "
                  f"{'calibrated' if f['calibrated'] else 'uncalibrated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
