"""The MAC baseline against SCALE-Sim v3: compute cycles of a 32x32 weight-stationary array.

    python -m sim.scalesim_compare                       # compare with the recorded numbers
    python -m sim.scalesim_compare --scalesim-python P   # run SCALE-Sim (in the interpreter P,
                                                         # e.g. a venv with `pip install scalesim
                                                         # "numpy<2.4"`) and record its numbers

SCALE-Sim's `Total Cycles` (COMPUTE_REPORT.csv, CALC bandwidth mode) is the index of the array's
last output write: `ceil(K/R) * ceil(N/C) * (2R + C + M - 2) - 1` (papers/peers.md §3.1). Ours is
the sum of `arch.timing.matmul_cycles` over the MMA instructions the compiler emits for the same
GEMM (all M rows in one row block, per-row scales so one k-step spans K), minus one for the same
zero-based count, with `pe_latency` 0 (SCALE-Sim's array has no I/O registers; the RTL's add
`pe_latency` cycles per fold) and `matmul_overhead` 0 (nor a sequencer; the core's adds it once
per instruction). SCALE-Sim needs numpy < 2.4, so it runs in its own interpreter;
`--record` writes what it measured to `sim/data/scalesim_ws32.json`, which
`tests/test_scalesim.py` reads.
"""

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

RECORD = Path(__file__).parent / "data" / "scalesim_ws32.json"
GEMMS = [(1, 64, 64), (16, 128, 96), (5, 100, 70), (32, 256, 128)]     # (M, K, N)

SCALESIM_CFG = """\
[general]
run_name = ws32

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     32
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : ws
MemoryBanks:   1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

# Run inside SCALE-Sim's interpreter: prints {"M,K,N": total_cycles} as JSON.
_RUNNER = textwrap.dedent("""
    import json, os, sys, contextlib, io
    from scalesim.scale_sim import scalesim
    out = {}
    for spec in sys.argv[2:]:
        m, k, n = spec.split(",")
        d = os.path.join(sys.argv[1], f"g{m}_{k}_{n}")
        os.makedirs(d, exist_ok=True)
        topo = os.path.join(d, "topo.csv")
        with open(topo, "w") as f:
            f.write(f"Layer, M, N, K,\\ng, {m}, {n}, {k},\\n")
        layout = os.path.join(d, "nolayout.csv")
        with open(layout, "w") as f:
            f.write("Layer name,\\n")
        s = scalesim(save_disk_space=True, verbose=False, config=os.path.join(sys.argv[1],
                     "ws32.cfg"), topology=topo, layout=layout, input_type_gemm=True)
        with contextlib.redirect_stdout(io.StringIO()):
            s.run_scale(top_path=d)
        layer = s.runner.single_layer_sim_object_list[0]
        out[spec] = int(layer.get_compute_report_items()[1])
    print(json.dumps(out))
""")


def run_scalesim(python, gemms=GEMMS):
    """SCALE-Sim's compute cycles for each GEMM, run in interpreter `python`."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "ws32.cfg").write_text(SCALESIM_CFG)
        specs = [f"{m},{k},{n}" for m, k, n in gemms]
        r = subprocess.run([python, "-c", _RUNNER, tmp, *specs], capture_output=True,
                           text=True, check=True)
        version = subprocess.run([python, "-c", "import importlib.metadata as m; "
                                  "print(m.version('scalesim'))"], capture_output=True,
                                 text=True).stdout.strip()
    return json.loads(r.stdout.strip().splitlines()[-1]), version


def ours(m, k, n, config=None):
    """Our MAC array's compute cycles for the GEMM (zero-based, as SCALE-Sim counts)."""
    from arch import config as config_mod
    from arch import timing
    from arch.isa import Opcode
    from compiler.lower import lower
    from compiler.tiling import Tiling
    from quant.random_layer import uniform_layer
    cfg = config or config_mod.load("mac")
    # SCALE-Sim's array has no I/O registers and no sequencer: compare with ours at pe_latency
    # 0 and matmul_overhead 0 (the shipped RTL adds its pe_latency per fold and the sequencer's
    # start and first read once per instruction on top, arch/timing.py)
    cfg = cfg.replace(timing=dataclasses.replace(cfg.timing, pe_latency=0, matmul_overhead=0))
    # int8 codes, per-row scale 1 and zero point 0: one k-step spans K
    layer = uniform_layer(0, n, k, 8, group_size=k, name="gemm", scale_min=1.0, scale_spread=0.0,
                          zero=0)
    compiled = lower(layer, cfg, m, tile=Tiling(m, n))
    total = 0
    for insn in compiled.program.insns():
        if insn.op is Opcode.MMA:
            total += timing.matmul_cycles(cfg, insn.op, insn.rows, insn.n, insn.kgroups, 8)
    return total - 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scalesim-python", help="interpreter with scalesim installed: run it")
    p.add_argument("--record", action="store_true", help="write the measured numbers")
    args = p.parse_args(argv)
    if args.scalesim_python:
        theirs, version = run_scalesim(args.scalesim_python)
        if args.record:
            from bitlut.fileio import atomic_write
            atomic_write(RECORD, json.dumps({"scalesim_version": version, "array": "32x32 ws",
                                             "mode": "CALC", "compute_cycles": theirs},
                                            indent=2) + "\n")
    else:
        rec = json.loads(RECORD.read_text())
        theirs, version = rec["compute_cycles"], rec["scalesim_version"]
    print(f"{'GEMM M,K,N':>14}  {'SCALE-Sim ' + version:>16}  {'bitlut':>10}  equal")
    ok = True
    for spec, cycles in theirs.items():
        m, k, n = (int(v) for v in spec.split(","))
        mine = ours(m, k, n)
        ok &= mine == cycles
        print(f"{spec:>14}  {cycles:>16,}  {mine:>10,}  {mine == cycles}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
