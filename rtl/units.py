"""The table of RTL units: each unit declared once.

A `Unit` names a design (the Verilog module, the build folder, the cocotb design), its component
class, the PE kind whose configs contain it, the opcodes it serves and the `cfg.timing` fields
that must equal its pipeline as built. The Verilog export (`rtl.verilog.designs`), the test
benches (`verif.benches`, keyed by `Unit.name`) and the docs' crosswalk read it; adding a unit
touches this table and, for its tests, `verif.benches`.

Every component in the table is a `rtl.common.PipelineComponent`: its signature and its timing
are functions of the config (`signature_for`, `pipeline_for`), so layouts and latencies are read
without constructing an elaboratable that nothing uses.
"""

from dataclasses import dataclass

from amaranth.lib import wiring

from arch.isa import Opcode

from .bitserial_pe import BitSerialPEArray
from .core import SUPPORTED, Core
from .lut_pe import LutPEArray
from .mac_pe import MacPEArray
from .table_unit import TableUnit

__all__ = ["Unit", "UNITS", "CORE", "unit", "units_of", "timing_errors", "check_timing",
           "payload_layouts", "output_port"]

#: What a `Pipeline` field is called in a message.
_FACTS = {"depth": "pipeline depth", "ii": "initiation interval"}


@dataclass(frozen=True)
class Unit:
    """One RTL unit.

    Members
    -------
    name : str
        Design name: the Verilog module, `<name>.v`, the cocotb `BITLUT_DESIGN`.
    component : type
        A `PipelineComponent` subclass, built as `component(cfg)`.
    kind : str
        The `pe.kind` whose configs contain this unit.
    opcodes : tuple of arch.isa.Opcode
        The instructions whose data path it is.
    timing : tuple of (str, str)
        `(cfg.timing field, Pipeline field)` pairs that must be equal: the cycle model's inputs
        and the unit's construction.
    """
    name: str
    component: type
    kind: str
    opcodes: tuple
    timing: tuple

    def build(self, cfg, *, src_loc_at=0):
        """The component for `cfg` (raises `ValueError` for a config of another kind). Amaranth
        holds the caller (`src_loc_at` frames up) to elaborating it."""
        return self.component(cfg, src_loc_at=1 + src_loc_at)

    def signature(self, cfg):
        """The component's signature for `cfg`, without building it."""
        return self.component.signature_for(cfg)

    def pipeline(self, cfg):
        """The component's `Pipeline` for `cfg`, without building it."""
        return self.component.pipeline_for(cfg)

    def timing_errors(self, cfg):
        """Messages for each `timing` pair where `cfg.timing` disagrees with the pipeline."""
        built = self.pipeline(cfg)
        errors = []
        for key, fact in self.timing:
            stated, have = getattr(cfg.timing, key), getattr(built, fact)
            if stated != have:
                errors.append(f"`timing.{key}` must be {have}, the {_FACTS[fact]} in cycles of "
                              f"the {self.component.__name__} built for {cfg.tag}, not {stated}")
        return errors


_PE_TIMING = (("pe_latency", "depth"), ("pe_ii", "ii"))
_TABLE_TIMING = (("table_latency", "depth"), ("table_ii", "ii"))

UNITS = (
    Unit("table_unit", TableUnit, "lut", (Opcode.TBL,), _TABLE_TIMING),
    Unit("lut_pe", LutPEArray, "lut", (Opcode.LMMA,), _PE_TIMING),
    Unit("bitserial_pe", BitSerialPEArray, "bitserial", (Opcode.BSMM,), _PE_TIMING),
    Unit("mac_pe", MacPEArray, "mac", (Opcode.MMA,), _PE_TIMING),
)


#: The core: every config has one. Its timing facts are its own construction
#: (`rtl.core.CorePipeline`): the DMA setup, the queue hand-over and the vector unit's depth.
CORE = Unit("core", Core, "any", SUPPORTED,
            (("dma_setup", "dma_setup"), ("dispatch_latency", "dispatch_latency"),
             ("vector_latency", "depth")))


def unit(name):
    """The `Unit` called `name` (raises `KeyError` naming the known ones)."""
    for u in UNITS:
        if u.name == name:
            return u
    raise KeyError(f"unit must be one of {', '.join(u.name for u in UNITS)}, not {name!r}")


def units_of(cfg):
    """The units a config of `cfg.pe.kind` contains, in table order."""
    return tuple(u for u in UNITS if u.kind == cfg.pe.kind)


def timing_errors(cfg):
    """Every disagreement between `cfg.timing` and the units of `cfg`'s kind and the core, as
    messages."""
    return [e for u in units_of(cfg) + (CORE,) for e in u.timing_errors(cfg)]


def check_timing(cfg):
    """Raise `ValueError` if `cfg.timing` states other numbers than the RTL of `cfg`'s kind is
    built with (the cycle model would then time a different machine)."""
    errors = timing_errors(cfg)
    if errors:
        raise ValueError("; ".join(errors))


def payload_layouts(signature):
    """`{port: payload layout}` of the stream members of a component's `signature`, in
    declaration order (inputs and the output alike)."""
    return {name: member.signature.members["payload"].shape
            for name, member in signature.members.items()}


def output_port(signature):
    """The name of the one output stream of `signature`."""
    (name,) = [n for n, m in signature.members.items() if m.flow == wiring.Out]
    return name
