"""`rtl.sta` against hand-built netlists whose longest path is a closed form of `DELAYS`,
`CLOCK_TO_OUT` and `NET_NS`."""

import json

from rtl import sta
from rtl.sta import CLOCK_TO_OUT, DELAYS, NET_NS


def _cell(kind, inputs, outputs):
    conns = {**inputs, **outputs}
    dirs = {**dict.fromkeys(inputs, "input"), **dict.fromkeys(outputs, "output")}
    return {"type": kind, "connections": {k: list(v) for k, v in conns.items()},
            "port_directions": dirs}


def _netlist(cells):
    bits = sorted({b for c in cells.values() for v in c["connections"].values() for b in v})
    return {"modules": {"top": {"cells": cells,
                                "netnames": {f"n{b}": {"bits": [b]} for b in bits}}}}


def test_two_luts_between_flip_flops():
    # FF q(2) -> LUT(3) -> LUT(4) -> FF d; a one-LUT path beside it must not win
    cells = {"ff0": _cell("TRELLIS_FF", {"DI": [1]}, {"Q": [2]}),
             "l1": _cell("LUT4", {"A": [2]}, {"Z": [3]}),
             "l2": _cell("LUT4", {"A": [3]}, {"Z": [4]}),
             "ff1": _cell("TRELLIS_FF", {"DI": [4]}, {"Q": [5]}),
             "l3": _cell("LUT4", {"A": [5]}, {"Z": [6]}),
             "ff2": _cell("TRELLIS_FF", {"DI": [6]}, {"Q": [1]})}
    (ns, kind, name, port, steps), *_ = sta.paths(_netlist(cells), "top", 3)
    lut = DELAYS["LUT4"][("", None)]
    assert (kind, name, port) == ("TRELLIS_FF", "ff1", "DI")
    assert abs(ns - (CLOCK_TO_OUT["TRELLIS_FF"] + 2 * (NET_NS + lut) + NET_NS)) < 1e-9
    assert [s[2] for s in steps] == ["TRELLIS_FF", "LUT4", "LUT4"]


def test_a_carry_chain_and_a_multiplier_from_block_ram():
    # DP16KD DO(2) -> CCU2C A0 -> COUT(3) -> CCU2C CIN (a dedicated wire) -> S0(4)
    #   -> MULT18X18D A0 -> P0(5) -> FF
    cells = {"ram": _cell("DP16KD", {"ADA0": [9]}, {"DOA0": [2]}),
             "c0": _cell("CCU2C", {"A0": [2], "CIN": [8]}, {"COUT": [3], "S0": [7]}),
             "c1": _cell("CCU2C", {"A0": [8], "CIN": [3]}, {"COUT": [10], "S0": [4]}),
             "mul": _cell("MULT18X18D", {"A0": [4], "B0": [8]}, {"P0": [5]}),
             "ff": _cell("TRELLIS_FF", {"DI": [5]}, {"Q": [9]})}
    (ns, kind, *_), *_ = sta.paths(_netlist(cells), "top", 1)
    expect = (CLOCK_TO_OUT["DP16KD"] + NET_NS + DELAYS["CCU2C"][("", "COUT")]
              + DELAYS["CCU2C"][("CIN", None)] + NET_NS + DELAYS["MULT18X18D"][("A", None)]
              + NET_NS)
    assert kind == "TRELLIS_FF" and abs(ns - expect) < 1e-9


def test_the_command_rejects_a_file_that_is_not_a_netlist(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    assert sta.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.json" in err[0] and "Yosys JSON netlist" in err[0]
    good = tmp_path / "n.json"
    good.write_text(json.dumps(_netlist({})))
    assert sta.main([str(good), "--top", "core"]) == 2
    assert "`--top` must be one of its modules (top), not 'core'" in capsys.readouterr().err
