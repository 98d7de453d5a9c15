"""dse.attention and the sweep's decode contexts: the `ctx` and `kv` workload keys, the cheap
rung's attention against the cycle model's run of the same program, infeasible points (a
context beyond the scratchpads, a KV format the array cannot multiply), the KV cache in the
decode metrics, and the report's per-context answer."""

import dataclasses
import re
import textwrap

import pytest

from arch import config, kv
from bitlut.errors import UserError
from dse import attention, driver, evaluate, fake, report, sweep
from dse.store import Store

SWEEP = """\
name: t
base: lut
workloads:
  - {{name: w, model: {q}, tokens: {{decode: 1, prefill: 16}}, blocks: 2, ctx: [1024, 16384],
     kv: [fp16, int8, int4]}}
zip:
  - {{pe.kind: [lut, bitserial, mac], pe.group: [4, 4, 1], pe.rows: [2, 2, 32],
     pe.cols: [64, 64, 32], pe.weight_bits: [[1, 2, 3, 4], [1, 2, 4, 8], [1, 2, 4, 8]]}}
axes:
  dram.gbps: [25.6, 51.2]
objectives: {{decode_tok_s: max, decode_j_per_tok: min, area_mtr: min}}
ladder: {{max_sim_points: 4, batch: 8}}
"""


@pytest.fixture(scope="module")
def qfiles(tmp_path_factory):
    """A one-block file with the model's shape (head dim 128, 2 KV heads of 2 query heads), and
    one without (the linear layers alone)."""
    d = tmp_path_factory.mktemp("dse")
    return fake.write_tiny_block_q(d / "block.q"), fake.write_tiny_q(d / "plain.q")


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture(scope="module")
def block(qfiles, tmp_path_factory):
    """The block file's workload, without a context (the linear layers alone)."""
    p = tmp_path_factory.mktemp("sweep") / "one.yaml"
    p.write_text(f"name: one\nbase: lut\nworkloads:\n  - {{name: w, model: {qfiles[0]}, "
                 "tokens: {decode: 1, prefill: 16}, blocks: 2}\nobjectives: {area_mtr: min}\n")
    return sweep.load(p).workloads[0]


def at(wl, ctx=None, kv_name=None):
    """`wl` decoding after `ctx` cached tokens in KV format `kv_name`."""
    return dataclasses.replace(wl, ctx=ctx, kv=kv_name)


def _plans(wl, c):
    shape, roles = evaluate._block(wl)
    plans = evaluate._plans(evaluate._model(wl).layers.values(), c)
    return shape, {r: plans[n] for r, n in roles.items()}


def cfg(kind="lut", **sram):
    base = config.load(kind)
    return base.replace(sram=dataclasses.replace(base.sram, **sram)) if sram else base


# -- the sweep file -----------------------------------------------------------------------------
def test_ctx_and_kv_lists_make_one_workload_each_with_its_own_keys(tmp_path, qfiles):
    s = sweep.load(write(tmp_path, SWEEP.format(q=qfiles[0])))
    assert [wl.name for wl in s.workloads] == [f"w-ctx{c}-{k}" for c in ("1k", "16k")
                                               for k in ("fp16", "int8", "int4")]
    assert {(wl.base, wl.ctx, wl.kv) for wl in s.workloads} == {
        ("w", c, k) for c in (1024, 16384) for k in ("fp16", "int8", "int4")}
    pts = s.points("v1")
    assert len(pts) == 6 * 3 * 2 and len({p.key for p in pts}) == len(pts)


@pytest.mark.parametrize("edit, message", [
    (("ctx: [1024, 16384]", "ctx: 0"),
     r"`workloads\[0\].ctx` must be a context length in tokens from 1 to 1048576, not 0"),
    (("ctx: [1024, 16384]", "ctx: [1024, long]"),
     r"`workloads\[0\].ctx\[1\]` must be a context length in tokens"),
    (("ctx: [1024, 16384]", "ctx: [1024, 1024]"),
     r"`workloads\[0\].ctx` must be a list without repeats"),
    (("kv: [fp16, int8, int4]", "kv: int3"),
     r"`workloads\[0\].kv` must be a KV format \(fp16, int8, int4, int2\), not 'int3'"),
    (("ctx: [1024, 16384],\n     kv", "kv"),
     r"`workloads\[0\].kv` must be given with `ctx`"),
    (("decode: 1, prefill: 16", "prefill: 16"),
     r"`workloads\[0\].ctx` must be set for a workload with a one-token \(decode\) phase"),
])
def test_bad_context_keys_are_one_line_errors(tmp_path, qfiles, edit, message):
    text = SWEEP.format(q=qfiles[0]).replace(*edit)
    assert text != SWEEP.format(q=qfiles[0])
    with pytest.raises(UserError, match=message) as e:
        sweep.load(write(tmp_path, text))
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path))


