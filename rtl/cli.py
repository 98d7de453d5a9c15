"""`bitlut verilog`: Verilog for FPGA, lint, synthesis and a resource report (rtl/verilog.py).

Kept cheap to import: amaranth and the RTL load inside the command function.
"""

from bitlut.errors import UserError


def register(sub):
    p = sub.add_parser("verilog", help="Verilog for FPGA, Verilator lint, Yosys/nextpnr report")
    p.add_argument("--arch", default="arch/configs/lut.yaml",
                   help="architecture config (a YAML path or a shipped name: lut, bitserial, mac, "
                   "or the board configs ecp5, artix7)")
    p.add_argument("-o", "--out", default=None,
                   help="output folder (default build/verilog/<tag>)")
    p.add_argument("--no-synth", action="store_true", help="export and lint only")
    p.add_argument("--no-pnr", action="store_true", help="skip nextpnr (Fmax)")
    p.add_argument("--compare", action="store_true",
                   help="also synthesize lut/bitserial/mac at equal peak throughput (W2A8, "
                        "W4A8) into build/verilog/compare/")
    p.set_defaults(func=run)


def run(args):
    from arch import config
    from rtl import units, verilog

    cfg = config.load(args.arch)
    errors = units.timing_errors(cfg)
    if errors:
        # the cycle model would time another machine than the one this Verilog describes
        raise UserError(f"{cfg.source}: {errors[0]}")
    report = verilog.build(cfg, args.out, do_synth=not args.no_synth,
                           do_pnr=not (args.no_pnr or args.no_synth))
    if args.compare:
        verilog.compare()
    bad = [n for n, d in report["designs"].items() if d["lint"]["ok"] is False]
    if bad:
        raise UserError(f"lint of {', '.join(bad)} must be clean, not failing "
                        f"(see {report['designs'][bad[0]]['lint']['log']})")
    errors = [f"{n} {t}" for n, d in report["designs"].items()
              for t in ("ecp5", "xilinx", "cmos") if "error" in d.get(t, {})]
    if errors:
        print(f"bitlut verilog: synthesis failed for {', '.join(errors)}")
        return 1
    return 0
