"""The report `bitlut sim` prints: stalls in words with the share of cycles they are, and the
table saying what its percentages are fractions of."""

import json
import re

import pytest

from sim.cycle import stall_words


@pytest.mark.parametrize("unit, cause, words", [
    ("load", "token:matmul", "load waits for a matmul token"),
    ("table", "token:load", "table waits for a load token"),
    ("vector", "full:store", "vector waits for room in its token FIFO to store"),
    ("store", "dma_slot", "store waits for a free DMA slot"),
])
def test_stall_classes_in_words(unit, cause, words):
    assert stall_words(unit, cause) == words


@pytest.mark.parametrize("cause", ["token", "dma_slot:load", "late:load"])
def test_unknown_stall_class(cause):
    with pytest.raises(ValueError, match=r"stall class must be token:UNIT, full:UNIT or "
                                         rf"dma_slot, not '{cause}'"):
        stall_words("load", cause)


def test_report_says_what_stalls_are_and_of_what(cli, tmp_path):
    out = tmp_path / "r.json"
    r = cli("sim", "--gemm", "8,256,512", "--arch", "lut", "--json", out, "--no-check")
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    text = r.stdout
    assert not re.search(r"\b\w+:(token|full):\w+", text), "a stall counter key in the report"
    assert "top stall (% of cycles)" in text
    assert "% of the layer's cycles" in text and "the roofline's cycles / simulated cycles" in text
    # the layer's top stall: the largest of its units' counters over its cycles, in words
    (row,) = rep["layers"]
    unit, cause, cycles = max(((u, c, v) for u, d in row["units"].items()
                               for c, v in d["stalls"].items()), key=lambda t: t[2])
    words = {"token": "waits for a {} token", "full": "waits for room in its token FIFO to {}",
             "dma_slot": "waits for a free DMA slot"}
    kind, _, other = cause.partition(":")
    want = f"{unit} {words[kind].format(other)}, {cycles / row['cycles']:.0%}"
    assert want in text, (want, text)
    # the phase's three largest, as shares of the phase's cycles
    tot = rep["total"]
    line = next(x for x in text.splitlines() if "top stalls" in x)
    assert line.startswith("  top stalls, % of the phase's cycles: ")
    shares = re.findall(r"(\w+ waits for [^,;]+), (\d+)%", line)
    ranked = sorted(tot["stalls"].items(), key=lambda kv: -kv[1])[:3]
    assert [int(p) for _, p in shares] == [round(100 * v / tot["cycles"]) for _, v in ranked]
    assert [w.split()[0] for w, _ in shares] == [k.split(":")[0] for k, _ in ranked]
