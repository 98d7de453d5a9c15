"""`bitlut dse`: run a design-space sweep and write its report (`make dse SWEEP=...`)."""

import sys

from bitlut.errors import UserError


def register(sub):
    p = sub.add_parser("dse", help="design-space sweep: roofline + area + energy for every "
                       "point, SimPy near the Pareto front, a report (resumes by default)",
                       description="Run the sweep in SWEEP.yaml (or a shipped sweep's name) "
                       "into its store (build/dse/<name>/store.sqlite) and write the report "
                       "(reports/out/<name>/). A killed sweep run again evaluates only the "
                       "points the store lacks.")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--executor", default="process", choices=("process", "dask", "serial"),
                   help="where points run: a local process pool (default), Dask, or inline")
    p.add_argument("--workers", type=int, default=None,
                   help="pool processes or LocalCluster workers (default: the CPUs)")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="with --executor dask: an existing Dask scheduler instead of a "
                        "LocalCluster")
    p.add_argument("--store", metavar="FILE", help="result store (default "
                   "build/dse/<name>/store.sqlite)")
    p.add_argument("--out", metavar="DIR", help="report folder (default reports/out/<name>)")
    p.add_argument("--fresh", action="store_true", help="discard the store and start over")
    p.add_argument("--no-sim", action="store_true", help="roofline rung only")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the sweep and count its points; evaluate nothing")
    p.add_argument("--report-only", action="store_true",
                   help="render the report from the store; evaluate nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=dse_cmd)

    c = sub.add_parser("calibrate-gpu", help="fit a GPU's roofline efficiency terms (and the "
                       "int4 weight-only kernel's dequantization cost) to measured layer times",
                       description="Fit dse.gpu's model to a calibration JSON (measure one with "
                       "`python -m dse.gpu_measure -o F.json`) and print the fit and its error "
                       "on held-out token counts.")
    c.add_argument("measured", nargs="?", metavar="FILE.json",
                   help="measured layer times (default: the shipped H100 set)")
    c.add_argument("--gpu", default="h100_sxm", help="a GPU of arch/gpus.yaml for the peaks")
    c.add_argument("--json", metavar="FILE", help="write the fit as JSON")
    c.set_defaults(func=calibrate_cmd)


def calibrate_cmd(args):
    import json

    from arch import roofline
    from bitlut.fileio import atomic_write
    from dse import gpu
    gpus = roofline.load_gpus()
    if args.gpu not in gpus:
        raise UserError(f"--gpu must be one of {', '.join(gpus)}, not {args.gpu!r}")
    r = gpu.calibrate(gpus[args.gpu], args.measured or gpu.DATA)
    print(f"{args.gpu}: " + ", ".join(f"{k}={v:.4g}" for k, v in r["params"].items())
          + f", m_tile={r['m_tile']}; rms log error {r['rms_log_error']:.3f}")
    for name in ("fitted", "interpolate", "held_out"):
        errs = [abs(row[6]) for row in r[name]]
        if errs:
            print(f"  {name}: MAPE {sum(errs) / len(errs):.1%}, worst {max(errs):.1%} "
                  f"({len(errs)} shapes)")
        for dtype, m, n, k, t, pred, err in r[name]:
            print(f"    {dtype:7s} M={m:<5d} N={n} K={k}: measured {t * 1e6:9.1f} us, "
                  f"model {pred * 1e6:9.1f} us ({err:+.1%})")
    if args.json:
        atomic_write(args.json, json.dumps(r, indent=1) + "\n")
        print(f"wrote {args.json}")


def dse_cmd(args):
    from pathlib import Path

    from dse import driver, evaluate, report, sweep
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, not {args.workers}")
    sw = sweep.load(args.sweep)
    points = sw.points(evaluate.model_version())
    invalid = sum(p.invalid is not None for p in driver.unique_points(points))
    print(f"{sw.source}: {len(points)} points ({len(sw.workloads)} workloads x "
          f"{len(points) // len(sw.workloads)} configs), {invalid} invalid")
    if args.dry_run:
        return 0
    path = Path(args.store) if args.store else driver.store_path(sw)
    if args.fresh and path.exists():
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
    out = Path(args.out) if args.out else Path("reports") / "out" / sw.name
    with driver.Store(path) as store:
        failed = 0
        if not args.report_only:
            tty = sys.stderr.isatty() and not args.no_progress
            summary = driver.run(sw, store, executor=args.executor, workers=args.workers,
                                 scheduler=args.scheduler, sim=False if args.no_sim else None,
                                 show_progress=tty)
            print(f"evaluated {summary['roofline_new']} points by the roofline, "
                  f"{summary['sim_new']} by SimPy in {summary['sim_rounds']} rounds "
                  f"({'front converged' if summary['converged'] else 'SimPy budget spent'}); "
                  f"{summary['seconds']:.1f} s")
        failed = sum(r["status"] == "failed" for r in store.rows())
        written = report.render(sw, store, out)
    print(f"wrote {written['index']} and {written['readme']} ({len(written['files'])} files)")
    if failed:
        print(f"bitlut: {failed} points failed (see the report's failures table)",
              file=sys.stderr)
        return 1
    return 0
