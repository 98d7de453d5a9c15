"""Hostile input (issue 13): one named regression test per traceback or wrongly accepted input that
a mutation campaign found, each asserting the README's promise (one line naming the file, field
and problem, exit 2; or, for inputs that are valid, exit 0 and the right result)."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import yaml

from arch import isa
from arch.isa import Insn, Opcode
from arch.program import Program, ProgramError
from quant import qformat
from tests.hostile import (
    assert_one_line,
    bitlut,
    config_dict,
    prog_metadata,
    q_parts,
    small_program,
    tiny_model,
    write_prog_raw,
    write_q,
)


@pytest.fixture
def qfile(tmp_path):
    return write_q(tmp_path / "m.q")


def _edit_q(path, edit):
    t, meta = q_parts(path)
    edit(t, meta)
    qformat.write_raw(path, t, meta)
    return path


# -- tracebacks -----------------------------------------------------------------------------------
def test_asm_of_a_file_that_is_not_utf8(tmp_path):
    src = tmp_path / "p.s"
    src.write_bytes(b"finish\n\xff\xfe\n")
    assert_one_line(bitlut("asm", src, "-o", tmp_path / "p.bin"),
                    r"p\.s: assembly must be UTF-8 text, not binary \(byte 7 is 0xff\)")


@pytest.mark.parametrize("symbols, message", [
    ("[1, 2]", r"`symbols` must be JSON name -> \[addr, shape, dtype\], not '\[1, 2\]'"),
    ("7", r"`symbols` must be JSON name -> \[addr, shape, dtype\], not '7'"),
    ('{"x": [0, 4, "int8"]}', r"symbol `x`: shape must be a list of integers"),
    ('{"x": [0, ["4"], "int8"]}', r"symbol `x`: shape must be a list of integers"),
    ('{"x": [0, [4], 5]}', r"symbol `x`: dtype must be one of int8, .*, not '5'"),
    ('{"x": [0, [4], "object"]}', r"symbol `x`: dtype must be one of .*, not 'object'"),
    ('{"x": ["0", [4], "int8"]}', r"symbol `x`: address must be an integer in \[0, 192\]"),
    ('{"x": [0.5, [4], "int8"]}', r"symbol `x`: address must be an integer"),
    ('{"x": [0, [4]]}', r"symbol `x` must be \[addr, shape, dtype\]"),
    # accepted before: a negative size, and one whose int64 product wraps around to 0
    ('{"x": [64, [-4], "int8"]}', r"symbol `x`: shape must be a list of integers"),
    ('{"x": [0, [4294967296, 4294967296], "int8"]}', r"symbol `x`: shape must be a list"),
    ('{"x": [0, [100, 100], "int8"]}', r"symbol `x` must lie inside the DRAM image \(192 "
                                       r"bytes\), not at 0\+10000"),
])
def test_program_symbols_of_the_wrong_type_or_size(tmp_path, symbols, message):
    prog = small_program()
    path = write_prog_raw(tmp_path / "p.prog", isa.to_bytes(prog.words), prog.dram,
                          prog_metadata(prog, symbols=symbols))
    with pytest.raises(ProgramError, match=message):
        Program.load(path)
    assert_one_line(bitlut("exec", path, "--arch", "lut"), message)


@pytest.mark.parametrize("edit, message", [
    (lambda t, m: m.update(quantizer="rtn"),
     r"metadata `quantizer` must be a JSON object, not 'rtn'"),
    (lambda t, m: m.update(quantizer=[1]), r"metadata `quantizer` must be a JSON object"),
    (lambda t, m: m.update(quantizer=None), r"metadata `quantizer` must be a JSON object"),
    (lambda t, m: m["layers"][0].update(shape=[True, 16]),
     r"layer `c` shape must be \[N, K\] of integers from 1 to 2147483647, not \[True, 16\]"),
    (lambda t, m: m["layers"][0].update(shape=[2**70, 16]),
     r"layer `c` shape must be \[N, K\] of integers"),
    (lambda t, m: t.update({"c.outlier_vals": np.array(1.0, np.float16)}),
     r"tensor `c\.outlier_vals` must be 1-D, not 0-D"),
    (lambda t, m: m["layers"][0].update(name="c\0x"),
     r"layer `name` must be printable \(no control characters or NUL\)"),
    (lambda t, m: m["layers"][1].update(group_size=True),
     r"layer `u` group_size must be a positive integer"),
])
def test_q_metadata_of_the_wrong_type(qfile, edit, message):
    _edit_q(qfile, edit)
    assert_one_line(bitlut("inspect", qfile), message)


def test_q_metadata_that_is_not_an_object(qfile):
    t, _ = q_parts(qfile)
    from safetensors.numpy import save_file
    save_file(t, str(qfile), metadata={qformat.META_KEY: "[1, 2, 3]"})
    assert_one_line(bitlut("inspect", qfile), r"`bitlut_q` metadata must be a JSON object, "
                                              r"not list")


def test_negative_outlier_row_of_a_wide_layer(tmp_path):
    # N > 65536 stores outlier rows as int32, whose sign the upper-bound check did not see
    from quant.layer import QModel
    from quant.random_layer import uniform_layer
    layer = uniform_layer(0, 65537, 4, 2, group_size=4, name="wide", outliers=2)
    path = write_q(tmp_path / "w.q", QModel("w", {}, {"wide": layer}))

    def negative(t, m):
        rows = t["wide.outlier_rows"].copy()
        assert rows.dtype == np.int32
        rows[0] = -5
        t["wide.outlier_rows"] = rows
    _edit_q(path, negative)
    for cmd in (("inspect", path), ("run", path, "--arch", "bitserial")):
        assert_one_line(bitlut(*cmd), r"tensor `wide\.outlier_rows` values must be >= 0, not -5")


def test_config_nested_thousands_deep(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("pe: " + "[" * 5000 + "]" * 5000 + "\n")
    assert_one_line(bitlut("arch", "check", p), r"deep\.yaml: file must nest at most 32 levels")


FLOAT_FIELDS = ["clock_mhz", "dram.gbps", "dram.latency_ns", "energy.lookup_pj",
                "energy.mac_pj", "energy.static_mw"]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_in_config_floats(tmp_path, field, value):
    raw = config_dict()
    section, _, name = field.rpartition(".")
    (raw[section] if section else raw)[name] = "X"
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw).replace("X", value))
    pattern = rf"c\.yaml: `{field}` must be a finite number, not -?(nan|inf)"
    assert_one_line(bitlut("arch", "check", p), pattern)
    assert_one_line(bitlut("sim", "--gemm", "1,64,64", "--arch", p), pattern)


def test_scratchpad_larger_than_the_address_fields_reach(tmp_path):
    raw = config_dict()
    raw["sram"]["act_kib"] = 100_000_000
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    # the 20-bit scratchpad address fields reach 1 MiB
    assert_one_line(bitlut("arch", "check", p), r"`sram\.act_kib` must be at most 1024, "
                                                r"not 100000000")
    raw["sram"]["act_kib"] = 1024
    p.write_text(yaml.safe_dump(raw))
    assert bitlut("arch", "check", p).ok


@pytest.mark.parametrize("bits", ["-1", "0", "9", "16", "255"])
def test_wbits_out_of_range_is_refused_before_the_layer_is_built(bits):
    assert_one_line(bitlut("sim", "--gemm", "2,64,64", "--wbits", bits),
                    rf"argument --wbits: must be from 1 to 8, not {bits}")


@pytest.mark.parametrize("shape, message", [
    ("1000000,64,64", r"must be from 1 to 131072, not 1000000"),
    ("65536,65536,64", r"argument --gemm: M\*K must be at most 268435456, not 4294967296"),
    ("1,131072,131072", r"K\*N must be at most"),
])
def test_huge_gemm_shapes_are_refused(shape, message):
    assert_one_line(bitlut("sim", "--gemm", shape), message)


@pytest.mark.parametrize("cmd", ["sim", "run"])
def test_negative_seed(qfile, cmd):
    assert_one_line(bitlut(cmd, qfile, "--seed", "-1"),
                    r"argument --seed: must be from 0 to 4294967295, not -1")


# -- accepted when it should not be ---------------------------------------------------------------
@pytest.mark.parametrize("tokens", ["-1", "0", "1,-3"])
def test_roofline_token_counts_must_be_positive(qfile, tokens):
    assert_one_line(bitlut("roofline", qfile, "--tokens", tokens),
                    r"argument --tokens: must be from 1 to 65536")


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                           (".pdf", b"%PDF")])
def test_plot_format_follows_the_suffix(qfile, tmp_path, suffix, magic):
    out = tmp_path / f"r{suffix}"
    r = bitlut("roofline", qfile, "--plot", out)
    assert r.ok, r.describe()
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["r.jpg", "r", "r.PNG.bak"])
def test_plot_formats_matplotlib_cannot_write_are_refused(qfile, tmp_path, name):
    assert_one_line(bitlut("roofline", qfile, "--plot", tmp_path / name),
                    r"argument --plot: .*figure file suffix must be one of \.png, \.svg, \.pdf")
    assert not (tmp_path / name).exists()


def test_layer_names_map_to_distinct_safe_files(tmp_path):
    from compiler.cli import program_file_name
    model = tiny_model()
    a, b = model.layers["c"], model.layers["u"]
    a.name, b.name = "a_b", "a/b"
    model.layers = {"a_b": a, "a/b": b}
    q = write_q(tmp_path / "m.q", model)
    out = tmp_path / "prog"
    r = bitlut("compile", q, "-o", out)
    assert r.ok, r.describe()
    assert sorted(p.name for p in out.iterdir()) == ["a%2Fb.prog", "a_b.prog", "report.json"]
    assert Program.load(out / "a%2Fb.prog").meta["layer"] == "a/b"
    assert Program.load(out / "a_b.prog").meta["layer"] == "a_b"
    # nothing climbs out of the folder, nothing is hidden
    assert program_file_name("../x") == "%2E.%2Fx.prog"
    assert program_file_name(".x") == "%2Ex.prog"


@pytest.mark.parametrize("value", ["1_000", "+4", "٤", " 4", "4 ", "0x10", "04", "1e3", ""])
def test_integers_are_strict_ascii_decimal(qfile, value):
    assert_one_line(bitlut("sim", "--gemm", f"{value},64,64"),
                    r"argument --gemm: must be a decimal integer from 1 to 131072")
    assert_one_line(bitlut("sim", qfile, "--tokens", value),
                    r"argument --tokens: must be a decimal integer from 1 to 65536")
    assert_one_line(bitlut("compile", qfile, "--tokens", value, "-o", "x"),
                    r"argument --tokens: must be a decimal integer")


def test_empty_output_paths_are_refused(qfile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line(bitlut("compile", qfile, "-o", ""),
                    r"argument -o/--output: must be a folder name")
    assert_one_line(bitlut("run", qfile, "--json", ""),
                    r"argument --json: output path must be a file name, not ''")
    assert_one_line(bitlut("sim", "--gemm", "1,64,64", "--json", ""),
                    r"argument --json: output path must be a file name, not ''")
    assert_one_line(bitlut("sim", "--gemm", "1,64,64", "--trace", ""),
                    r"argument --trace: output path must be a file name, not ''")
    assert_one_line(bitlut("asm", qfile, "-o", ""),
                    r"argument -o/--output: output path must be a file")
    assert sorted(os.listdir(tmp_path)) == ["m.q"]


def test_output_path_errors_name_the_users_path(tmp_path):
    src = tmp_path / "p.s"
    src.write_text("finish\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "sub" / "p.bin"          # a folder inside a file cannot be made
    r = bitlut("asm", src, "-o", target)
    assert_one_line(r, rf"{target}: output file must be in a writable folder")
    assert ".tmp" not in r.err
    folder = tmp_path / "d"
    folder.mkdir()
    assert_one_line(bitlut("asm", src, "-o", folder), rf"{folder}: output path must be a file, "
                                                      r"not a folder")


def test_a_folder_given_as_an_input_file(tmp_path):
    assert_one_line(bitlut("inspect", tmp_path), rf"{tmp_path}: \.q file must be a file, not "
                                                 r"a folder")
    assert_one_line(bitlut("arch", "check", tmp_path), r"config file must be a file, not a")
    assert_one_line(bitlut("exec", tmp_path), r"program file must be a file, not a folder")
    assert_one_line(bitlut("disasm", tmp_path), r"file must be a file, not a folder")


# -- rejected when it should not be ---------------------------------------------------------------
def test_disasm_of_raw_words_whose_ninth_byte_is_a_brace(tmp_path):
    # byte 8 of a load word is bits 25..31 of its `dram` field and bit 0 of `rows`
    dram = (ord("{") & 0x7F) << 25
    word = isa.encode(Insn(Opcode.LOAD, dict(buf=isa.Buffer.ACT, sram=0, dram=dram, rows=2,
                                             row_bytes=1, dram_stride=1)))
    blob = isa.to_bytes([word, isa.encode(Insn(Opcode.FINISH))])
    assert blob[8:9] == b"{"
    path = tmp_path / "p.bin"
    path.write_bytes(blob)
    r = bitlut("disasm", path)
    assert r.ok, r.describe()
    assert r.out.splitlines() == [f"load buf=act sram=0x0 dram={dram:#x} rows=2 row_bytes=1 "
                                  "dram_stride=1", "finish"]


# -- one rule for the executor and the cycle model ------------------------------------------------
@pytest.mark.parametrize("last, message", [
    (None, r"program must end with finish, not run off the end after insn 2"),
    (Insn(Opcode.FINISH, {}, 1 << isa.Unit.VECTOR.value),
     r"insn 3 \(finish\): `wait` and `signal` must be none, not wait=0x8 signal=0x0"),
    (Insn(Opcode.FINISH, {}, 0, 1 << isa.Unit.LOAD.value),
     r"insn 3 \(finish\): `wait` and `signal` must be none, not wait=0x0 signal=0x1"),
])
def test_executor_and_cycle_model_reject_the_same_programs(tmp_path, last, message):
    from arch import config
    from sim.cycle import simulate
    from sim.executor import Executor
    cfg = config.load("lut")
    prog = small_program()
    prog.words = prog.words[:3] + ([isa.encode(last)] if last else [])
    with pytest.raises(ProgramError, match=message):
        Executor(cfg, prog).run()
    with pytest.raises(ProgramError, match=message):
        simulate(cfg, prog)
    prog.save(tmp_path / "p.prog")
    assert_one_line(bitlut("exec", tmp_path / "p.prog", "--arch", "lut"), message)


# -- determinism and file modes -------------------------------------------------------------------
def test_compile_twice_gives_byte_identical_programs(qfile, tmp_path):
    # the safetensors writer orders its metadata map by hash, which differs between processes
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        r = subprocess.run([sys.executable, "-m", "bitlut", "compile", str(qfile), "-o",
                            str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]
    assert set(outs[0]) == {"c.prog", "u.prog", "report.json"}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    from bitlut.fileio import AtomicPath, atomic_write
    old = os.umask(umask)
    try:
        a = atomic_write(tmp_path / "a.txt", "x")
        with AtomicPath(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
        small_program().save(tmp_path / "c.prog")
    finally:
        os.umask(old)
    for p in (a, tmp_path / "b.bin", tmp_path / "c.prog"):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_sim_json_is_written_whole(tmp_path):
    out = tmp_path / "s.json"
    r = bitlut("sim", "--gemm", "1,64,64", "--json", out)
    assert r.ok, r.describe()
    assert json.loads(out.read_text())["phases"][0]["tokens"] == 1


# -- programs whose result depends on timing ------------------------------------------------------
def _racy(kind):
    """small_program() with one change that leaves two units unordered on the same bytes."""
    prog = small_program()
    insns = prog.insns()
    V = 1 << isa.Unit.VECTOR.value
    if kind == "write then read":        # a second vsum rewrites the sums the store may read
        insns.insert(2, Insn(Opcode.VSUM, dict(rows=1, cols=1, act=0, sums=0)))
    elif kind == "read then write":      # a second load overwrites what the vsum may still read
        insns.insert(2, Insn(Opcode.LOAD, dict(buf=isa.Buffer.ACT, sram=0, dram=64, rows=1,
                                               row_bytes=64, dram_stride=64)))
    else:                                # DRAM: a load of the bytes the store writes
        insns.insert(3, Insn(Opcode.LOAD, dict(buf=isa.Buffer.ACT, sram=64, dram=128, rows=1,
                                               row_bytes=4, dram_stride=4)))
    assert all(i.wait != V or i.op is Opcode.STORE for i in insns)
    prog.words = [isa.encode(i) for i in insns]
    return prog


@pytest.mark.parametrize("kind, message", [
    ("write then read", r"insns 2 \(vsum\) and 3 \(store\) must be ordered by a chain of "
                        r"dependency tokens, not race on table byte 0x0 \(insn 2 \(vsum\) writes "
                        r"it, insn 3 \(store\) reads it\): the result would depend on timing"),
    ("read then write", r"insns 1 \(vsum\) and 2 \(load\) must be ordered by a chain of "
                        r"dependency tokens, not race on act byte 0x0 "),
    ("dram", r"insns 2 \(store\) and 3 \(load\) must be ordered by a chain of dependency "
             r"tokens, not race on dram byte 0x80 "),
])
def test_exec_refuses_a_racy_program(tmp_path, kind, message):
    # found by the fuzz suite: the executor and the cycle model computed different outputs for
    # such a program, and both were right for their schedule
    from arch import config
    from sim.executor import Executor
    prog = _racy(kind)
    Executor(config.load("lut"), prog).run()          # without the check it runs
    prog.save(tmp_path / "p.prog")
    assert_one_line(bitlut("exec", tmp_path / "p.prog", "--arch", "lut"), message)


@pytest.mark.parametrize("arch", ["lut", "bitserial", "mac"])
def test_compiled_programs_are_race_free(arch):
    from arch import config
    from compiler.lower import lower
    from quant.random_layer import codebook_layer, uniform_layer
    from sim.executor import Executor
    cfg = config.load(arch)
    rng = np.random.default_rng(1)
    for layer in (codebook_layer(rng, 300, 512, (2, 3, 4), name="a", outliers=20),
                  uniform_layer(rng, 200, 300, 2, group_size=128, name="b", outliers=5)):
        for m in (1, 9):
            Executor(cfg, lower(layer, cfg, m).program, races=True).run()


def test_a_failed_write_names_the_users_path_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from bitlut.errors import UserError
    from bitlut.fileio import atomic_write

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=rf"^{tmp_path}/r\.json: output file must be writable, "
                                        r"not No space left on device$"):
        atomic_write(tmp_path / "r.json", "{}")
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"p\.prog: output file must be writable"):
        from bitlut.fileio import AtomicPath
        with AtomicPath(tmp_path / "p.prog") as tmp:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1_0", "٣", "0x3", "9", "0.5"])
def test_quantize_bits_must_be_a_finite_number_in_range(tmp_path, value):
    # `--method rtn --bits inf` ended in an OverflowError traceback
    assert_one_line(bitlut("quantize", "--synthetic", "llama-tiny", "--method", "rtn", "--bits",
                           value, "-o", tmp_path / "t.q"), r"argument --bits: ")
    from bitlut.cli import build_parser
    args = build_parser().parse_args(["quantize", "--synthetic", "llama-tiny", "--bits", "2.25",
                                      "-o", "t.q", "--outlier-ratio", "0.01,5e-3"])
    assert args.bits == 2.25 and args.outlier_ratio == "0.01,5e-3"


@pytest.mark.parametrize("value", ["1_0", "+1", "٣", "01", "0b1"])
def test_assembly_integers_are_strict(tmp_path, value):
    # int(text, 0) took `1_0` as 10 and `+1` as 1 (and Python's int() takes non-ASCII digits)
    src = tmp_path / "p.s"
    src.write_text(f"vsum rows={value} cols=64 act=0 sums=0\nfinish\n")
    r = bitlut("asm", src, "-o", tmp_path / "p.bin")
    assert_one_line(r, r"p\.s:1: insn 0 \(vsum\): `rows` must be an integer, not ")
    src.write_text("vsum rows=0x2 cols=64 act=0 sums=0\nfinish\n")
    assert bitlut("asm", src, "-o", tmp_path / "p.bin").ok
