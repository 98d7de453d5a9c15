"""The architecture config: every shipped YAML loads, every invalid class is one clear line."""

import dataclasses

import pytest
import yaml

from arch import config
from arch.config import ConfigError


def raw(name="lut"):
    return yaml.safe_load((config.CONFIG_DIR / f"{name}.yaml").read_text())


@pytest.mark.parametrize("path", config.shipped(), ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    cfg = config.load(path)
    assert cfg.source == str(path)
    assert cfg.pe.kind in config.PE_KINDS


def test_shipped_set_and_tags():
    tags = {p.stem: config.load(p).tag for p in config.shipped()}
    assert {"lut", "bitserial", "mac"} <= set(tags)
    assert tags["lut"] == "lut2x64_g4_w4a8"
    assert tags["mac"] == "mac32x32_w8a8"
    assert len(set(tags.values())) == len(tags)


def test_mac_is_32x32_and_lut_is_elongated():
    mac, lut = config.load("mac"), config.load("lut")
    assert (mac.pe.rows, mac.pe.cols) == (32, 32)
    assert lut.pe.rows < lut.pe.cols


def test_decode_is_dram_bound_on_shipped_lut_and_bitserial():
    # DESIGN.md section 9: at M=1 the array must consume weights faster than DRAM delivers them.
    # Bit-plane serial PEs eat cols*group weight bits per cycle whatever the width.
    for name in ("lut", "bitserial"):
        cfg = config.load(name)
        array_bytes_per_cycle = cfg.pe.cols * cfg.pe.group / 8
        assert array_bytes_per_cycle > cfg.dram_bytes_per_cycle


def test_derived_values_follow_fields():
    cfg = config.load("lut")
    assert cfg.table_entries == 2 ** (cfg.pe.group - 1)
    sym_off = dataclasses.replace(cfg.pe, symmetric=False)
    assert cfg.replace(pe=sym_off).table_entries == 2 ** cfg.pe.group
    assert cfg.dram_bytes_per_cycle == pytest.approx(25.6)
    assert cfg.dram_latency_cycles == 100
    # table entries hold the largest codebook sum: two 2-bit columns share a 4-bit index,
    # with int16 centroids 2 * 127 * 32767 = 8322818 -> 23 bits + sign; int32 storage
    assert cfg.pe.centroid_bits == 16
    assert cfg.table_entry_bits == 24 and cfg.table_entry_bytes == 4
    # with int8 centroids 2 * 127 * 127 = 32258 -> 15 bits + sign: int16 storage
    cb8 = cfg.replace(pe=dataclasses.replace(cfg.pe, centroid_bits=8))
    assert cb8.table_entry_bits == 16 and cb8.table_entry_bytes == 2
    assert [cfg.codebook_group(b) for b in (2, 3, 4)] == [2, 1, 1]
    with pytest.raises(ConfigError, match=r"codebook code width must be between 2 and "
                       r"pe\.index_bits \(4\), not 1"):
        cfg.codebook_group(1)


def test_load_by_name_equals_load_by_path():
    assert config.load("lut") == config.load(config.CONFIG_DIR / "lut.yaml")


def edit(path, value, name="lut"):
    """The shipped config with one field set (value None deletes it)."""
    d = raw(name)
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return d


BAD = [
    # (field, value, message pattern)
    ("pe.group", 7, r"`pe\.group` must be one of 2, 3, 4, 5, not 7"),
    ("pe.kind", "systolic", r"`pe\.kind` must be one of lut, bitserial, mac, not 'systolic'"),
    ("pe.rows", 3, r"`pe\.rows` must be a power of two, not 3"),
    ("pe.cols", 0, r"`pe\.cols` must be a power of two, not 0"),
    ("pe.cols", "64", r"`pe\.cols` must be an integer, not '64'"),
    ("pe.symmetric", 1, r"`pe\.symmetric` must be true or false, not 1"),
    ("pe.weight_bits", [2, 9], r"`pe\.weight_bits\[1\]` must be one of 1, 2, .*, 8, not 9"),
    ("pe.weight_bits", [], r"`pe\.weight_bits` must be a non-empty list of integers"),
    ("pe.weight_bits", [2, 2], r"`pe\.weight_bits` must be a list without repeats"),
    ("pe.index_bits", 2, r"`pe\.index_bits` must be at least pe\.group \(4\), not 2"),
    ("pe.act_bits", 4, r"`pe\.act_bits` must be one of 8, not 4"),
    ("sram.act_kib", 0, r"`sram\.act_kib` must be positive, not 0"),
    ("sram.weight_kib", -8, r"`sram\.weight_kib` must be positive, not -8"),
    ("dram.gbps", 0, r"`dram\.gbps` must be positive, not 0\.0"),
    ("dram.burst_bytes", 48, r"`dram\.burst_bytes` must be a power of two, not 48"),
    ("dram.latency_ns", -1, r"`dram\.latency_ns` must be zero or positive, not -1\.0"),
    ("clock_mhz", "fast", r"`clock_mhz` must be a number, not 'fast'"),
    ("energy.dram_byte_pj", -1, r"`energy\.dram_byte_pj` must be zero or positive"),
    ("timing.pe_ii", 0, r"`timing\.pe_ii` must be positive, not 0"),
    ("queues.token_depth", 0, r"`queues\.token_depth` must be positive, not 0"),
    ("pe.bogus", 1, r"`pe\.bogus` is not a known field \(known: kind, rows"),
    ("extra", 1, r"`extra` is not a known field"),
    ("sram", None, r"`sram` is required but missing"),
    ("pe.kind", None, r"`pe\.kind` is required but missing"),
    ("dram", [1, 2], r"`dram` must be a mapping of fields"),
]


@pytest.mark.parametrize("field,value,pattern", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_invalid_field_is_one_line_naming_it(field, value, pattern):
    with pytest.raises(ConfigError, match=r"^x\.yaml: " + pattern) as e:
        config.from_dict(edit(field, value), source="x.yaml")
    assert "\n" not in str(e.value)


def test_tile_wider_than_buffer():
    # a 2x64 accumulator tile is 512 B; double-buffered it needs 1 KiB: 2x1024 needs 16 KiB
    d = edit("pe.cols", 1024)
    d["sram"]["acc_kib"] = 8
    with pytest.raises(ConfigError, match=r"`sram\.acc_kib` must be at least 16 to double-buffer "
                       r"one 2x1024 tile \(8192 bytes\), not 8"):
        config.from_dict(d, source="x.yaml")


def test_mac_must_be_square_and_group_one():
    with pytest.raises(ConfigError, match=r"`pe\.rows` must be equal to pe\.cols \(32\)"):
        config.from_dict(edit("pe.rows", 16, name="mac"), source="m.yaml")
    with pytest.raises(ConfigError, match=r"`pe\.group` must be one of 1, not 4"):
        config.from_dict(edit("pe.group", 4, name="mac"), source="m.yaml")


def test_lut_codebook_index_must_hold_widest_code():
    d = edit("pe.weight_bits", [2, 8])
    with pytest.raises(ConfigError, match=r"`pe\.weight_bits` must be at most pe\.index_bits"):
        config.from_dict(d, source="x.yaml")


def test_replace_revalidates():
    cfg = config.load("lut")
    with pytest.raises(ConfigError, match=r"`pe\.group` must be one of 2, 3, 4, 5, not 6"):
        cfg.replace(pe=dataclasses.replace(cfg.pe, group=6, index_bits=6))


def test_int_accepted_for_float_but_bool_is_not():
    cfg = config.from_dict(edit("clock_mhz", 500))
    assert cfg.clock_mhz == 500.0 and isinstance(cfg.clock_mhz, float)
    with pytest.raises(ConfigError, match=r"`clock_mhz` must be a number, not True"):
        config.from_dict(edit("clock_mhz", True))


def test_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file must exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pe: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: file must be valid YAML \(line \d+\)"):
        config.load(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin\.yaml: file must be"):
        config.load(binary)


# -- through the CLI, as a user meets it --------------------------------------------------------
def test_cli_check_ok(cli):
    r = cli("arch", "check", *config.shipped())
    assert r.returncode == 0, r.stderr
    assert "tag=lut2x64_g4_w4a8" in r.stdout and "tag=mac32x32_w8a8" in r.stdout


@pytest.mark.parametrize("field,value,pattern", BAD[:6] + [BAD[20], BAD[22]],
                         ids=[f"{b[0]}" for b in BAD[:6] + [BAD[20], BAD[22]]])
def test_cli_check_invalid_exit2_one_line(cli, tmp_path, field, value, pattern):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(edit(field, value)))
    r = cli("arch", "check", path)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert str(path) in lines[0]


def test_cli_debug_shows_traceback(cli, tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(edit("pe.group", 7)))
    r = cli("--debug", "arch", "check", path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_cli_unwritable_output_is_one_line(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli("isa-doc", "-o", blocker / "sub" / "isa.md")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "file" in r.stderr


def test_table_entry_width_follows_the_formats_the_array_serves():
    cfg = config.load("lut")
    assert cfg.pe.table_entry_bits == 0                     # derived: today's 24 bits
    assert cfg.table_entry_bits == cfg.table_entry_bits_needed == 24
    # uniform weights only: the largest |sum| of g = 4 int8 activations, 4 * 127 = 508 ->
    # 9 bits + sign, stored as int16 (half the int32 tables of int16 codebooks)
    uniform = cfg.replace(pe=dataclasses.replace(cfg.pe, codebook=False))
    assert (uniform.table_entry_bits, uniform.table_entry_bytes) == (10, 2)
    g5 = cfg.replace(pe=dataclasses.replace(cfg.pe, codebook=False, group=5, index_bits=5))
    assert g5.table_entry_bits == 11                        # 5 * 127 = 635 -> 10 bits + sign
    wide = cfg.replace(pe=dataclasses.replace(cfg.pe, table_entry_bits=28))
    assert (wide.table_entry_bits, wide.table_entry_bytes) == (28, 4)
    narrow = cfg.replace(pe=dataclasses.replace(uniform.pe, table_entry_bits=12))
    assert (narrow.table_entry_bits, narrow.table_entry_bytes) == (12, 2)


@pytest.mark.parametrize("value,codebook,rule", [
    (16, True, r"between 24 \(what uniform weights and int16 codebooks need at pe\.group 4\) "
               r"and 32"),
    (9, False, r"between 10 \(what uniform weights need at pe\.group 4\) and 32"),
    (33, True, r"between 24 .* and 32"),
])
def test_too_narrow_table_entries_are_one_line_naming_the_field(tmp_path, value, codebook,
                                                                 rule):
    raw = yaml.safe_load((config.CONFIG_DIR / "lut.yaml").read_text())
    raw["pe"].update(table_entry_bits=value, codebook=codebook)
    path = tmp_path / "narrow.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"narrow\.yaml: `pe\.table_entry_bits` must be 0 "
                       rf"\(derived\) or {rule}, not {value}$"):
        config.load(path)
