"""`bitlut compile` and `bitlut run`."""

import json
import urllib.parse

from bitlut import args as checks
from bitlut.errors import UserError

NAME_BYTES_MAX = 250        # file systems allow 255 bytes per name; ".prog" takes 5


def register(sub):
    p = sub.add_parser("compile", help="lower every layer of a .q file to ISA programs")
    _common(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   type=checks.arg(checks.output_dir, "-o"),
                   help="folder for <layer>.prog files and report.json")
    p.set_defaults(func=compile_cmd)

    p = sub.add_parser("run", help="compile, execute on the functional executor, and compare "
                       "with the PyTorch reference")
    _common(p)
    p.add_argument("--seed", type=checks.seed(), default=0,
                   help="seed of the sample activations")
    p.add_argument("--json", metavar="FILE", type=checks.arg(checks.output_file, "--json"),
                   help="write the per-layer results as JSON")
    p.set_defaults(func=run_cmd)


def _common(p):
    p.add_argument("qfile", metavar="FILE.q")
    p.add_argument("--arch", default="arch/configs/lut.yaml", metavar="CONFIG")
    p.add_argument("--tokens", type=checks.tokens(), default=1, metavar="M",
                   help="token rows (default 1)")
    p.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers")


def _load(args):
    import quant
    from arch import config
    cfg = config.load(args.arch)
    model = quant.load(args.qfile)
    names = list(model.layers)
    if args.layers:
        unknown = [n for n in args.layers if n not in model.layers]
        if unknown:
            raise UserError(f"{args.qfile}: --layers must name layers of the file "
                            f"({', '.join(names)}), not {', '.join(unknown)}")
        names = args.layers
    return cfg, model, names


def _row(name, rep):
    t = rep["tiling"]
    return (f"{name:>12}  {rep['instructions']:>7} insns  tile {t['mr']}x{t['nw']:<5} "
            f"DRAM {sum(rep['dram_bytes'].values()) / 2**20:8.2f} MiB  "
            f"est {rep['cycles']:>11,} cycles")


def program_file_name(name):
    """The file name of layer `name`'s program: the name with every character outside
    `[A-Za-z0-9_.~-]` (and a leading dot) percent-encoded, so that distinct layers always get
    distinct files (`a/b` -> `a%2Fb.prog`, `a_b` -> `a_b.prog`) that stay inside the folder."""
    safe = urllib.parse.quote(name, safe="")
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    if len(safe) > NAME_BYTES_MAX:
        raise UserError(f"layer `{name[:40]}`: its program file name must be at most "
                        f"{NAME_BYTES_MAX} bytes once encoded, not {len(safe)}")
    return safe + ".prog"


def compile_cmd(args):
    from bitlut.fileio import atomic_write
    from compiler.lower import lower
    cfg, model, names = _load(args)
    out = args.output
    reports = {}
    for name in names:
        compiled = lower(model.layers[name], cfg, args.tokens)
        compiled.program.save(out / program_file_name(name))
        reports[name] = compiled.report
        print(_row(name, compiled.report))
    atomic_write(out / "report.json", json.dumps({"config": cfg.tag, "tokens": args.tokens,
                                                  "layers": reports}, indent=2) + "\n")
    print(f"wrote {len(names)} programs and report.json to {out}/")


def run_cmd(args):
    from bitlut.fileio import atomic_write
    from compiler.lower import lower
    from sim.check import run_layer, sample_activations
    cfg, model, names = _load(args)
    results, ok = {}, True
    print(f"{'layer':>12}  {'shape':>11}  {'max abs err':>11}  {'max rel err':>11}  "
          f"{'of bound':>8}  result")
    for i, name in enumerate(names):
        layer = model.layers[name]
        compiled = lower(layer, cfg, args.tokens)
        x = sample_activations(layer.shape[1], args.tokens, seed=args.seed + i)
        _, _, m = run_layer(compiled, cfg, layer, x)
        results[name] = {**m, "report": compiled.report}
        ok &= m["passed"]
        n, k = layer.shape
        print(f"{name:>12}  {n:>5}x{k:<5}  {m['max_abs_err']:11.3e}  {m['max_rel_err']:11.3e}  "
              f"{m['tolerance_used']:8.1%}  {'ok' if m['passed'] else 'MISMATCH'}")
    if args.json is not None:
        atomic_write(args.json, json.dumps({"config": cfg.tag, "tokens": args.tokens,
                                            "passed": ok, "layers": results}, indent=2) + "\n")
    return 0 if ok else 1
