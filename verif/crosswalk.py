"""`docs/units.md`, the crosswalk of units: for each RTL unit its class and file, its config kind,
the opcodes it serves, the `cfg.timing` fields it must equal, and its tests; then the software
side of the same opcodes: the functional executor's method, the `arch.timing` closed form, the
cycle model's unit process and the report key. The opcodes whose datapath is the core's own (the
DMA engines, the vector unit, the table unit's streams) get one row per ISA unit.

Generated from `rtl.units.UNITS` (a test keeps the checked-in page current); regenerate with
`python -m verif.crosswalk`. It lives in `verif` because that is the layer that may read every
side (arch, rtl, sim, the tests). A row is a dict of columns, so a column is one more key in
`row` (for example the executor method, the `arch.timing` function, the cycle-model unit or the
report key of the software side).
"""

import sys
from pathlib import Path

from arch import timing
from arch.isa import UNIT_OF, Opcode
from rtl import units
from rtl.core import SUPPORTED, UNIT_MODULES
from sim.executor import Executor

from . import test_cocotb, test_shipped, test_units

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "units.md"

__all__ = ["rows", "markdown", "PAGE"]


def _path(module):
    return Path(module.__file__).resolve().relative_to(ROOT).as_posix()


def _tests(name):
    return [f"`{_path(test_units)}::{test_units.test_matches_golden.__name__}[{name}-*]`",
            f"`{_path(test_shipped)}::{test_shipped.test_shipped_timing.__name__}[{name}]`",
            f"`{_path(test_cocotb)}::{test_cocotb.test_cocotb.__name__}[{name}-*]`"]


def _software(opcodes):
    """The software columns of `opcodes`: executor method, closed form, cycle-model unit and
    report key (the cycle model has one process per ISA unit, named as the report's key)."""
    isa_units = sorted({UNIT_OF[op].name.lower() for op in opcodes})
    for op in opcodes:
        getattr(Executor, f"_{op.name.lower()}")          # every opcode has its method
    return {
        "ISA unit": ", ".join(f"`{u}`" for u in isa_units),
        "executor": ", ".join(f"`Executor._{op.name.lower()}`" for op in opcodes),
        "closed form": ", ".join(sorted({f"`arch.timing.{timing.CYCLES[op].__name__}`"
                                         for op in opcodes})),
        "cycle model": ", ".join(f"`sim.cycle` `_unit({u})`" for u in isa_units),
        "report key": ", ".join(f"`units.{u}`" for u in isa_units),
    }


def row(unit):
    """The crosswalk columns of one `rtl.units.Unit`, in page order."""
    cls = unit.component
    return {
        "unit": f"`{unit.name}`",
        "RTL class": f"`{cls.__module__}.{cls.__qualname__}`",
        "file": f"`{cls.__module__.replace('.', '/')}.py`",
        "kind": f"`{unit.kind}`",
        "opcodes": ", ".join(f"`{op.name.lower()}`" for op in unit.opcodes),
        "timing": ", ".join(f"`{key}` = {fact}" for key, fact in unit.timing),
        "tests": "<br>".join(_tests(unit.name)),
    } | _software(unit.opcodes)


def _core_file(op):
    """The file of the core's datapath for `op`: its unit module, or the core (DMA)."""
    for module in UNIT_MODULES:
        if op in module.OPCODES:
            return module.__name__.replace(".", "/") + ".py"
    return "rtl/core.py"


def core_rows():
    """One row per ISA unit for the opcodes whose datapath is the core's own (DMA, the vector
    unit, the table unit's streams), and one for any opcode nothing runs yet."""
    served = {op for u in units.UNITS for op in u.opcodes}
    out = []
    for isa_unit in sorted({u for u in UNIT_OF.values() if u is not None}, key=lambda u: u.value):
        ops = tuple(op for op in Opcode if UNIT_OF[op] is isa_unit and op not in served)
        built = tuple(op for op in ops if op in SUPPORTED)
        unbuilt = tuple(op for op in ops if op not in SUPPORTED)
        if built:
            files = sorted({_core_file(op) for op in built})
            out.append({"unit": f"`core` ({isa_unit.name.lower()})",
                        "RTL class": "`rtl.core.Core`",
                        "file": ", ".join(f"`{f}`" for f in files), "kind": "all",
                        "opcodes": ", ".join(f"`{op.name.lower()}`" for op in built),
                        "timing": ", ".join(f"`{k}` = {f}" for k, f in units.CORE.timing),
                        "tests": "`verif/test_core*.py`"} | _software(built))
        if unbuilt:          # the executor and the cycle model run them; the RTL does not yet
            out.append({"unit": f"`core` ({isa_unit.name.lower()}, not built)",
                        "RTL class": "(not built)", "file": "", "kind": "all",
                        "opcodes": ", ".join(f"`{op.name.lower()}`" for op in unbuilt),
                        "timing": "", "tests": "`tests/test_block.py`"} | _software(unbuilt))
    return out


def rows():
    """One `row` per unit, in table order, then the core's own datapaths."""
    return [row(u) for u in units.UNITS] + core_rows()


def markdown(table=None):
    """The page for `table` (default `rows()`): a title, how it is made, one Markdown table."""
    table = rows() if table is None else table
    head = list(table[0])
    out = ["# Units: RTL, ISA, software and tests", "",
           "Generated from `rtl/units.py` by `python -m verif.crosswalk`; do not edit by hand.", "",
           "One row per unit of `rtl.units.UNITS`. *timing*: the `cfg.timing` field (the cycle",
           "model's input) that must equal the unit's pipeline as built (`pipeline_for`):",
           "*depth* its register stages, *ii* its initiation interval (`rtl.units.check_timing`).",
           "",
           "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in table:
        if list(r) != head:
            raise ValueError(f"crosswalk row columns must be {head}, not {list(r)}")
        out.append("| " + " | ".join(r[c] for c in head) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    PAGE.write_text(markdown())
    print(f"wrote {PAGE}", file=sys.stderr)