def test_a_context_needs_a_q_file_with_the_model_shape(tmp_path, qfiles):
    with pytest.raises(UserError, match=r"`workloads\[0\].ctx` must be set for a .q file that "
                       r"records the model's shape"):
        sweep.load(write(tmp_path, SWEEP.format(q=qfiles[1])))


# -- the cheap rung against the cycle model --------------------------------------------------
@pytest.mark.parametrize("kind, kv_name", [("lut", "fp16"), ("lut", "int4"),
                                           ("bitserial", "int8"), ("bitserial", "int2"),
                                           ("mac", "int8"), ("mac", "int4")])
def test_the_attention_estimate_is_the_cycle_models_run_less_fill_and_drain(block, kind,
                                                                         kv_name):
    # one KV head's program priced by the closed forms, and the same program run by SimPy
    # (independent: it counts events and bytes as it runs): events and DRAM bytes agree
    # exactly, cycles within what the closed forms leave out (each tile's fill and drain:
    # within 35% from 1K tokens on; LLaMA-7B's heads, one query row each, 1-14%)
    c = cfg(kind)
    shape, plans = _plans(block, c)
    fmt = attention.kv_format(c, shape, kv_name)
    est = attention.estimate(c, shape, plans, 1024, fmt, block.checksum)["attention"]
    sim = attention.simulate(c, shape, plans, 1024, fmt, block.checksum)["attention"]
    assert est.events == sim.events and est.dram == sim.dram
    assert est.cycles <= sim.cycles <= 1.35 * est.cycles
    assert est.instructions == sim.instructions


def test_the_attention_cache_holds_only_what_the_program_does_not_read(block):
    # the cheap rung compiles a head once for configs that differ in what its program and
    # closed forms do not read (DRAM bandwidth, energy, scratchpad sizes once the context fits)
    a = cfg("bitserial")
    b = cfg("bitserial", out_kib=64, act_kib=128, weight_kib=256)
    b = b.replace(dram=dataclasses.replace(b.dram, gbps=51.2),
                  energy=dataclasses.replace(b.energy, mac_pj=1.0))
    shape, plans = _plans(block, a)
    fmt = attention.kv_format(a, shape, "int4")
    first = attention.estimate(a, shape, plans, 1000, fmt, block.checksum)["attention"]
    heads = [k for k in attention._estimates if k[0] == "attention"]
    cached = attention.estimate(b, shape, plans, 1000, fmt, block.checksum)["attention"]
    assert [k for k in attention._estimates if k[0] == "attention"] == heads   # not again
    fresh = attention.program_cost(b, attention.compile_part("attention", b, shape, plans,
                                                             1000, fmt).program)
    assert cached == attention._scaled(fresh, shape.kv_heads)
    assert cached.units["dram"] < first.units["dram"]       # at b's bandwidth


# -- infeasible points ----------------------------------------------------------------------
def test_a_context_beyond_the_scratchpads_is_infeasible_with_the_sizes_that_fit(block):
    wl = at(block, 16384, "int4")
    [res] = evaluate.evaluate("roofline", wl, [("k", cfg("bitserial"))])
    assert res["status"] == "infeasible"
    assert res["reason"].startswith("a 16384-token decode context must fit the scratchpads")
    # the reason names each buffer and the smallest size that fits: those sizes run it, one
    # KiB less in any of them does not
    need = dict(re.findall(r"`sram.(\w+)_kib` at least (\d+)", res["reason"]))
    assert set(need) == {"out", "scale", "act"}
    fits = {f"{b}_kib": int(v) for b, v in need.items()}
    [ok] = evaluate.evaluate("roofline", wl, [("k", cfg("bitserial", **fits))])
    assert ok["status"] == "ok" and ok["metrics"]["decode_kv_share"] > 0.5
    for b in fits:
        short = {**fits, b: fits[b] - 1}
        [no] = evaluate.evaluate("roofline", wl, [("k", cfg("bitserial", **short))])
        assert no["status"] == "infeasible", b


