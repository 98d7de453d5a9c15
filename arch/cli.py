"""`bitlut arch check`, `bitlut asm`, `bitlut disasm`, `bitlut isa-doc`, `bitlut shell-doc`."""

from bitlut import args as checks
from bitlut.errors import UserError


def register(sub):
    p = sub.add_parser("arch", help="architecture configs")
    asub = p.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    c = asub.add_parser("check", help="validate configs; print each one's tag and derived sizes")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(func=check)

    p = sub.add_parser("roofline", help="roofline bound of each layer on a config, beside GPUs")
    p.add_argument("qfile", metavar="FILE.q")
    p.add_argument("--arch", default="arch/configs/lut.yaml", metavar="CONFIG")
    p.add_argument("--tokens", default="1,2048", metavar="M[,M...]", type=checks.token_list())
    p.add_argument("--gpu", nargs="*", default=["a100_sxm", "h100_sxm"],
                   help="GPUs from arch/gpus.yaml to set beside it")
    p.add_argument("--ctx", metavar="L", type=checks.arg(checks.integer, "--ctx", 0,
                                                         checks.TOKENS_MAX),
                   help="a .q file that records its model's shape: the attention and the KV "
                        "cache of decode (M = 1) after L cached tokens (default 1024); M > 1 is "
                        "a prefill from an empty cache, as `bitlut sim` runs it")
    p.add_argument("--kv", metavar="FORMAT",
                   help="the KV cache's format: fp16 (the vector unit), int8, int4, int2 (codes "
                        "on the PE array; default int8 where the array takes 8-bit weights, "
                        "else int4)")
    p.add_argument("--plot", metavar="FILE.png", type=checks.arg(checks.plot_file, "--plot"),
                   help="write the roofline figure (PNG, SVG or PDF, from the suffix)")
    p.set_defaults(func=roofline_cmd)

    p = sub.add_parser("asm", help="assemble a text program into binary words")
    p.add_argument("source", metavar="FILE.s")
    p.add_argument("-o", "--output", required=True, metavar="FILE.bin",
                   type=checks.arg(checks.output_file, "-o"))
    p.add_argument("--arch", metavar="CONFIG",
                   help="check addresses against this config's scratchpads")
    p.set_defaults(func=asm)

    p = sub.add_parser("disasm", help="print a program (.prog from compile, or raw .bin words) "
                       "as assembly")
    p.add_argument("program", metavar="FILE")
    p.add_argument("-n", "--numbered", action="store_true", help="prefix instruction indices")
    p.set_defaults(func=disasm)

    p = sub.add_parser("isa-doc", help="write the ISA reference page (docs/isa.md)")
    p.add_argument("-o", "--output", default="docs/isa.md",
                   type=checks.arg(checks.output_file, "-o"))
    p.set_defaults(func=isa_doc)

    p = sub.add_parser("shell-doc", help="write the FPGA shell's port and register page "
                       "(docs/shell.md)")
    p.add_argument("-o", "--output", default="docs/shell.md",
                   type=checks.arg(checks.output_file, "-o"))
    p.set_defaults(func=shell_doc)


def check(args):
    from arch import config, roofline
    for path in args.files:
        cfg = config.load(path)
        sizes = ", ".join(f"{k} {v} B" for k, v in config.tile_bytes(cfg).items())
        print(f"{path}: ok  tag={cfg.tag}  {cfg.pe.kind} {cfg.pe.rows}x{cfg.pe.cols} "
              f"@ {cfg.clock_mhz:g} MHz, DRAM {cfg.dram_bytes_per_cycle:.1f} B/cycle, "
              f"peak {roofline.peak_weights_per_cycle(cfg):g} weights/cycle; min tile: {sizes}")


def _read(path, binary=False):
    from bitlut.args import input_file
    blob = input_file(path, "file").read_bytes()
    if binary:
        return blob
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: assembly must be UTF-8 text, not binary (byte {e.start} is "
                        f"{blob[e.start]:#04x})") from None


def asm(args):
    from arch import config, isa
    from bitlut.fileio import atomic_write
    cfg = config.load(args.arch) if args.arch else None
    words = isa.assemble(_read(args.source), cfg, source=args.source)
    atomic_write(args.output, isa.to_bytes(words))
    print(f"{args.output}: {len(words)} instructions")


def disasm(args):
    from arch import isa
    from arch.program import Program, is_program_file
    blob = _read(args.program, binary=True)
    if is_program_file(blob):                      # a program file from `compile`
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


def shell_doc(args):
    from arch import regs
    from bitlut.fileio import atomic_write
    atomic_write(args.output, regs.reference_markdown())
    print(f"wrote {args.output}")


