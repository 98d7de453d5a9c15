"""Small test configs derived from the shipped ones (`dataclasses.replace`), and the seed.

The RTL is parametrized only by `ArchConfig`; tests shrink the array (rows, cols) so the
simulators stay fast, keeping every other parameter (group, index bits, widths, timing) as shipped.
"""

import dataclasses
import os

from arch import config

SMALL = {
    "lut": {"rows": 2, "cols": 4},
    "bitserial": {"rows": 2, "cols": 4},
    "mac": {"rows": 4, "cols": 4},
}


def small(kind, **pe_changes):
    """The shipped `kind` config with a small array (and any other `pe` field changed)."""
    cfg = config.load(kind)
    pe = dataclasses.replace(cfg.pe, **(SMALL[kind] | pe_changes))
    return cfg.replace(pe=pe)


def long_run():
    """True under `make test-rtl-long` (env `BITLUT_RTL_LONG=1`): longer random soaks."""
    return os.environ.get("BITLUT_RTL_LONG", "") not in ("", "0")