def test_a_kv_format_the_array_cannot_multiply_is_infeasible_not_a_crash(block):
    wl = at(block, 1024, "int8")
    lut, bs = evaluate.evaluate("sim", wl, [("a", cfg("lut")), ("b", cfg("bitserial"))])
    assert lut["status"] == "infeasible"
    assert lut["reason"] == ("KV format int8 must be a format the lut array serves (codes of "
                             "1, 2, 3, 4 bits, or fp16 on the vector unit), not 8-bit codes")
    assert bs["status"] == "ok"


# -- the decode metrics ----------------------------------------------------------------------
def test_decode_at_a_context_adds_the_kv_cache_to_time_energy_and_bytes(block):
    c = cfg("lut")
    plain = evaluate.roofline_point(c, block)
    ctx = evaluate.roofline_point(c, at(block, 1000, "fp16"))
    shape, _ = evaluate._block(block)
    fmt = kv.KVFormat("fp16")
    # an fp16 cache moves whole bursts: the attention reads K and V of the tile-padded context
    # and the cache write adds the new token's, every block
    tile = 64
    ncols = -(-1001 // tile) * tile
    per_block = kv.bytes_per_token(fmt, shape.kv_heads, shape.head_dim) * (ncols + 1)
    assert ctx["decode_kv_bytes_per_tok"] == per_block * 2
    assert ctx["decode_bytes_per_tok"] > plain["decode_bytes_per_tok"] + per_block * 2
    assert 0.5 < ctx["decode_kv_share"] < 1 and 0 < ctx["decode_attn_share"] < 1
    assert ctx["decode_tok_s"] < plain["decode_tok_s"]
    assert ctx["decode_j_per_tok"] > plain["decode_j_per_tok"]
    assert plain["decode_kv_share"] == plain["decode_attn_share"] == 0
    # prefill is the linear layers alone, as before
    assert ctx["prefill_tok_s"] == plain["prefill_tok_s"]


def test_the_sim_rung_runs_a_configs_contexts_in_one_task(tmp_path, qfiles):
    # the workloads of one .q file share a config's linear layers: one task, one worker
    s = sweep.load(write(tmp_path, SWEEP.format(q=qfiles[0])))
    pts = [p for p in s.points("v1") if p.workload.kv != "int8"]
    tasks = driver.sim_tasks(pts)
    assert len(tasks) == len({p.coords for p in pts}) == 6
    for task in tasks:
        assert len({(wl.checksum, p.coords) for wl, ps in task for p in ps}) == 1
        assert [wl.name for wl, _ in task] == [f"w-ctx{c}-{k}" for c in ("1k", "16k")
                                               for k in ("fp16", "int4")]


# -- the report -----------------------------------------------------------------------------
def test_the_report_answers_per_context_and_counts_the_infeasible(tmp_path, qfiles):
    s = sweep.load(write(tmp_path, SWEEP.format(q=qfiles[0])))
    with Store(tmp_path / "store.sqlite") as st:
        summary = driver.run(s, st, executor="serial")
        rows = st.rows()
        report.render(s, st, tmp_path / "rep")
    assert summary["sim_new"] > 0
    assert not [r for r in rows if r["status"] == "failed"]
    infeasible = [r for r in rows if r["status"] == "infeasible"]
    # 16K needs bigger scratchpads than any point has (3 kinds x 2 bandwidths x 3 formats),
    # and the LUT array cannot multiply int8 codes (2 bandwidths x 2 contexts; at 16K that
    # is the reason given, checked first)
    assert len(infeasible) == 18 + 2
    readme = (tmp_path / "rep" / "README.md").read_text()
    assert "**Which PE kind wins per context**" in readme
    assert "- w at a 1k context: decode tok/s per Mtr: " in readme
    assert "- w at a 16k context: no point can run it" in readme
    assert ("- 20 points infeasible (table \"Points that cannot run a context or KV format\"): "
            "10 a 16384-token context whose attention overflows the out, scale and act "
            "buffers; 6 a 16384-token context whose attention overflows the out buffer; 4 int8 "
            "KV, which the lut array cannot multiply.") in readme
    assert "Points that cannot run a context or KV format" in readme
    ctx_csv = (tmp_path / "rep" / "contexts.csv").read_text().splitlines()
    assert ctx_csv[0].startswith("weights,ctx,metric,winner,KV,")
    assert len(ctx_csv) == 1 + 2 * 2