def roofline_cmd(args):
    import numpy as np

    import quant
    from arch import config, roofline
    cfg = config.load(args.arch)
    model = quant.load(args.qfile)
    gpus = roofline.load_gpus()
    unknown = [g for g in args.gpu if g not in gpus]
    if unknown:
        raise UserError(f"--gpu must name GPUs of arch/gpus.yaml ({', '.join(gpus)}), not "
                        f"{', '.join(unknown)}")
    block = _roofline_block(args, model, cfg)
    tokens = args.tokens
    names = list(model.layers) + ([roofline.attention_name(block[3])] if block else [])
    width = max(10, *map(len, names))
    head = f"{'layer':>{width}} {'M':>5} {'MAC/B':>8} {'bound':>8} {'cycles':>13} {'time':>10}"
    head += "".join(f" {g + ' fp16':>15}" for g in args.gpu)
    print(f"roofline on {cfg.tag}: peak per layer below, DRAM {cfg.dram_bytes_per_cycle:.1f} "
          f"B/cycle at {cfg.clock_mhz:g} MHz")
    print(head)
    rows, models = [], []
    for m in tokens:
        for name, layer in model.layers.items():
            n, k = layer.shape
            b = roofline.layer_bound(cfg, m, n, k, layer.kind, layer.bits,
                                     roofline.stored_weight_bytes(layer))
            gpu = [gpus[g].layer_seconds(m, n, k, 2 * n * k) for g in args.gpu]
            print(_roofline_line(cfg, name, width, m, b, gpu))
            peak = roofline.peak_macs_per_cycle(cfg, layer.kind, float(np.mean(layer.bits)))
            rows.append({"name": name, "tokens": m, "intensity": b.intensity, "peak": peak,
                         "attainable": b.ops / b.cycles})
        if block is not None:
            shape, layers, ctx, fmt = block
            mb = roofline.model_bound(cfg, shape, layers, ctx if m == 1 else 0, fmt, m)
            b = mb.block.ops["attention"]
            name = roofline.attention_name(fmt)
            print(_roofline_line(cfg, name, width, m, b, [None] * len(args.gpu)))
            from reports.roofline_plot import attention_row
            rows.append(attention_row(cfg, fmt, b, m))
            models.append(mb)
    if block is not None:
        _print_model_bounds(model.model, block, models)
    if args.plot is not None:
        from reports.roofline_plot import plot
        plot(rows, cfg, args.plot, title=f"{args.qfile} on {cfg.tag}")
        print(f"wrote {args.plot}")


def _roofline_line(cfg, name, width, m, b, gpu_seconds):
    """A row of `bitlut roofline`'s table; a GPU column of None prints as "-"."""
    secs = b.cycles * cfg.cycle_ns * 1e-9
    line = (f"{name:>{width}} {m:>5} {b.intensity:8.2f} {b.bound:>8} {b.cycles:13,.0f} "
            f"{secs * 1e3:8.3f}ms")
    for s in gpu_seconds:
        line += f" {'-':>15}" if s is None else f" {s * 1e3:13.3f}ms"
    return line


def _roofline_block(args, qmodel, cfg):
    """(shape, block 0's layers, ctx, KV format) for the attention rows, or None for a .q file
    without the model's shape when neither --ctx nor --kv asks for them (`UserError` when one
    does)."""
    from arch import kv
    from quant import model_shape
    from sim.cli import DEFAULT_CTX, default_kv
    if qmodel.shape is None and args.ctx is None and args.kv is None:
        return None
    option = "--ctx" if args.ctx is not None else "--kv"
    shape = model_shape.require_shape(qmodel, args.qfile, f"bitlut roofline {option}")
    fmt = kv.check_format(args.kv or default_kv(cfg), cfg, shape.head_dim)
    layers = model_shape.block_layers(qmodel, 0, args.qfile)
    return shape, layers, DEFAULT_CTX if args.ctx is None else args.ctx, fmt


def _print_model_bounds(name, block, models):
    """The KV cache's bytes and the model's bound per phase, under the table."""
    from arch import kv
    shape, _, ctx, fmt = block
    per = kv.bytes_per_token(fmt, shape.kv_heads, shape.head_dim)
    print(f"model {name}: {shape.blocks} blocks, heads {shape.heads} (KV {shape.kv_heads}), "
          f"head dim {shape.head_dim}; KV cache {fmt.name}, {per:,} bytes per token per block; "
          f"lm_head int8")
    for mb in models:
        what = (f"decode after {ctx:,} cached tokens" if mb.tokens == 1 else
                f"prefill of {mb.tokens:,} tokens from an empty cache")
        d = mb.dram_bytes_per_token
        ms = f"{mb.latency_s * 1e3:,.3f} ms"
        time = f"{ms} a token" if mb.tokens == 1 else f"time to first token {ms}"
        print(f"  M={mb.tokens} ({what}): DRAM per token: weights {_bytes(d['weights'])}, "
              f"KV cache {_bytes(d['kv'])} ({mb.kv_share:.1%} of the bytes), activations "
              f"{_bytes(d['activations'])}; bound {mb.tokens_per_s:,.2f} tokens/s, {time}")


def _bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"
