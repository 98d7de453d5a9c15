"""The shipped sweep (`make dse`: dse/sweeps/llama7b.yaml, 7,776 points: 12 workloads, the
weight formats and decode contexts, x 648 configs) from an empty store, the SimPy rung run until
the fronts stop changing or its budget (`ladder.max_sim_points`) is spent, on the default local
process pool (issue 12 target: <= 15 minutes on the 2-core machine). Its store and report go to
build/bench/dse_sweep/ (not the user's build/dse/llama7b/). The .q files are built first,
outside the timing."""

import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 15 * 60
OUT = Path("build/bench/dse_sweep")
QFILES = ("llama7b.q", "build/q/llama7b-rtn2.q", "build/q/llama7b-rtn3.q",
          "build/q/llama7b-rtn4.q")


def run():
    from dse import driver, report, sweep
    from dse.store import Store
    subprocess.run(["make", "--no-print-directory", *QFILES], check=True,
                   stdout=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    store_path = OUT / "store.sqlite"
    store_path.unlink(missing_ok=True)
    sw = sweep.load("dse/sweeps/llama7b.yaml")
    t0 = time.perf_counter()
    with Store(store_path) as st:
        summary = driver.run(sw, st, log=lambda line: print(line, file=sys.stderr))
        wall = time.perf_counter() - t0
        report.render(sw, st, OUT / "report")
    budget = sw.ladder["max_sim_points"]
    ended = summary["converged"] or (budget is not None and summary["sim_new"] >= budget)
    return {"sweep": sw.source, "points": summary["points"],
            "sim_points": summary["sim_new"], "sim_rounds": summary["sim_rounds"],
            "converged": summary["converged"], "sweep_s": round(wall, 1),
            "target": {"sweep_s_max": TARGET_S, "met": wall <= TARGET_S and ended}}
