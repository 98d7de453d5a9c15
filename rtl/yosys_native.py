"""Run a Yosys script in the native Yosys of the `pyosys` wheel: `python -m rtl.yosys_native
-l LOG -p SCRIPT` (the subset of the `yosys` command line that `rtl.verilog` uses).

Why not the yowasp build: it is WebAssembly, limited to a 4 GiB address space, and it stops with
a wasm trap on the whole core (measured: the small LUT core's `synth_ecp5` flatten needs ~12 GB,
`-noflatten` ~2 GB). `pyosys` is the same Yosys release built natively, from pip, for Linux x86_64
and aarch64 and macOS. It runs in its own process: importing it sets `RTLD_GLOBAL`, and Yosys keeps
global state between designs.
"""

import argparse
import os
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rtl.yosys_native")
    ap.add_argument("-p", dest="script", required=True, help="commands, separated by ';'")
    ap.add_argument("-l", dest="log", help="log file (default: standard output)")
    ap.add_argument("-q", action="store_true", help="accepted for yosys compatibility")
    args = ap.parse_args(argv)
    if args.log:                       # Yosys logs to the C stdout: point it at the file
        sys.stdout.flush()
        fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.close(fd)
    from pyosys import libyosys as ys
    design = ys.Design()
    try:
        ys.run_pass(args.script, design)
    except Exception as exc:           # log_error: the message is in the log as well
        print(f"yosys: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
