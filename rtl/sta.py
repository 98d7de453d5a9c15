"""Longest register-to-register paths of a Yosys `synth_ecp5` netlist, before placement:
`python -m rtl.sta NETLIST.json [--top core] [-n 3]`.

Why: nextpnr prints its critical path only after routing, and the board core's routing takes
hours (docs/rtl.md); its post-placement estimate gives an Fmax but not the path. This walks the
netlist with a coarse delay per ECP5 cell arc and a fixed delay per net, which finds the paths
that are long in logic (chained multipliers, wide carry chains, deep multiplexers). A path that
is long only because its cells sit far apart on the die does not show here.

Delays (ns, speed grade 6, rounded from the ECP5 data sheet's and nextpnr's timing figures):
`DELAYS`. Start points: flip-flop outputs, block RAM outputs (clock to out) and the module's
inputs; end points: every input of a flip-flop, a block RAM or a LUT RAM's write side, and the
module's outputs. A carry chain's `CIN` is a dedicated wire (no net delay).
"""

import argparse
import json
import sys
from pathlib import Path

__all__ = ["DELAYS", "NET_NS", "paths", "main"]

#: A net's routing, whatever its length (a short hop on the ECP5's general routing).
NET_NS = 0.9

#: `{cell type: {(input port prefix, output port or None for any): ns}}` of the combinational
#: arcs; a cell type that is not here and not in `CLOCK_TO_OUT` ends paths at its inputs.
DELAYS = {
    "LUT4": {("", None): 0.4},
    "PFUMX": {("", None): 0.3},
    "L6MUX21": {("", None): 0.3},
    "CCU2C": {("CIN", "COUT"): 0.06, ("CIN", None): 0.3, ("", "COUT"): 0.5, ("", None): 0.6},
    "MULT18X18D": {("A", None): 5.0, ("B", None): 5.0},
    "TRELLIS_DPR16X4": {("RAD", None): 0.8},
}

#: Clock to output of the sequential cells (their outputs start paths).
CLOCK_TO_OUT = {"TRELLIS_FF": 0.5, "DP16KD": 4.0}


def _arc(cell_type, in_port, out_port):
    arcs = DELAYS.get(cell_type)
    if arcs is None:
        return None
    for (prefix, out), ns in arcs.items():       # the first matching arc, most specific first
        if in_port.startswith(prefix) and out in (None, out_port):
            return ns
    return None


def paths(netlist, top, count=3):
    """The `count` longest paths of module `top` of a Yosys JSON netlist (a dict): a list of
    `(ns, end cell type, end cell, end port, [(ns, net name, driver cell type), ...])`, the
    steps from the start point on."""
    mod = netlist["modules"][top]
    cells = mod["cells"]
    names = {}
    for name, net in mod["netnames"].items():
        for i, bit in enumerate(net["bits"]):
            if isinstance(bit, int) and (bit not in names or not name.startswith("$")):
                names[bit] = f"{name}[{i}]" if len(net["bits"]) > 1 else name
    driver = {}
    for cname, c in cells.items():
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = (cname, port)
    arrival = {}            # bit -> (ns, the input bit it came through)

    def visit(root):
        # iterative depth-first search: the netlist's paths are thousands of cells long
        stack = [root]
        while stack:
            bit = stack[-1]
            if bit in arrival:
                stack.pop()
                continue
            if bit not in driver:
                arrival[bit] = (0.0, None)
                stack.pop()
                continue
            cname, out_port = driver[bit]
            c = cells[cname]
            if c["type"] in CLOCK_TO_OUT:
                arrival[bit] = (CLOCK_TO_OUT[c["type"]], None)
                stack.pop()
                continue
            pending, best = [], (0.0, None)
            for port, bits in c["connections"].items():
                if c["port_directions"].get(port) != "input":
                    continue
                ns = _arc(c["type"], port, out_port)
                if ns is None:
                    continue
                net = 0.0 if (c["type"] == "CCU2C" and port == "CIN") else NET_NS
                for src in bits:
                    if not isinstance(src, int):
                        continue
                    if src not in arrival:
                        pending.append(src)
                    else:
                        t = arrival[src][0] + net + ns
                        if t > best[0]:
                            best = (t, src)
            if pending:
                stack.extend(pending)
            else:
                arrival[bit] = best
                stack.pop()

    ends = []
    for cname, c in cells.items():
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) != "input":
                continue
            if c["type"] in DELAYS and _arc(c["type"], port, None) is not None:
                continue                            # a combinational input, not an end point
            for bit in bits:
                if isinstance(bit, int):
                    visit(bit)
                    ends.append((arrival[bit][0] + NET_NS, c["type"], cname, port, bit))
    ends.sort(key=lambda e: -e[0])
    out = []
    for ns, ctype, cname, port, bit in ends[:count]:
        steps = []
        while bit is not None:
            t, prev = arrival[bit]
            d = driver.get(bit)
            steps.append((t, names.get(bit, str(bit)), cells[d[0]]["type"] if d else "input"))
            bit = prev
        out.append((ns, ctype, cname, port, steps[::-1]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rtl.sta", description=__doc__.split("\n")[0])
    ap.add_argument("netlist", help="a Yosys JSON netlist after synth_ecp5 (write_json)")
    ap.add_argument("--top", default="core", help="the module (default: core)")
    ap.add_argument("-n", type=int, default=3, help="paths to print (default: 3)")
    args = ap.parse_args(argv)
    path = Path(args.netlist)
    try:
        netlist = json.loads(path.read_text())
        modules = netlist["modules"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"rtl.sta: error: {path}: must be a Yosys JSON netlist ({exc})", file=sys.stderr)
        return 2
    if args.top not in modules:
        print(f"rtl.sta: error: {path}: `--top` must be one of its modules "
              f"({', '.join(sorted(modules)) or 'none'}), not {args.top!r}", file=sys.stderr)
        return 2
    for ns, ctype, cname, port, steps in paths(netlist, args.top, args.n):
        print(f"{ns:6.1f} ns to {ctype} {cname} .{port} ({1e3 / ns:.1f} MHz)")
        shown = []
        for t, name, kind in steps:             # a carry chain's cells as one line
            if shown and kind == "CCU2C" and shown[-1][2] == "CCU2C":
                shown[-1] = (t, name, kind)
            else:
                shown.append((t, name, kind))
        for t, name, kind in shown:
            print(f"  {t:6.1f}  {kind:<16} {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
