"""`bitlut sim --trace`: the whole run as Chrome/Perfetto JSON. Every layer of every phase has its
span, laid end to end; the unit tracks hold one span per instruction of the programs run
(compiled again here), DMA requests in flight on their own tracks; the spans of one track nest;
sampled layers show their sampled tiles, marked, and an extrapolated rest; the stall spans add up
to the report's stall counters; the event budget and `--trace-layer` cut visibly."""

import collections
import json
from pathlib import Path

import numpy as np
import pytest

import quant
from arch import config
from arch.isa import Opcode, Unit
from bitlut.cli import main
from compiler import tiling
from compiler.lower import lower
from compiler.plan import plan_layer
from quant.layer import QModel
from quant.random_layer import codebook_layer, uniform_layer
from sim import driver

LUT = config.load("lut")
ROOT = Path(__file__).resolve().parent.parent
TOKENS = (1, 40)
SAMPLE_ABOVE = 100        # instructions: layer b at 40 tokens is sampled, the others are not


@pytest.fixture
def model(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    layers = {"a": codebook_layer(rng, 64, 128, (2, 4), name="a"),
              "b": uniform_layer(rng, 256, 512, 2, group_size=128, outliers=20, name="b"),
              "c": codebook_layer(rng, 128, 128, (2, 2, 4), name="c")}
    path = tmp_path / "m.q"
    quant.save(path, QModel("t", {"name": "claq", "settings": {}}, layers))
    monkeypatch.setattr(driver, "FULL_SIM_INSNS", SAMPLE_ABOVE)
    return path, layers


def run(tmp_path, qfile, *extra):
    trace, report = tmp_path / "t.json", tmp_path / "r.json"
    code = main(["sim", str(qfile), "--arch", "lut", "--tokens", ",".join(map(str, TOKENS)),
                 "--trace", str(trace), "--json", str(report), *map(str, extra)])
    assert code == 0
    return json.loads(trace.read_text()), json.loads(report.read_text())


def programs_run(layer, m, sample_above=SAMPLE_ABOVE):
    """The program the driver simulates for `layer` at `m` tokens (the whole layer, or the
    two-tile sample of a sampled one), compiled again, whether it is sampled, and the layer's
    number of output tiles."""
    plan = plan_layer(layer, LUT)
    tile = tiling.choose(plan, LUT, m)
    ntiles = -(-m // tile.mr) * -(-layer.shape[0] // tile.nw)
    sampled = tiling.estimate(plan, LUT, m, tile)["instructions_est"] > sample_above \
        and ntiles > 2
    if not sampled:
        return lower(layer, LUT, m, tile=tile, image=False).program, False, ntiles
    rows = 2 * tile.mr if m >= 2 * tile.mr else tile.mr
    nout = tile.nw if m >= 2 * tile.mr else 2 * tile.nw
    sub = driver.rows_of(layer, nout)
    return lower(sub, LUT, rows, tile=tile, image=False).program, True, ntiles


def tracks(trace):
    """{pid: process name}, {(pid, tid): track name}, {(pid, tid): [spans]}."""
    procs, names, spans = {}, {}, collections.defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "process_name":
            procs[e["pid"]] = e["args"]["name"]
        elif e["ph"] == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e["ph"] == "X":
            assert {"name", "cat", "ts", "dur", "pid", "tid", "args"} <= e.keys()
            assert isinstance(e["ts"], int) and e["dur"] >= 1
            spans[(e["pid"], e["tid"])].append(e)
    return procs, names, spans


def assert_nested(names, spans):
    """Spans on one track nest (the trace format's rule for complete events)."""
    for key, ss in spans.items():
        ends = []
        for e in sorted(ss, key=lambda e: (e["ts"], -e["dur"])):
            while ends and ends[-1] <= e["ts"]:
                ends.pop()
            assert not ends or e["ts"] + e["dur"] <= ends[-1], \
                f"track {names[key]!r}: {e['name']} at {e['ts']} crosses its parent's end"
            ends.append(e["ts"] + e["dur"])


def test_the_whole_run_is_traced(tmp_path, model, capsys):
    qfile, layers = model
    trace, report = run(tmp_path, qfile)
    assert "wrote" in capsys.readouterr().out
    sampled = assert_whole_run(trace, report, layers, SAMPLE_ABOVE)
    assert sampled == {(40, "b")}


@pytest.mark.slow
def test_the_llama7b_block_is_traced(tmp_path):
    # `make sim LAYER=llama7b.q`, both phases, traced (about a minute once llama7b.q exists)
    qfile = ROOT / "llama7b.q"
    if not qfile.exists():
        qfile = tmp_path / "llama7b.q"
        assert main(["quantize", "--synthetic", "llama7b", "-o", str(qfile)]) == 0
    trace = tmp_path / "t.json"
    out = tmp_path / "r.json"
    assert main(["sim", str(qfile), "--no-check", "--trace", str(trace), "--json", str(out)]) == 0
    layers = quant.load(qfile).layers
    sampled = assert_whole_run(json.loads(trace.read_text()), json.loads(out.read_text()), layers,
                               driver.FULL_SIM_INSNS)
    assert {m for m, _ in sampled} == {2048}


def assert_whole_run(trace, report, layers, sample_above):
    """Check a `bitlut sim --trace` file against the report and the programs run (compiled
    again); returns the sampled (tokens, layer) pairs."""
    procs, names, spans = tracks(trace)
    assert [procs[p] for p in sorted(procs)] == [driver.phase_label(ph["tokens"])
                                                for ph in report["phases"]]
    assert_nested(names, spans)
    all_sampled = set()
    for pid, phase in zip(sorted(procs), report["phases"], strict=True):
        m = phase["tokens"]
        track = {names[k]: k for k in names if k[0] == pid}
        for u in Unit:
            assert u.name.lower() in track
        # one span per layer, in execution order, end to end, as long as the report says
        laid = sorted(spans[track["layers"]], key=lambda e: e["ts"])
        assert [e["name"].split()[0] for e in laid] == list(layers)
        t = 0
        for e, row in zip(laid, phase["layers"], strict=True):
            assert (e["ts"], e["dur"]) == (t, row["cycles"])
            t += row["cycles"]
        # every instruction of the programs run, on its unit's track, and every DMA request
        want, inflight, sampled, ntiles = collections.Counter(), 0, set(), {}
        for name, layer in layers.items():
            prog, is_sampled, ntiles[name] = programs_run(layer, m, sample_above)
            if is_sampled:
                sampled.add(name)
            for insn in prog.insns():
                if insn.op in (Opcode.NOP, Opcode.FINISH):
                    continue
                want[insn.unit.name.lower()] += 1
                inflight += insn.unit in (Unit.LOAD, Unit.STORE)
        got = collections.Counter()
        for u in Unit:
            got[u.name.lower()] = sum(e["cat"] != "stall" for e in spans[track[u.name.lower()]])
        assert got == want
        assert sum(len(spans[k]) for n, k in track.items() if "in flight" in n) == inflight
        # a sampled layer says so: in its span, on its two simulated tiles, and with one span
        # for the extrapolated rest
        tiles = [e for n, k in track.items() if n.startswith("tiles") for e in spans[k]]
        for e in laid:
            name = e["name"].split()[0]
            assert e["args"]["sampled"] == (name in sampled)
            assert e["name"].endswith("(sampled)") == (name in sampled)
            assert e["args"]["tiles"] == ntiles[name]
            mine = collections.Counter(t["cat"] for t in tiles if t["args"]["layer"] == name)
            if name in sampled:
                assert mine == {"sampled tile": 2, "extrapolated": 1}
            else:
                assert mine == {"tile": ntiles[name]}
        for t in tiles:
            assert ("(sampled)" in t["name"]) == (t["cat"] == "sampled tile")
        all_sampled |= {(m, name) for name in sampled}
    return all_sampled


def test_stall_spans_add_up_to_the_stall_counters(tmp_path, model):
    qfile, _ = model
    trace, report = run(tmp_path, qfile, "--tokens", "1")   # nothing sampled at one token
    procs, names, spans = tracks(trace)
    (phase,) = report["phases"]
    want = collections.Counter()
    for row in phase["layers"]:
        for unit, u in row["units"].items():
            for cause, cycles in u["stalls"].items():
                want[(unit, cause)] += cycles
    # the stall classes in words, written out here (README: stall classes)
    words = {"waits for a free DMA slot": "dma_slot"}
    for u in ("load", "table", "matmul", "vector", "store"):
        words[f"waits for a {u} token"] = f"token:{u}"
        words[f"waits for room in its token FIFO to {u}"] = f"full:{u}"
    got = collections.Counter()
    for ss in spans.values():
        for e in ss:
            if e["cat"] == "stall":
                unit, _, what = e["name"].partition(" ")
                got[(unit, words[what])] += e["dur"]
    assert got == want and want


def test_a_small_budget_cuts_visibly(tmp_path, model, capsys):
    qfile, layers = model
    budget = 60
    trace, report = run(tmp_path, qfile, "--trace-budget", budget)
    out = capsys.readouterr().out
    procs, names, spans = tracks(trace)
    assert_nested(names, spans)
    detail = [e for ss in spans.values() for e in ss
              if e["cat"] not in ("layer", "not traced", "extrapolated")]
    assert 0 < len(detail) <= budget
    layer_spans = [e for k, ss in spans.items() if names[k] == "layers" for e in ss]
    assert len(layer_spans) == len(layers) * len(TOKENS)      # every layer, cut or not
    cut = [e for e in layer_spans if "trace budget" in e["args"].get("note", "")]
    assert cut, "a budget this small must cut some layer"
    skipped = {e["args"]["layer"] for ss in spans.values() for e in ss
               if e["cat"] == "not traced"}
    assert skipped == {e["name"].split()[0] for e in cut}
    assert "traced only the first simulated tiles of" in out
    for e in cut:
        assert e["args"]["tiles_traced"] < e["args"]["tiles_simulated"]


def test_trace_layer_traces_one_layer(tmp_path, model):
    qfile, layers = model
    trace, report = run(tmp_path, qfile, "--trace-layer", "c")
    procs, names, spans = tracks(trace)
    insn_layers = {e["args"]["layer"] for ss in spans.values() for e in ss
                   if e["cat"] in ("tile", "sampled tile")}
    assert insn_layers == {"c"}
    layer_spans = [e for k, ss in spans.items() if names[k] == "layers" for e in ss]
    assert sorted(e["name"].split()[0] for e in layer_spans) == sorted(list(layers) * 2)
    for e in layer_spans:
        assert (e["args"]["tiles_traced"] > 0) == e["name"].startswith("c")


@pytest.mark.parametrize("args, message", [
    (["--trace-layer", "nope", "--trace", "t.json"],
     "--trace-layer must name simulated layers (a, b, c), not nope"),
    (["--trace-layer", "a"], "--trace-layer and --trace-budget need --trace FILE"),
    (["--trace-budget", "-1", "--trace", "t.json"],
     "sim: error: argument --trace-budget: must be from 0 to 100000000, not -1 "
     "(see bitlut sim --help)"),
])
def test_trace_options_are_checked(model, capsys, args, message):
    qfile, _ = model
    try:       # a value argparse refuses exits there, one the command refuses returns 2
        code = main(["sim", str(qfile), "--arch", "lut", "--tokens", "1", "--no-check", *args])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err in (f"bitlut: error: {message}", f"bitlut {message}"), err


def test_one_program_has_a_track_per_unit_and_a_span_per_instruction(tmp_path):
    from sim.cycle import simulate
    from sim.trace import Trace, UnitTracks, stalls_by_insn
    rng = np.random.default_rng(2)
    prog = lower(codebook_layer(rng, 70, 300, (2, 3, 4), outliers=11), LUT, 2).program
    res, model = simulate(LUT, prog, data=False, trace=True)
    trace = Trace()
    units = UnitTracks(trace, trace.process("run"))
    units.instructions(prog.insns(), model.log, range(len(prog.words)), 0,
                       stalls_by_insn(model.stall_log))
    trace.write(tmp_path / "t.json")
    procs, names, spans = tracks(json.loads((tmp_path / "t.json").read_text()))
    assert_nested(names, spans)
    assert {names[k] for k in names if "in flight" not in names[k]} == \
        {u.name.lower() for u in Unit}
    insns = [i for i in prog.insns() if i.op is not Opcode.FINISH]
    flat = [e for ss in spans.values() for e in ss]
    assert sum(e["cat"] in {u.name.lower() for u in Unit} for e in flat) == len(insns)
    assert sum("in flight" in e["cat"] for e in flat) == \
        sum(i.unit in (Unit.LOAD, Unit.STORE) for i in insns)
    assert sum(e["cat"] == "stall" for e in flat) == len(model.stall_log)
    assert max(e["ts"] + e["dur"] for e in flat) <= res.cycles + 1
