"""dse.sweep, dse.keys, dse.area: the sweep file's grid and validation, point keys, and the area
and SRAM-energy models against their hand-checked anchors."""

import textwrap

import pytest

from bitlut import cli
from bitlut.errors import UserError
from dse import area, fake, keys, sweep


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("dse")
    return fake.write_tiny_q(d / "tiny.q"), fake.write_tiny_q(d / "tiny3.q", bits=3)


BASE = """\
name: t
base: lut
workloads:
  - {{name: w, model: {q}, tokens: {{decode: 1, prefill: 16}}, blocks: 4}}
axes:
  pe.cols: [32, 64, 128]
  dram.gbps: [25.6, 51.2]
zip:
  - {{pe.kind: [lut, bitserial, mac], pe.group: [4, 4, 1], pe.rows: [2, 2, 32]}}
exclude:
  - {{pe.kind: mac, pe.cols: [64, 128]}}
objectives: {{decode_tok_s: max, area_mtr: min}}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_grid_is_the_product_of_axes_times_zip_minus_exclusions(tmp_path, tiny):
    s = sweep.load(write(tmp_path, BASE.format(q=tiny[0])))
    pts = s.points("v1")
    # 3 cols x 2 gbps x 3 zipped kinds = 18, minus mac at cols 64 and 128 (x 2 gbps) = 14
    assert len(pts) == 14
    kinds = {(p.values["pe.kind"], p.values["pe.group"], p.values["pe.rows"]) for p in pts}
    assert kinds == {("lut", 4, 2), ("bitserial", 4, 2), ("mac", 1, 32)}   # stepped together
    assert all(p.values["pe.cols"] == 32 for p in pts if p.values["pe.kind"] == "mac")
    assert all(p.invalid is None and p.config.pe.cols == p.values["pe.cols"] for p in pts)
    assert len({p.key for p in pts}) == 14


def test_invalid_points_are_kept_with_their_one_line_reason(tmp_path, tiny):
    text = BASE.format(q=tiny[0]).replace("pe.cols: [32, 64, 128]", "pe.cols: [32, 48]")
    pts = sweep.load(write(tmp_path, text)).points("v1")
    bad = [p for p in pts if p.values["pe.cols"] == 48]
    assert len(bad) == 6 and all(p.config is None for p in bad)     # 3 kinds x 2 gbps
    assert {p.invalid for p in bad} == {"`pe.cols` must be a power of two, not 48"}


@pytest.mark.parametrize("edit, message", [
    (("objectives:", "colour: red\nobjectives:"), r"`colour` is not a known field"),
    (("pe.cols: [32", "pe.colz: [32"), r"`axes.pe.colz` must name a config field"),
    (("dram.gbps: [25.6, 51.2]", "dram.gbps: [25.6, fast]"),
     r"`axes.dram.gbps\[1\]` must be a number \(the type of `dram.gbps`\), not 'fast'"),
    (("pe.group: [4, 4, 1]", "pe.group: [4, 4]"), r"`zip\[0\]` must be lists of one length"),
    (("{pe.kind: mac, pe.cols", "{clock_mhz: 500, pe.cols"),
     r"`exclude\[0\].clock_mhz` must be a swept axis"),
    (("decode_tok_s: max", "decode_tok_s: most"), r"`objectives.decode_tok_s` must be max or min"),
    (("decode_tok_s: max", "tok_s: max"), r"`objectives.tok_s` must be a metric"),
    (("objectives:", "constraints: {area_mtr: 'below 60'}\nobjectives:"),
     r"`constraints.area_mtr` must be a comparison such as '<= 60', not 'below 60'"),
    (("objectives:", "ladder: {eps: 0.1}\nobjectives:"), r"`ladder.eps` is not a known field"),
    (("blocks: 4", "blocks: 0"), r"`workloads\[0\].blocks` must be a positive integer, not 0"),
    (("decode: 1,", "decode: -1,"), r"`workloads\[0\].tokens.decode` must be a positive integer"),
    (("base: lut", "base: nosuch"), r"nosuch: config file must exist"),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, tiny, edit, message):
    text = BASE.format(q=tiny[0]).replace(*edit)
    assert text != BASE.format(q=tiny[0])
    with pytest.raises(UserError, match=message):
        sweep.load(write(tmp_path, text))


def test_a_missing_q_file_names_the_field(tmp_path):
    with pytest.raises(UserError, match=r"`workloads\[0\].model` must be an existing .q file, "
                       r"not 'gone.q'"):
        sweep.load(write(tmp_path, BASE.format(q="gone.q")))


def test_a_sweep_nested_thousands_deep_is_one_line_not_a_recursion_error(tmp_path):
    # the arch config loader's guard (issue 13) serves sweep files too: one YAML reader
    p = tmp_path / "deep.yaml"
    p.write_text("name: deep\nbase: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UserError, match=r"deep.yaml: file must nest at most 32 levels deep"):
        sweep.load(p)


def test_the_command_reports_a_bad_sweep_in_one_line_exit_2(tmp_path, tiny, capsys):
    p = write(tmp_path, BASE.format(q=tiny[0]).replace("pe.cols: [32", "pe.colz: [32"))
    assert cli.main(["dse", str(p), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"bitlut: error: {p}: `axes.pe.colz`")


def test_dry_run_counts_points(tmp_path, tiny, capsys):
    p = write(tmp_path, BASE.format(q=tiny[0]))
    assert cli.main(["dse", str(p), "--dry-run"]) == 0
    assert "14 points (1 workloads x 14 configs), 0 invalid" in capsys.readouterr().out


def _keys(path):
    return {frozenset(p.values.items()): p.key for p in sweep.load(path).points("v1")}


def test_keys_are_stable_under_key_order_and_integral_floats(tmp_path, tiny):
    a = _keys(write(tmp_path, BASE.format(q=tiny[0]), "a.yaml"))
    reordered = BASE.format(q=tiny[0]).replace(
        "  pe.cols: [32, 64, 128]\n  dram.gbps: [25.6, 51.2]\n",
        "  dram.gbps: [25.6, 51.2]\n  pe.cols: [32.0, 64, 128.0]\n").replace(
        "{pe.kind: [lut, bitserial, mac], pe.group: [4, 4, 1], pe.rows: [2, 2, 32]}",
        "{pe.rows: [2, 2, 32], pe.kind: [lut, bitserial, mac], pe.group: [4.0, 4, 1]}")
    b = _keys(write(tmp_path, reordered, "b.yaml"))
    assert a == b


def test_keys_change_with_an_axis_the_q_file_and_the_model_version(tmp_path, tiny):
    pts = sweep.load(write(tmp_path, BASE.format(q=tiny[0]))).points("v1")
    other_q = sweep.load(write(tmp_path, BASE.format(q=tiny[1]), "o.yaml")).points("v1")
    other_version = sweep.load(write(tmp_path, BASE.format(q=tiny[0]))).points("v2")
    assert len({p.key for p in pts}) == len(pts)          # every axis value its own key
    assert not {p.key for p in pts} & {p.key for p in other_q}
    assert not {p.key for p in pts} & {p.key for p in other_version}


def test_canonical_json_sorts_keys_and_merges_integral_floats():
    assert keys.dumps({"b": 64.0, "a": (1, 2.5)}) == '{"a":[1,2.5],"b":64}'
    assert keys.key({"x": 64}) == keys.key({"x": 64.0}) != keys.key({"x": 64.5})


def _config(**pe):
    from arch import config
    cfg = config.load("lut")
    return cfg.replace(pe=config.dataclasses.replace(cfg.pe, **pe))


def test_area_of_the_reference_lut_array_is_its_synthesized_transistor_count(monkeypatch):
    # docs/rtl.md: lut2x16_g4_w2a8 with int8 centroids (16-bit table entries) synthesizes to
    # 319,686 CMOS transistors; the uncalibrated model's anchor lane is that array's lane
    monkeypatch.setattr(area, "_fitted", {})             # no fitted kind: the anchors
    cfg = _config(rows=2, cols=16, centroid_bits=8)
    assert cfg.table_entry_bits == 16
    assert area.area(cfg)["area_pe_mtr"] == pytest.approx(0.319686)


def test_wider_table_entries_cost_more_lane_area():
    narrow, wide = _config(centroid_bits=8), _config(centroid_bits=16)
    assert (narrow.table_entry_bits, wide.table_entry_bits) == (16, 24)
    # 44 x 32 accumulator transistors plus the mux share scaled by 24/16 entry bits
    lane = 319_686 / 32
    expect = (44 * 32 + (lane - 44 * 32) * 24 / 16) / lane
    assert area.lane_scale(wide) == pytest.approx(expect)
    assert area.lane_scale(narrow) == pytest.approx(1.0)


def test_a_uniform_only_array_prices_its_narrower_table_entries():
    from arch import timing
    both, uniform = _config(centroid_bits=16), _config(centroid_bits=16, codebook=False)
    assert (both.table_entry_bits, uniform.table_entry_bits) == (24, 10)
    a, b = area.area(both), area.area(uniform)
    # the table unit's anchor (16-bit entries) scales with the entry width
    assert a["area_table_unit_mtr"] == pytest.approx(0.106872 * 24 / 16)
    assert b["area_table_unit_mtr"] == pytest.approx(0.106872 * 10 / 16)
    assert b["area_pe_mtr"] < a["area_pe_mtr"]               # narrower table multiplexers
    # one table entry built: the energy table's 16-bit add, scaled to the entry width
    pj = both.energy.table_entry_pj
    assert timing.event_pj(both, "table_entries") == pytest.approx(pj * 24 / 16)
    assert timing.event_pj(uniform, "table_entries") == pytest.approx(pj * 10 / 16)


def test_table_entry_width_and_formats_are_sweep_axes(tmp_path, tiny):
    text = BASE.format(q=tiny[0]).replace(
        "  pe.cols: [32, 64, 128]\n",
        "  pe.cols: [32]\n  pe.codebook: [true, false]\n  pe.table_entry_bits: [0, 12]\n")
    pts = [p for p in sweep.load(write(tmp_path, text)).points("v1")
           if p.values["pe.kind"] == "lut" and p.values["dram.gbps"] == 25.6]
    got = {(p.values["pe.codebook"], p.values["pe.table_entry_bits"]):
           p.invalid or p.config.table_entry_bits for p in pts}
    assert got == {(True, 0): 24, (False, 0): 10, (False, 12): 12,
                   (True, 12): "`pe.table_entry_bits` must be 0 (derived) or between 24 "
                               "(what uniform weights and int16 codebooks need at pe.group 4) "
                               "and 32, not 12"}


def test_sram_energy_per_byte_follows_horowitz_capacity_curve():
    from arch import config
    cfg = config.load("lut")
    at = {kib: area.sram_byte_pj(cfg.replace(sram=config.dataclasses.replace(
        cfg.sram, act_kib=kib)), "act") for kib in (8, 32, 1024)}
    # 10, 20 and 100 pJ per 64-bit read at 8 KB, 32 KB, 1 MB; the config's 2.5 pJ is 32 KiB
    assert at == pytest.approx({8: 1.25, 32: 2.5, 1024: 12.5})
