"""`bitlut quantize` and `bitlut inspect`. Cheap to import: torch and transformers load inside
the command functions."""

import sys
from pathlib import Path

from bitlut import args as checks
from bitlut.errors import UserError

SYNTHETIC = ("llama7b", "llama-tiny")     # quant.synthetic.MODELS, named here to avoid torch
DEFAULT_BITS = {"claq": 2.2, "gptq": 3, "rtn": 3}


def register(sub):
    p = sub.add_parser(
        "quantize", help="quantize a Hugging Face checkpoint or a synthetic model into a .q file",
        description="Quantize every linear layer of a checkpoint folder (safetensors + "
                    "config.json), or a seeded synthetic LLaMA block, into a .q file.")
    p.add_argument("checkpoint", nargs="?", help="Hugging Face checkpoint folder")
    p.add_argument("--synthetic", choices=SYNTHETIC,
                   help="a seeded synthetic model instead of a checkpoint")
    p.add_argument("-o", "--output", required=True, help="the .q file to write",
                   type=checks.arg(checks.output_file, "-o"))
    p.add_argument("--method", choices=("claq", "gptq", "rtn"), default="claq")
    p.add_argument("--bits", type=checks.arg(checks.number, "--bits", 1, 8), default=None,
                   help="CLAQ: average bits in [2, 4] (default 2.2); GPTQ/RTN: integer (default 3)")
    p.add_argument("--group-size", type=checks.arg(checks.integer, "--group-size", 0, 1 << 20),
                   default=128,
                   help="GPTQ/RTN columns per scale/zero; 0 = one group per row (default 128)")
    p.add_argument("--outliers", action="store_true",
                   help="CLAQ outlier reservation with the paper's ratios (1.4%% of each tail "
                        "for the top 10%% of columns, 0.4%% for the rest)")
    p.add_argument("--outlier-ratio", metavar="TOP[,REST]",
                   help="CLAQ outlier reservation with these per-tail ratios")
    p.add_argument("--text", help="calibration text file (checkpoints): paragraphs separated "
                                  "by blank lines, or one document per line when it has none "
                                  "(default: the shipped public-domain text)")
    p.add_argument("--random-tokens", action="store_true",
                   help="calibrate on seeded random token ids instead of text (poor accuracy; "
                        "for checkpoints without a tokenizer)")
    p.add_argument("--samples", type=checks.arg(checks.integer, "--samples", 1, 1 << 16),
                   default=None,
                   help="calibration samples (checkpoints): causal models: segments "
                        "(default 16); encoders: documents (default 128)")
    p.add_argument("--seqlen", type=checks.arg(checks.integer, "--seqlen", 1, 1 << 20),
                   default=256,
                   help="calibration segment length / longest encoder sample (tokens)")
    p.add_argument("--smooth", action="store_true",
                   help="SmoothQuant migration before quantizing (alpha 0.5, max|x| per column "
                        "of the calibration tokens); the .q keeps the scales for "
                        "`pe.act_quant: smooth` (--synthetic only in this version)")
    p.add_argument("--seed", type=checks.seed(), default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=cmd_quantize)

    i = sub.add_parser("inspect", help="print the layers, shapes and bits per weight of a .q file",
                       description="Validate a .q file and print its layers.")
    i.add_argument("file", help="the .q file")
    i.set_defaults(func=cmd_inspect)


def _ratios(args):
    if args.outlier_ratio is not None:
        parts = args.outlier_ratio.split(",")
        try:
            vals = [checks.number(x, "--outlier-ratio", 0, 1) for x in parts]
        except UserError:
            vals = []
        if len(vals) not in (1, 2):
            raise UserError(f"--outlier-ratio must be TOP or TOP,REST numbers, "
                            f"not {args.outlier_ratio!r}")
        return (vals[0], vals[-1])
    if args.outliers:
        return (0.014, 0.004)
    return (0.0, 0.0)


def method_from_args(args):
    """The `quant.method.Method` the command line asks for (UserError if it is invalid)."""
    from quant.claq import CLAQSettings
    from quant.method import Method
    bits = DEFAULT_BITS[args.method] if args.bits is None else args.bits
    top, rest = _ratios(args)
    if args.method != "claq" and (top or rest):
        raise UserError(f"--outliers/--outlier-ratio must go with --method claq, "
                        f"not {args.method}")
    if args.group_size < 0:
        raise UserError(f"--group-size must be >= 0, not {args.group_size}")
    try:
        c = CLAQSettings(bits=float(bits) if args.method == "claq" else 2.2,
                         outlier_ratio_top=top, outlier_ratio_rest=rest)
        return Method(args.method, float(bits), args.group_size or None, c)
    except ValueError as e:
        raise UserError(f"quantize: {e}") from None


