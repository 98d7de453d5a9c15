"""dse.driver, dse.store, dse.executor, dse.report: resume after SIGKILL, exactly one result per
point, the process pool and Dask agreeing byte for byte, the ladder's promotions, the report."""

import html.parser
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from dse import driver, evaluate, fake, pareto, report, sweep
from dse.store import Store

SWEEP = """\
name: t
base: lut
workloads:
  - {{name: w, model: {q}, tokens: {{decode: 1, prefill: 16}}, blocks: 4}}
axes:
  pe.cols: [16, 32, 64, 128, 256]
  dram.gbps: [12.8, 25.6, 51.2, 102.4]
zip:
  - {{pe.kind: [lut, bitserial], pe.group: [4, 2]}}
objectives: {{decode_tok_s: max, prefill_tok_s: max, area_mtr: min}}
ladder: {{batch: {batch}, max_sim_points: {sim}}}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return fake.write_tiny_q(tmp_path_factory.mktemp("dse") / "tiny.q")


def sweep_file(tmp_path, q, batch=2, sim=6, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(SWEEP.format(q=q, batch=batch, sim=sim)))
    return p


def results(store_path):
    with Store(store_path) as st:
        return {(r["key"], r["stage"]): (r["status"], r["metrics_json"]) for r in st.rows()}


def count_rows(store_path):
    db = sqlite3.connect(store_path)
    try:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:        # not created yet
        return 0
    finally:
        db.close()


def logged(path):
    return path.read_text().split("\n")[:-1] if path.exists() else []


RUN = ("import sys; from dse import driver, fake, sweep; from dse.store import Store; "
       "driver.run(sweep.load(sys.argv[1]), Store(sys.argv[2]), executor=sys.argv[3], "
       "workers=2, fn=fake.evaluate, sim=False)")


def test_a_sweep_killed_midway_resumes_evaluating_only_what_is_missing(tmp_path, tiny,
                                                                        monkeypatch):
    path = sweep_file(tmp_path, tiny)
    s = sweep.load(path)
    keys = {p.key for p in s.points(evaluate.model_version())}
    assert len(keys) == 40
    store, log1, log2 = tmp_path / "store.sqlite", tmp_path / "run1.log", tmp_path / "run2.log"
    env = {**os.environ, "BITLUT_DSE_FAKE_DELAY": "0.1", "BITLUT_DSE_FAKE_LOG": str(log1)}
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(path), str(store), "process"],
                            env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while count_rows(store) < 10 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)               # the driver and its pool, mid-sweep
    proc.wait()
    done = {k for k, _ in results(store)}
    assert 10 <= len(done) < 40, "the sweep must have been killed midway"
    assert len(set(logged(log1))) > len(done)         # some points were in flight, lost

    monkeypatch.setenv("BITLUT_DSE_FAKE_LOG", str(log2))
    monkeypatch.setenv("BITLUT_DSE_FAKE_DELAY", "0")
    with Store(store) as st:
        summary = driver.run(s, st, executor="serial", fn=fake.evaluate, sim=False)
    rerun = logged(log2)
    assert len(rerun) == len(set(rerun))                          # each missing point once
    assert {line.split()[1] for line in rerun} == keys - done     # and only those
    assert summary["roofline_new"] == 40 - len(done)
    resumed = results(store)
    assert sorted(k for k, _ in resumed) == sorted(keys)          # exactly one per point

    fresh = tmp_path / "fresh.sqlite"
    with Store(fresh) as st:
        driver.run(s, st, executor="serial", fn=fake.evaluate, sim=False)
    assert resumed == results(fresh)                              # nothing lost or changed


@pytest.mark.parametrize("executor", ["process", "dask"])
def test_a_worker_killed_mid_run_leaves_one_result_per_point(tmp_path, tiny, monkeypatch,
                                                              executor):
    s = sweep.load(sweep_file(tmp_path, tiny, batch=1))
    monkeypatch.setenv("BITLUT_DSE_FAKE_DELAY", "0.02")
    monkeypatch.setenv("BITLUT_DSE_FAKE_DIE", str(tmp_path / "died"))
    with Store(tmp_path / "store.sqlite") as st:
        driver.run(s, st, executor=executor, workers=2, fn=fake.evaluate, sim=False)
        rows = st.rows("roofline")
    assert (tmp_path / "died").exists()                  # a worker did die mid-task
    assert sorted(r["key"] for r in rows) == sorted(p.key for p in
                                                    s.points(evaluate.model_version()))


def test_pool_and_dask_give_the_same_keys_and_byte_equal_metrics(tmp_path, tiny):
    # the real evaluators (roofline and SimPy rungs) on a small workload
    s = sweep.load(sweep_file(tmp_path, tiny, batch=8, sim=4))
    got = {}
    for executor in ("serial", "process", "dask"):
        with Store(tmp_path / f"{executor}.sqlite") as st:
            driver.run(s, st, executor=executor, workers=2)
        got[executor] = results(tmp_path / f"{executor}.sqlite")
    assert any(stage == "sim" for _, stage in got["serial"])
    assert all(status == "ok" for status, _ in got["serial"].values())
    assert got["process"] == got["serial"]
    assert got["dask"] == got["serial"]


def test_the_ladder_simulates_the_near_front_until_nothing_new(tmp_path, tiny):
    s = sweep.load(sweep_file(tmp_path, tiny, sim=40))
    with Store(tmp_path / "store.sqlite") as st:
        summary = driver.run(s, st, executor="serial", fn=fake.evaluate)
        roof = {r["key"]: r["metrics"] for r in st.rows("roofline")}
        simmed = st.done("sim")
    assert summary["converged"] and summary["sim_rounds"] >= 1
    pts = [p for p in s.points(evaluate.model_version()) if p.key in roof]
    vals = [[roof[p.key][m] for m in s.objectives] for p in pts]
    near = {pts[i].key for i in pareto.near_front(vals, list(s.objectives.values()), 0.1)}
    assert near and near <= simmed                # every near-front point reached SimPy
    assert len(simmed) < len(pts)                 # and not everything did


def test_an_uncapped_ladder_runs_until_nothing_is_left_to_promote(tmp_path, tiny):
    s = sweep.load(sweep_file(tmp_path, tiny, sim="null"))
    assert s.ladder["max_sim_points"] is None
    with Store(tmp_path / "store.sqlite") as st:
        summary = driver.run(s, st, executor="serial", fn=fake.evaluate)
        pts = driver.unique_points(s.points(evaluate.model_version()))
        table = driver.merged(st, pts)
        simmed = st.done("sim")
    assert summary["converged"]
    # the front, its 10% band and the front's grid neighbours, all recomputed with the SimPy
    # figures, are simulated: nothing is left to promote
    assert simmed and driver.promotions(s, pts, table, simmed) == []


def test_the_sim_budget_caps_the_ladder(tmp_path, tiny):
    s = sweep.load(sweep_file(tmp_path, tiny, sim=3))
    with Store(tmp_path / "store.sqlite") as st:
        summary = driver.run(s, st, executor="serial", fn=fake.evaluate)
        assert st.count("sim") == 3
    assert not summary["converged"]


class Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]


def test_the_report_renders_self_contained_and_byte_identical(tmp_path, tiny):
    s = sweep.load(sweep_file(tmp_path, tiny, sim=4))
    with Store(tmp_path / "store.sqlite") as st:
        driver.run(s, st, executor="serial", fn=fake.evaluate)
        a = report.render(s, st, tmp_path / "a")
        b = report.render(s, st, tmp_path / "b")
    names = sorted(p.name for p in a["files"])
    assert names == sorted(p.name for p in b["files"])
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for fid, _ in report.FIGURES:
        png = (tmp_path / "a" / f"{fid}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 1000
    text = (tmp_path / "a" / "index.html").read_text()
    p = Parser()
    p.feed(text)
    p.close()
    assert p.tags.count("img") == len(report.FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in p.srcs)
    assert "http://" not in text and "https://" not in text
    readme = (tmp_path / "a" / "README.md").read_text()
    for fid, _ in report.FIGURES:
        assert f"({fid}.png)" in readme
    for table in ("Top points and why they win", "Which PE kind wins", "Pareto front"):
        assert table in readme and table in text
    points_csv = (tmp_path / "a" / "points.csv").read_text().splitlines()
    assert len(points_csv) == 1 + 40


def test_bitlut_dse_runs_a_sweep_and_resumes_it(tmp_path, tiny, capsys):
    from bitlut import cli
    sw = sweep_file(tmp_path, tiny, batch=8, sim=2)
    args = ["dse", str(sw), "--executor", "serial", "--store", str(tmp_path / "st.sqlite"),
            "--out", str(tmp_path / "rep")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "evaluated 40 points by the roofline, 2 by SimPy" in out
    assert (tmp_path / "rep" / "index.html").stat().st_size > 0
    assert cli.main(args) == 0                       # everything is in the store already
    assert "evaluated 0 points by the roofline, 0 by SimPy" in capsys.readouterr().out
