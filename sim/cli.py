"""`bitlut sim`: the headline command (`make sim LAYER=llama7b.q`)."""

import dataclasses
import json
import sys

from bitlut import args as checks
from bitlut.errors import UserError
from bitlut.formats import UNIFORM_BITS

TOKENS_MAX = 65536
DEFAULT_CTX = 1024
DEFAULT_PREFILL = 2048

DEFAULT_PHASES = (1, 2048)          # decode, prefill


def register(sub):
    p = sub.add_parser("sim", help="compile, simulate (SimPy cycle model) and check a quantized "
                       "model or one GEMM; print the report")
    p.add_argument("qfile", nargs="?", metavar="FILE.q")
    p.add_argument("--arch", default="arch/configs/lut.yaml", metavar="CONFIG")
    p.add_argument("--tokens", metavar="M[,M...]", type=checks.token_list(),
                   help="token counts to simulate (default 1,2048: decode and a prefill)")
    p.add_argument("--gemm", metavar="M,K,N", type=checks.arg(checks.gemm_shape, "--gemm"),
                   help="simulate one GEMM with synthetic weights")
    p.add_argument("--wbits", default=2, help="weight bits of --gemm (uniform, 1 to 8)",
                   type=checks.arg(checks.integer, "--wbits", min(UNIFORM_BITS),
                                   max(UNIFORM_BITS)))
    p.add_argument("--act-quant", metavar="MODE",
                   help="override the config's pe.act_quant: token (one int8 scale per token "
                        "row), token_group (one per row and k-step), smooth (SmoothQuant scales "
                        "from the .q file); docs/numerics.md section 1")
    p.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers")
    p.add_argument("--blocks", type=int, metavar="N",
                   help="the model's block count: adds the model's figure for its linear layers "
                        "(default: the checkpoint's count when the .q records one)")
    p.add_argument("--ctx", metavar="L", type=checks.arg(checks.integer, "--ctx", 0, TOKENS_MAX),
                   help="the whole model (a .q file that records its shape): decode one token "
                        "after L cached tokens (default 1024); docs/block.md")
    p.add_argument("--prefill", metavar="P",
                   type=checks.arg(checks.integer, "--prefill", 0, TOKENS_MAX),
                   help="the whole model: time to first token of a P-token prompt (default "
                        "2048; 0: none)")
    p.add_argument("--kv", metavar="FORMAT",
                   help="the KV cache's format: fp16 (the vector unit), int8, int4, int2 (codes "
                        "on the PE array; default int8 where the array takes 8-bit weights, "
                        "else int4)")
    p.add_argument("--kv-group", metavar="G", type=checks.arg(checks.integer, "--kv-group", 1,
                                                                1024),
                   help="columns of a head per K scale (default 128, capped at the head dim)")
    p.add_argument("--batch", metavar="B", type=checks.arg(checks.integer, "--batch", 1, 64),
                   help="the whole model's decode: B sequences a step, each with its own cache "
                        "at the context (default 1)")
    p.add_argument("--no-model", action="store_true",
                   help="only the linear layers, not the whole model")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="the checkpoint FILE.q was quantized from: adds `bitlut eval`'s fidelity "
                        "against fp32 to the report")
    p.add_argument("--eval-text", metavar="FILE",
                   help="with --checkpoint: the text to score (default: the shipped text)")
    p.add_argument("--unlimited-bandwidth", action="store_true",
                   help="DRAM transfers take no time (compute-only timing)")
    p.add_argument("--no-check", action="store_true", help="timing only, no output check")
    p.add_argument("--full", action="store_true",
                   help="simulate every row block instead of sampling large layers; the whole "
                        "model: simulate every block of a checkpoint's file (their bit widths "
                        "differ) instead of block 0 times the block count")
    p.add_argument("--json", metavar="FILE", type=checks.arg(checks.output_file, "--json"),
                   help="write the report as JSON")
    p.add_argument("--trace", metavar="FILE", type=checks.arg(checks.output_file, "--trace"),
                   help="Chrome/Perfetto trace of the whole run: a process per phase, a span per "
                        "layer and per simulated output tile, a track per unit")
    p.add_argument("--trace-layer", nargs="+", metavar="NAME",
                   help="with --trace: trace only these layers' instructions (every layer keeps "
                        "its span)")
    p.add_argument("--trace-budget", metavar="SPANS",
                   type=checks.arg(checks.integer, "--trace-budget", 0, 10**8),
                   help="with --trace: the most instruction, stall and tile spans in the file "
                        "(default 200,000); layers beyond their share keep their first tiles, "
                        "and say so")
    p.add_argument("--plot", metavar="FILE.png", type=checks.arg(checks.plot_file, "--plot"),
                   help="roofline figure with every layer's bound and simulated performance "
                        "(PNG, SVG or PDF, from the suffix)")
    p.add_argument("--seed", type=checks.seed(), default=0)
    p.set_defaults(func=sim_cmd)

    p = sub.add_parser("exec", help="run a compiled program on the functional executor, the "
                       "cycle model and (--rtl) the RTL core; compare outputs and cycles")
    p.add_argument("prog", metavar="FILE.prog",
                   type=checks.arg(checks.input_file, "program file"))
    p.add_argument("--arch", default="arch/configs/lut.yaml", metavar="CONFIG")
    p.add_argument("--rtl", nargs="?", const="verilator",
                   choices=["verilator", "icarus", "amaranth"],
                   help="also run the RTL core (default simulator: verilator, built once per "
                        "config under build/cocotb/)")
    p.add_argument("--trace", metavar="FILE", type=checks.arg(checks.output_file, "--trace"),
                   help="with --rtl: Chrome/Perfetto trace of the core and the cycle model side "
                        "by side")
    p.set_defaults(func=exec_cmd)

    p = sub.add_parser("eval", help="a checkpoint's fidelity with a .q file's weights and the "
                       "accelerator's int8 activations, against fp32, on a text file",
                       description="Run CHECKPOINT_DIR in PyTorch with FILE.q's weights and the "
                       "golden model's activation rounding at every quantized layer's input; "
                       "report perplexity (causal models) or the mean cosine of pooled, "
                       "normalized embeddings (encoders) against fp32, and per-layer errors. "
                       "LLaMA-family checkpoints also get the block's numerics on the "
                       "accelerator (on-chip rounding, the vector unit's functions) and a "
                       "perplexity per KV cache format (docs/numerics.md).")
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR")
    p.add_argument("qfile", metavar="FILE.q")
    p.add_argument("--text", help="text to score: paragraphs separated by blank lines, or one "
                   "document per line (default: the shipped calibration text)")
    p.add_argument("--samples", type=int, default=None,
                   help="windows (causal, default 16) or documents (encoders, default 128)")
    p.add_argument("--seqlen", type=int, default=256, help="window / longest document (tokens)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--activations", choices=("int8", "fp32"), default="int8",
                   help="the accelerator's int8 per-token rounding (default) or none")
    p.add_argument("--kv", metavar="FORMAT[,FORMAT...]",
                   help="LLaMA family: the KV cache formats to score, K (after RoPE) and V "
                        "stored as fp16, int8, int4 or int2 (default: every one)")
    p.add_argument("--kv-group", metavar="G", type=checks.arg(checks.integer, "--kv-group", 1,
                                                                1024),
                   help="LLaMA family: columns of a head per K scale (default 128, capped at the "
                        "head dim); V has one scale per head")
    p.add_argument("--vector", choices=("golden", "float"),
                   help="LLaMA family: the vector unit's fp32 rmsnorm, softmax and silu_mul "
                        "(golden, the default) or transformers' (float)")
    p.add_argument("--arch", metavar="CONFIG",
                   help="the config whose timing.vector_lanes the vector unit has (default: the "
                        "shipped lut)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.set_defaults(func=eval_cmd)


def _tokens(args):
    if args.tokens is None:
        return list(DEFAULT_PHASES) if args.gemm is None else []
    return args.tokens


def _gemm_layer(shape, bits):
    """`--gemm M,K,N` (checked by argparse) and `--wbits B`: (M, the synthetic layer)."""
    from quant.random_layer import gemm_layer
    m, k, n = shape
    return m, gemm_layer(m, k, n, bits)


def sim_cmd(args):
    from arch import config
    from bitlut.fileio import atomic_write
    from reports.sim_report import print_report, roofline_rows
    from sim.driver import simulate_layer, summarize
    cfg = config.load(args.arch)
    if args.act_quant:
        cfg = cfg.replace(pe=dataclasses.replace(cfg.pe, act_quant=args.act_quant))
    settings = None
    if args.gemm:
        m, layer = _gemm_layer(args.gemm, args.wbits)
        layers, phases, source = {layer.name: layer}, [m], ",".join(map(str, args.gemm))
    elif args.qfile:
        import quant
        model = quant.load(args.qfile)
        layers, phases, source = model.layers, _tokens(args), args.qfile
        settings = model.quantizer.get("settings")
        if args.layers:
            unknown = [n for n in args.layers if n not in layers]
            if unknown:
                raise UserError(f"{args.qfile}: --layers must name layers of the file "
                                f"({', '.join(layers)}), not {', '.join(unknown)}")
            layers = {n: layers[n] for n in args.layers}
    else:
        raise UserError("sim needs a FILE.q or --gemm M,K,N")
    trace = _run_trace(args, layers)
    from sim import scope
    try:
        # a --layers selection is part of a block: only an explicit --blocks scales it
        sc = scope.scope(layers, None if args.gemm or args.layers else settings, args.blocks)
    except ValueError as e:
        raise UserError(str(e)) from None
    label = scope.labels(layers)
    report = {"source": source, "config": cfg.tag, "arch": str(args.arch), "phases": []}
    if not args.gemm:
        report["scope"] = sc
    progress = _progress(len(layers) * len(phases))
    for m in phases:
        rows = []
        for i, (name, layer) in enumerate(layers.items()):
            progress(f"M={m} {name}")
            rows.append(simulate_layer(layer, cfg, m, seed=args.seed + i,
                                       check=not args.no_check,
                                       trace=trace, full=args.full,
                                       unlimited_bandwidth=args.unlimited_bandwidth))
            rows[-1]["label"] = label[name]
        total, check = summarize(rows, m, cfg)
        report["phases"].append({"tokens": m, "layers": rows, "total": total, "check": check})
        if not args.gemm:
            report["phases"][-1]["model"] = scope.model_totals(total, m, sc)
    progress(None)
    for key in ("layers", "total", "check"):          # the first phase, at the top level
        report[key] = report["phases"][0][key]
    model_note = None
    if args.qfile and not args.gemm and not args.layers and not args.no_model:
        report["model"], model_note = _model(args, model, cfg)
    if args.checkpoint and args.qfile:
        from sim import accuracy
        report["accuracy"] = accuracy.evaluate(args.checkpoint, args.qfile, text=args.eval_text)
    print_report(report, cfg)
    if report.get("model"):
        from reports.sim_report import print_model
        print_model(report["model"], cfg)
    elif model_note:
        print(model_note)
    if "accuracy" in report:
        print(accuracy.format_report(report["accuracy"]))
    if args.plot is not None:
        from reports.roofline_plot import plot
        rows, measured = roofline_rows(report, cfg)
        plot(rows, cfg, args.plot, title=f"{report['source']} on {cfg.tag}", measured=measured)
        print(f"wrote {args.plot}")
    if trace is not None:
        spans = trace.write(args.trace, cfg)
        only = f", instructions of {', '.join(args.trace_layer)} only" if args.trace_layer else ""
        print(f"wrote {args.trace}: {spans:,} spans{only}, "
              f"{'cut' if trace.cut else 'nothing cut'} to --trace-budget {trace.budget:,}; "
              f"open it in ui.perfetto.dev")
        if trace.cut:
            cut = "; ".join(f"{phase} {name} ({kept} of {tiles} tiles)"
                            for phase, name, kept, tiles in trace.cut)
            print(f"  traced only the first simulated tiles of {cut}: --trace-layer NAME or a "
                  f"larger --trace-budget traces more")
    if args.json is not None:
        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    passed = all(p["check"].get("passed", True) for p in report["phases"])
    return 0 if passed else 1


def default_kv(cfg):
    """int8 where the PE array multiplies 8-bit codes, else int4."""
    return "int8" if 8 in cfg.pe.weight_bits else "int4"


def _model(args, qmodel, cfg):
    """The whole model's figures (`sim.block_driver`), or (None, why not) for a `.q` file
    without a shape (an error when a model option asked for them)."""
    from arch import kv as kvmod
    from quant import model_shape
    from sim import block_driver
    asked = any(v is not None for v in (args.ctx, args.prefill, args.kv, args.kv_group,
                                        args.batch))
    if qmodel.shape is None and not asked:
        return None, (f"model: not simulated: {args.qfile} does not record the model's shape "
                      "(re-quantize it to see the whole model: attention, KV cache, tokens/s)")
    shape = model_shape.require_shape(qmodel, args.qfile, "bitlut sim --ctx")
    layers = model_shape.block_layers(qmodel, 0, args.qfile)
    norms = model_shape.norm_weights(qmodel, 0, args.qfile)
    fmt = kvmod.check_format(args.kv or default_kv(cfg), cfg, shape.head_dim,
                             args.kv_group or kvmod.DEFAULT_GROUP)
    ctx = DEFAULT_CTX if args.ctx is None else args.ctx
    prefill = DEFAULT_PREFILL if args.prefill is None else args.prefill
    every = None
    held = {b for b, _ in filter(None, map(model_shape.role_of, qmodel.layers))}
    if args.full and None not in held and len(held) > 1:     # a checkpoint's every block
        every = [(model_shape.block_layers(qmodel, b, args.qfile),
                  model_shape.norm_weights(qmodel, b, args.qfile)) for b in sorted(held)]
    out = block_driver.simulate_model(shape, layers, norms, cfg, ctx, prefill, fmt,
                                      blocks=args.blocks, batch=args.batch or 1,
                                      every_block=every)
    out["shape"] = shape.describe()
    return out, None


def _progress(total):
    """A one-line progress indicator on a terminal, silent otherwise."""
    state = {"n": 0}
    tty = sys.stderr.isatty()

    def step(label):
        if not tty:
            return
        if label is None:
            sys.stderr.write("\r\033[K")
            return
        state["n"] += 1
        sys.stderr.write(f"\r\033[K[{state['n']}/{total}] simulating {label} ...")
        sys.stderr.flush()
    return step


def _run_trace(args, layers):
    """The `RunTrace` that `--trace` asks for (None without it)."""
    if args.trace is None:
        if args.trace_layer or args.trace_budget is not None:
            raise UserError("--trace-layer and --trace-budget need --trace FILE")
        return None
    from sim.trace import DEFAULT_BUDGET, RunTrace
    if args.trace_layer:
        unknown = [n for n in args.trace_layer if n not in layers]
        if unknown:
            raise UserError(f"--trace-layer must name simulated layers ({', '.join(layers)}), "
                            f"not {', '.join(unknown)}")
    budget = DEFAULT_BUDGET if args.trace_budget is None else args.trace_budget
    return RunTrace(budget, args.trace_layer)


def exec_cmd(args):
    """`bitlut exec`: the executor's outputs are the reference; the cycle model and the core must
    equal them, and the core's cycles the model's. Exit 0 only when everything agrees."""
    import numpy as np

    from arch import config
    from arch.program import Program
    from sim.cycle import simulate
    from sim.executor import Executor

    cfg = config.load(args.arch)
    prog = Program.load(args.prog)
    # a racy program's outputs depend on timing: refused, so that what exec compares is defined
    ex = Executor(cfg, prog, races=True)
    ex.run()
    res, model = simulate(cfg, prog)
    print(f"{args.prog}: {len(prog.words)} instructions on {cfg.tag}")
    rows = [("functional executor", "the reference", "")]
    ok = bool(np.array_equal(model.executor.dram, ex.dram))
    rows.append(("cycle model", "outputs equal" if ok else "outputs DIFFER",
                 f"{res.cycles:,} cycles"))
    diff = None
    if args.rtl:
        _check_rtl_runs(cfg, prog, args.prog)
        run = _run_rtl(cfg, prog, args.rtl)
        if run.error.name != "NONE":
            from arch import isa
            op = isa.decode(prog.words[run.err_index]).op.name.lower() \
                if run.err_index < len(prog.words) else "past the end"
            rows.append((f"RTL core ({args.rtl})", f"stopped: {run.error.name.lower()} at insn "
                         f"{run.err_index} ({op})", f"{run.cycles:,} cycles"))
            ok = False
        else:
            same = bool(np.array_equal(run.dram, ex.dram))
            from verif.core_tb import first_difference
            diff = first_difference(prog, run.log, model.log)
            rows.append((f"RTL core ({args.rtl})", "outputs equal" if same else "outputs DIFFER",
                         f"{run.cycles:,} cycles"))
            if args.trace is not None:
                from verif.core_tb import write_traces
                write_traces(args.trace, prog, run.log, model.log)
            ok = ok and same and run.cycles == res.cycles and diff is None
    width = max(len(r[0]) for r in rows)
    for name, what, cycles in rows:
        print(f"  {name:<{width}}  {cycles:>14}  {what}")
    if args.rtl:
        print(f"  first instruction whose timing differs: {diff or 'none'}")
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


def _check_rtl_runs(cfg, prog, path):
    """Refuse, in one line naming them, a program with opcodes that no RTL core builds yet
    (the decoder block's, docs/block.md). An opcode of another PE kind's core runs, and the
    core stops on it with `unsupported`, as it would on the board."""
    from rtl.core import SUPPORTED
    missing = sorted({insn.op.name.lower() for insn in prog.insns()
                      if insn.op not in SUPPORTED})
    if missing:
        raise UserError(f"{path}: --rtl needs opcodes the RTL core builds, not "
                        f"{', '.join(missing)} (the core does not build the decoder block's "
                        f"opcodes yet; the executor and the cycle model run them)")


def _run_rtl(cfg, prog, simulator):
    if simulator == "amaranth":
        from verif import core_tb
        return core_tb.run(cfg, prog)
    from verif import core_hdl
    from verif.cocotb_run import SimulatorMissing
    try:
        return core_hdl.run_programs(cfg, {"program": prog}, simulator)["program"]
    except SimulatorMissing as e:
        raise UserError(f"--rtl {simulator}: {e}") from None


def eval_cmd(args):
    """`bitlut eval`: print the fidelity table (and write JSON); exit 0."""
    from bitlut.fileio import atomic_write
    from sim import accuracy
    for name in ("samples", "seqlen", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, not {v}")
    lanes = None
    if args.arch is not None:
        from arch import config
        lanes = config.load(args.arch).timing.vector_lanes
    report = accuracy.evaluate(args.checkpoint, args.qfile, text=args.text, samples=args.samples,
                               seqlen=args.seqlen, batch_size=args.batch_size,
                               act_mode=args.activations,
                               kv=None if args.kv is None else args.kv.split(","),
                               kv_group=args.kv_group, vector=args.vector, lanes=lanes)
    print(accuracy.format_report(report))
    if args.json:
        atomic_write(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
