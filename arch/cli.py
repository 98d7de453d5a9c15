"""`bitlut arch check`, `bitlut asm`, `bitlut disasm`, `bitlut isa-doc`."""

from pathlib import Path

from bitlut.errors import UserError


def register(sub):
    p = sub.add_parser("arch", help="architecture configs")
    asub = p.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    c = asub.add_parser("check", help="validate configs; print each one's tag and derived sizes")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(func=check)

    p = sub.add_parser("asm", help="assemble a text program into binary words")
    p.add_argument("source", metavar="FILE.s")
    p.add_argument("-o", "--output", required=True, metavar="FILE.bin")
    p.add_argument("--arch", metavar="CONFIG",
                   help="check addresses against this config's scratchpads")
    p.set_defaults(func=asm)

    p = sub.add_parser("disasm", help="print a program (.prog from compile, or raw .bin words) "
                       "as assembly")
    p.add_argument("program", metavar="FILE")
    p.add_argument("-n", "--numbered", action="store_true", help="prefix instruction indices")
    p.set_defaults(func=disasm)

    p = sub.add_parser("isa-doc", help="write the ISA reference page (docs/isa.md)")
    p.add_argument("-o", "--output", default="docs/isa.md")
    p.set_defaults(func=isa_doc)


def check(args):
    from arch import config
    for path in args.files:
        cfg = config.load(path)
        sizes = ", ".join(f"{k} {v} B" for k, v in config.tile_bytes(cfg).items())
        print(f"{path}: ok  tag={cfg.tag}  {cfg.pe.kind} {cfg.pe.rows}x{cfg.pe.cols} "
              f"@ {cfg.clock_mhz:g} MHz, DRAM {cfg.dram_bytes_per_cycle:.1f} B/cycle, "
              f"peak {cfg.peak_weights_per_cycle:g} weights/cycle; min tile: {sizes}")


def _read(path, binary=False):
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: file must exist, not missing")
    return p.read_bytes() if binary else p.read_text()


def asm(args):
    from arch import config, isa
    from bitlut.fileio import atomic_write
    cfg = config.load(args.arch) if args.arch else None
    words = isa.assemble(_read(args.source), cfg, source=args.source)
    atomic_write(args.output, isa.to_bytes(words))
    print(f"{args.output}: {len(words)} instructions")


def disasm(args):
    from arch import isa
    from arch.program import Program
    blob = _read(args.program, binary=True)
    if len(blob) > 8 and blob[8:9] == b"{":       # a safetensors program file from `compile`
        words = Program.load(args.program).words
    else:
        words = isa.from_bytes(blob, source=args.program)
    try:
        text = isa.disassemble(words, numbered=args.numbered)
    except isa.IsaError as e:
        raise isa.IsaError(f"{args.program}: {e}") from None
    print(text, end="")


def isa_doc(args):
    from arch import isa
    from bitlut.fileio import atomic_write
    atomic_write(args.output, isa.reference_markdown() + "\n")
    print(f"wrote {args.output}")
