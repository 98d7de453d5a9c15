"""The table unit of the core: `tbl` (around `rtl.table_unit.TableUnit`), `gather` and `cbx`.

A unit module of `rtl.core` (see `rtl/vector_unit.py` for the interface). Not built yet: with
no `OPCODES` the core stops on these instructions with `ErrCode.UNSUPPORTED`.
"""

from amaranth.hdl import Const

__all__ = ["OPCODES", "in_range", "build"]

OPCODES = ()


def in_range(op, v, cfg):
    return Const(1)


def build(b):
    pass