def cmd_quantize(args):
    if (args.checkpoint is None) == (args.synthetic is None):
        raise UserError("quantize needs exactly one of CHECKPOINT_DIR or --synthetic NAME, "
                        f"not {'both' if args.checkpoint else 'neither'}")
    for name in ("samples", "seqlen"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, not {getattr(args, name)}")
    method = method_from_args(args)
    if args.smooth and args.checkpoint is not None:
        raise UserError("--smooth must go with --synthetic in this version, not a checkpoint "
                        "(the checkpoint path does not collect activation maxima yet)")
    _check_device(args.device)
    import quant
    from quant.progress import progress
    if args.synthetic:
        from quant import synthetic
        total = synthetic.total_columns(args.synthetic)
        with progress(total, f"{method.label()} {args.synthetic}") as advance:
            qm = synthetic.quantize_model(args.synthetic, method, seed=args.seed,
                                          device=args.device, progress=advance,
                                          smooth=args.smooth)
    else:
        from quant import checkpoint
        if args.random_tokens and args.text:
            raise UserError("--random-tokens and --text must not go together, not both")
        if args.random_tokens:
            print("bitlut: warning: calibrating on random token ids (--random-tokens): the "
                  "activations are not the model's, expect a worse quantization than with text",
                  file=sys.stderr)
        total = checkpoint.linear_columns(args.checkpoint)
        with progress(total, f"{method.label()} {Path(args.checkpoint).name}") as advance:
            qm = checkpoint.quantize_checkpoint(args.checkpoint, method, text=args.text,
                                                samples=args.samples, seqlen=args.seqlen,
                                                seed=args.seed, device=args.device,
                                                progress=advance,
                                                random_tokens=args.random_tokens,
                                                on_warning=_warn)
    path = quant.save(args.output, qm)
    print(f"wrote {path}: {len(qm.layers)} layers, {method.label()}, "
          f"{qm.bits_per_weight(True):.3f} bits/weight "
          f"({qm.bits_per_weight(False):.3f} without outliers)")
    return 0


def _warn(message):
    print(f"bitlut: warning: {message}", file=sys.stderr)


def _check_device(device):
    import torch
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device must be a torch device such as cpu or cuda, "
                        f"not {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device must be available on this machine, not {device!r} "
                        "(no CUDA)")


PARTS = (("codes", ("codes",)), ("tables", ("codebooks", "scales", "zeros", "smooth")),
         ("bit map", ("bitmap",)), ("outliers", ("outliers",)))


def bits_breakdown(q):
    """Bits per weight of one layer by part: codes; tables (codebooks, or scales and zeros);
    the bit-width map; the outlier list (`QLayer.bit_counts` says what each counts)."""
    counts = q.bit_counts()
    n, k = q.shape
    return {part: sum(counts.get(f, 0) for f in fields) / (n * k) for part, fields in PARTS}


def format_inspect(path, qm):
    """The `bitlut inspect` report as text: the model's shape (or that the file does not record
    it), then per layer, bits/weight broken into codes, tables (codebooks or scales/zeros), the
    bit map and outliers, and their sum."""
    size = Path(path).stat().st_size
    lines = [f"{path}: model {qm.model}, quantizer {qm.quantizer.get('name')}, "
             f"{len(qm.layers)} layers, {size / 2**20:.2f} MiB on disk",
             f"settings: {qm.quantizer.get('settings')}",
             f"shape: {qm.shape.describe() if qm.shape else 'not recorded'}"
             + (f"; {len(qm.norms)} RMSNorm weights" if qm.norms else ""),
             f"{'layer':<40} {'kind':<8} {'N x K':>13} {'bits (columns)':<22} {'outliers':>9} "
             + " ".join(f"{p:>8}" for p, _ in PARTS) + f" {'bpw':>7}"]
    total = dict.fromkeys((p for p, _ in PARTS), 0.0)
    for q in qm.layers.values():
        n, k = q.shape
        vals, counts = _unique(q.bits)
        hist = " ".join(f"{int(b)}:{int(c)}" for b, c in zip(vals, counts, strict=True))
        if q.kind == "uniform":
            hist += f" g{q.group_size}"
        parts = bits_breakdown(q)
        for p, v in parts.items():
            total[p] += v * n * k
        lines.append(f"{q.name:<40} {q.kind:<8} {f'{n}x{k}':>13} {hist:<22} "
                     f"{q.n_outliers:>9} " + " ".join(f"{v:>8.4f}" for v in parts.values())
                     + f" {q.bits_per_weight(True):>7.3f}")
    weights = sum(q.shape[0] * q.shape[1] for q in qm.layers.values())
    lines.append(f"{'all layers':<40} {'':<8} {'':>13} {'':<22} {'':>9} "
                 + " ".join(f"{v / weights:>8.4f}" for v in total.values())
                 + f" {qm.bits_per_weight(True):>7.3f}")
    lines.append(f"total: {weights} weights, {qm.bits_per_weight(True):.4f} bits/weight "
                 f"({qm.bits_per_weight(False):.4f} without outliers), "
                 f"{8 * size / weights:.4f} bits/weight on disk")
    lines.append("parts: codes = the packed codes; tables = 16-bit codebooks (CLAQ: 2^b entries "
                 "per column, shared by the N rows) or fp16 scales + u8 zeros (uniform), plus fp32 "
                 "SmoothQuant scales per column (--smooth); bit map "
                 "= one u8 width per column; outliers = fp16 values, 16-bit rows, int32 column "
                 "pointers")
    return "\n".join(lines)


def _unique(a):
    import numpy as np
    return np.unique(a, return_counts=True)


def cmd_inspect(args):
    import quant
    qm = quant.load(args.file)
    print(format_inspect(args.file, qm))
    return 0
