"""Run the benchmarks: `python -m bench [NAME ...]`.

Each `bench/bench_<name>.py` defines `run() -> dict` returning measured figures and, where an issue
sets one, the target and whether it was met (`{"target": ..., "met": bool}`).
"""

import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

from bitlut.fileio import atomic_write

OUT = Path("build/bench")


def main(argv):
    import bench
    names = [m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__)
             if m.name.startswith("bench_")]
    if argv:
        unknown = sorted(set(argv) - set(names))
        if unknown:
            print(f"bench: unknown benchmark(s) {', '.join(unknown)}; have {', '.join(names)}")
            return 2
        names = argv
    for name in sorted(names):
        module = importlib.import_module(f"bench.bench_{name}")
        t0 = time.perf_counter()
        result = module.run()
        result.setdefault("wall_s", round(time.perf_counter() - t0, 3))
        result["machine"] = {"python": platform.python_version(), "cpu": platform.processor()
                             or platform.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        path = atomic_write(OUT / f"{name}.json", json.dumps(result, indent=2) + "\n")
        print(f"bench {name}: {path}")
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
