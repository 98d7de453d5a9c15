"""Fuzz suite for hostile input (issue 13): property-based generators for every surface where input
enters (`.q` containers and metadata, configs, assembly text, instruction words, program files,
CLI integers and paths), each case run through the CLI's entry point in-process.

Properties, for every case: the outcome is exit 0 or a one-line exit-2 error (no traceback, no
hang), and an input that the documented format makes invalid is never exit 0 (each generator
knows, independently of the code under test, when its mutation breaks a documented rule). Where
inputs are accepted, what they produce is checked too: assembly and words round-trip, and the
functional executor and the cycle model agree on every program `bitlut exec` accepts.

Tiers: `make test` runs about 2,000 cases (`CI` below); `make test-slow` runs ten times as many.
The seed is printed in the summary (with the counts per surface); set BITLUT_FUZZ_SEED to
reproduce a run.
"""

import json
import math
import os
import random
import signal
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

from arch import isa
from arch.isa import Insn, Opcode
from quant import qformat
from tests.hostile import (
    bitlut,
    config_dict,
    prog_metadata,
    q_parts,
    small_program,
    write_prog_raw,
    write_q,
)

SEED = int(os.environ.get("BITLUT_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
CI = {"q": 300, "config": 450, "asm": 350, "words": 350, "prog": 120, "ints": 400, "paths": 80}
SLOW_FACTOR = 10
HANG_S = 30                       # one case taking longer than this counts as a hang
STATS = {}                        # surface -> Counter; printed by tests/conftest.py
TMP = Path(tempfile.mkdtemp(prefix="bitlut-fuzz-"))


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_case(surface, argv, invalid):
    """Run `bitlut ARGV`, count the outcome, and assert the two properties. `invalid`: the
    generator's own verdict that the input breaks a documented rule (None: no verdict)."""
    stats = STATS.setdefault(surface, Counter())
    stats["cases"] += 1
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        outcome = bitlut(*argv)
    except Hang:
        stats["hangs"] += 1
        raise AssertionError(f"seed {SEED}: {surface}: hang on {argv}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if outcome.crash or not (outcome.ok or outcome.one_line_error):
        stats["crashes"] += 1
        raise AssertionError(f"seed {SEED}: {surface}: {argv}: {outcome.describe()}"
                             f"{_inputs(argv)}")
    if invalid and outcome.code == 0:
        stats["accepted_invalid"] += 1
        raise AssertionError(f"seed {SEED}: {surface}: invalid input accepted: {argv}"
                             f"{_inputs(argv)}")
    stats["ok" if outcome.code == 0 else "rejected"] += 1
    return outcome


def _inputs(argv):
    """The case's input files (they are overwritten by the next case), for the failure message;
    a program file as its disassembly and symbols."""
    parts = []
    for a in argv:
        p = Path(a) if isinstance(a, Path) else None
        if p is None or not p.is_file():
            continue
        if p.suffix == ".prog":
            from arch.program import Program
            try:
                prog = Program.load(p)
                parts.append(isa.disassemble(prog.words) + f"symbols {prog.symbols}")
                continue
            except Exception as e:      # noqa: BLE001 - show the bytes instead
                parts.append(f"({e})")
        parts.append(repr(p.read_bytes()[:600]))
    return "".join(f"\n--- {text}" for text in parts)


def tiers(name):
    """The CI tier (make test) and the slow tier (make test-slow) of surface `name`."""
    return pytest.mark.parametrize("examples", [
        pytest.param(CI[name], id="ci"),
        pytest.param(CI[name] * SLOW_FACTOR, id="slow", marks=pytest.mark.slow)])


def fuzz(examples, strategy, body):
    """Run `body(drawn)` on `examples` cases drawn from `strategy`, seeded with SEED."""
    @hseed(SEED)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(drawn):
        body(drawn)
    case()


# -- values a hostile user types ------------------------------------------------------------------
HOSTILE_INTS = st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63, 2**64, 2**70, 10**30])
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), HOSTILE_INTS, st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "\0", "a\0b", "../x", "a/b", "\u0664", " 4"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


# -- `.q` files -----------------------------------------------------------------------------------
_Q = {}


def _q_base():
    if not _Q:
        path = write_q(TMP / "base.q")
        _Q["bytes"] = path.read_bytes()
        _Q["tensors"], _Q["meta"] = q_parts(path)
    return _Q


# metadata keys whose value the file's tensors pin: any other value is invalid
Q_PINNED = {"format", "version", "layers"}
Q_LAYER_PINNED = {"name", "shape", "kind", "n_outliers"}


@st.composite
def q_cases(draw):
    base = _q_base()
    tensors = {k: v.copy() for k, v in base["tensors"].items()}
    meta = json.loads(json.dumps(base["meta"]))
    kind = draw(st.sampled_from(["meta", "layer_meta", "tensor_dtype", "tensor_shape",
                                 "tensor_value", "extra", "drop", "flip", "truncate"]))
    invalid = None
    if kind == "meta":
        key = draw(st.sampled_from(sorted(meta) + ["quantizer", "model", "zzz"]))
        value = draw(JSON_VALUES)
        old = meta.get(key, object())
        meta[key] = value
        invalid = ((key in Q_PINNED and value != old)
                   or (key == "quantizer" and not isinstance(value, dict))
                   or (key == "model" and not isinstance(value, str)))
    elif kind == "layer_meta":
        i = draw(st.integers(0, len(meta["layers"]) - 1))
        key = draw(st.sampled_from(sorted(meta["layers"][i]) + ["zzz"]))
        value = draw(st.one_of(JSON_VALUES, st.lists(HOSTILE_INTS, min_size=2, max_size=2)))
        old = meta["layers"][i].get(key, object())
        meta["layers"][i][key] = value
        # an equal value of another type (True for 1, 2.0 for 2) is still the wrong type
        invalid = key in Q_LAYER_PINNED and (value != old or type(value) is not type(old))
    elif kind in ("tensor_dtype", "tensor_shape", "tensor_value", "drop"):
        name = draw(st.sampled_from(sorted(tensors)))
        a = tensors[name]
        if kind == "tensor_dtype":
            dtype = draw(st.sampled_from(["uint8", "int8", "int16", "uint16", "int32",
                                          "int64", "float16", "float32"]))
            invalid = np.dtype(dtype) != a.dtype
            tensors[name] = a.astype(dtype)
        elif kind == "tensor_shape":
            shape = draw(st.sampled_from([(), (0,), (a.size + 1,), (1, a.size)]))
            tensors[name] = np.resize(a, shape)
            invalid = tuple(shape) != a.shape
        elif kind == "tensor_value" and a.size:
            flat = a.reshape(-1)
            j = draw(st.integers(0, a.size - 1))
            raw = draw(st.integers(0, 255))
            flat.view(np.uint8)[j * a.itemsize % flat.view(np.uint8).size] = raw
        elif kind == "drop":
            del tensors[name]
            invalid = True
    elif kind == "extra":
        tensors[draw(st.sampled_from(["stray", "c.extra", "u.codes2"]))] = np.zeros(2, np.uint8)
        invalid = True
    path = TMP / "case.q"
    if kind in ("flip", "truncate"):
        data = bytearray(base["bytes"])
        hlen = int.from_bytes(data[:8], "little")
        if kind == "flip":        # inside the tensor data, which the checksum covers
            j = draw(st.integers(8 + hlen, len(data) - 1))
            data[j] ^= draw(st.integers(1, 255))
        else:
            data = data[:draw(st.integers(0, len(data) - 1))]
        path.write_bytes(bytes(data))
        return path, True
    qformat.write_raw(path, tensors, meta)       # re-signed: the deeper checks are reached
    return path, invalid


@tiers("q")
def test_fuzz_q_files(examples):
    fuzz(examples, q_cases(), lambda c: run_case("q", ["inspect", c[0]], c[1]))


# -- configs --------------------------------------------------------------------------------------
_CFG = config_dict()
_CFG_FIELDS = [(s, k) for s, v in _CFG.items() if isinstance(v, dict) for k in v] + \
              [(None, k) for k, v in _CFG.items() if not isinstance(v, dict)]


def _float_field(key):
    """Config fields are named by their unit (docs): these hold numbers, the others integers."""
    return key.endswith(("_ns", "_mhz", "_pj", "_mw")) or key == "gbps"


REQUIRED = {(None, "clock_mhz"), ("pe", "kind"), ("pe", "rows"), ("pe", "cols"),
            ("pe", "group"), ("dram", "gbps"), ("dram", "latency_ns"), ("dram", "burst_bytes")}


@st.composite
def config_cases(draw):
    raw = json.loads(json.dumps(_CFG))
    kind = draw(st.sampled_from(["value", "number", "unknown", "delete", "text", "deep"]))
    section, key = draw(st.sampled_from(_CFG_FIELDS))
    where = raw[section] if section else raw
    old = where[key]
    invalid = None
    if kind == "value":
        value = draw(JSON_VALUES)
        where[key] = value
        # the documented types: a number field holds a number, a list a list, a bool a bool
        wrong_type = type(value) is not type(old) and not (
            _float_field(key) and type(value) in (int, float))
        invalid = wrong_type or (isinstance(value, float) and not math.isfinite(value))
    elif kind == "number":
        value = draw(st.one_of(HOSTILE_INTS, st.floats(), st.integers(-100, -1)))
        where[key] = value
        # every number in a config is a size, a count, a time or an energy: none is negative
        bad_type = isinstance(old, (bool, list, str)) or (
            not _float_field(key) and type(value) is float)
        invalid = bad_type or not math.isfinite(value) or value < 0
    elif kind == "unknown":
        where[draw(st.sampled_from(["zzz", "kib", "Rows", ""]))] = 1
        invalid = True
    elif kind == "delete":
        del where[key]
        # fields every config must state (docs: the PE array, the clock, the DRAM)
        invalid = (section, key) in REQUIRED or None
    path = TMP / "case.yaml"
    if kind == "text":
        path.write_bytes(draw(st.binary(max_size=200)) if draw(st.booleans()) else
                         draw(st.text(max_size=200)).encode())
    elif kind == "deep":
        depth = draw(st.integers(30, 20000))
        path.write_text("pe: " + draw(st.sampled_from(["[", "{a: "])) * depth + "\n")
        invalid = True
    else:
        path.write_text(yaml.safe_dump(raw))
    return path, invalid


@tiers("config")
def test_fuzz_configs(examples):
    fuzz(examples, config_cases(), lambda c: run_case("config", ["arch", "check", c[0]], c[1]))


# -- assembly text --------------------------------------------------------------------------------
@st.composite
def asm_line(draw):
    """(line, invalid): one instruction with each field in its range or not."""
    op = draw(st.sampled_from(list(Opcode)))
    parts, invalid = [op.name.lower()], False
    for f in isa.FORMATS[op]:
        if draw(st.integers(0, 30)) == 0:
            invalid = True                       # a missing field
            continue
        if f.enum is not None:
            names = [m.name.lower() for m in f.enum]
            text = draw(st.sampled_from(names + ["bogus"]))
            invalid |= text not in names
        else:
            lo = 1 if f.kind == "count" else 0
            hi = 1 if f.kind == "flag" else (1 << f.width) - 1
            v = draw(st.one_of(st.integers(lo, hi), st.integers(-5, hi + 5),
                               st.sampled_from([hi + 1, 2**64, -1])))
            invalid |= not lo <= v <= hi
            text = draw(st.sampled_from([str(v), hex(v) if v >= 0 else str(v)]))
        parts.append(f"{f.name}={text}")
    unit = isa.UNIT_OF[op]
    for key in ("wait", "signal"):
        if draw(st.booleans()):
            units = draw(st.lists(st.sampled_from(list(isa.Unit)), min_size=1, max_size=3,
                                  unique=True))
            invalid |= unit in units
            parts.append(f"{key}={','.join(u.name.lower() for u in units)}")
    return " ".join([parts[0]] + list(draw(st.permutations(parts[1:])))), invalid


@st.composite
def asm_cases(draw):
    lines = draw(st.lists(st.one_of(asm_line(), st.tuples(st.text(max_size=30), st.none())),
                          min_size=1, max_size=6))
    text = "\n".join(line for line, _ in lines) + "\n"
    invalid = any(v for _, v in lines)
    path = TMP / "case.s"
    garbage = draw(st.binary(max_size=4)) if draw(st.integers(0, 5)) == 0 else b""
    path.write_bytes(text.encode() + garbage)
    return path, invalid


def _asm_case(c):
    out = TMP / "case.bin"
    r = run_case("asm", ["asm", c[0], "-o", out], c[1])
    if r.code == 0:                  # the words disassemble and assemble back to the same bytes
        d = bitlut("disasm", out)
        assert d.ok, d.describe()
        again = TMP / "again.s"
        again.write_text(d.out)
        assert isa.to_bytes(isa.assemble(d.out)) == out.read_bytes()


@tiers("asm")
def test_fuzz_assembly(examples):
    fuzz(examples, asm_cases(), _asm_case)


# -- instruction words ----------------------------------------------------------------------------
LEGAL = [isa.encode(i) for i in small_program().insns()]


@st.composite
def word_cases(draw):
    words = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            words.append(draw(st.integers(0, 2**128 - 1)))
        else:
            w = draw(st.sampled_from(LEGAL))
            for bit in draw(st.lists(st.integers(0, 127), min_size=1, max_size=3)):
                w ^= 1 << bit
            words.append(w)
    blob = isa.to_bytes(words)
    if draw(st.integers(0, 10)) == 0:
        blob = blob[:-draw(st.integers(1, 15))]      # not a whole number of words
    path = TMP / "case.bin"
    path.write_bytes(blob)
    return path, words, len(blob) % isa.WORD_BYTES != 0


def _words_case(c):
    path, words, invalid = c
    r = run_case("words", ["disasm", path], invalid)
    if r.code == 0:            # nothing decoded silently: every accepted word re-encodes exactly
        for i, w in enumerate(words):
            assert isa.encode(isa.decode(w, i)) == w, f"seed {SEED}: word {i} {w:#x}"


@tiers("words")
def test_fuzz_instruction_words(examples):
    fuzz(examples, word_cases(), _words_case)


# -- program files --------------------------------------------------------------------------------
def _legal_insn(draw):
    op = draw(st.sampled_from([o for o in Opcode if o is not Opcode.FINISH]))
    unit = isa.UNIT_OF[op]
    own = 0 if unit is None else 1 << unit.value
    args = {}
    for f in isa.FORMATS[op]:
        if f.enum is not None:
            args[f.name] = draw(st.sampled_from(list(f.enum)))
        else:
            lo = 1 if f.kind == "count" else 0
            hi = 1 if f.kind == "flag" else min((1 << f.width) - 1, 256)
            args[f.name] = draw(st.integers(lo, hi))
    mask = st.integers(0, (1 << isa.TOKEN_BITS) - 1).map(lambda m: m & ~own)
    return Insn(op, args, draw(mask), draw(mask))


@st.composite
def prog_cases(draw):
    prog = small_program()
    words, dram = list(prog.words), prog.dram.copy()
    override, invalid = {}, None
    kind = draw(st.sampled_from(["symbols", "symbol", "meta", "insert", "finish", "dram",
                                 "words_bytes", "format"]))
    if kind == "symbols":
        override["symbols"] = json.dumps(draw(JSON_VALUES))
        invalid = None
    elif kind == "symbol":
        addr = draw(st.one_of(HOSTILE_INTS, st.integers(-3, 200)))
        shape = draw(st.lists(st.one_of(HOSTILE_INTS, st.integers(-3, 70)), max_size=3))
        dtype = draw(st.sampled_from(["int8", "int32", "float32", "object", "V3", "", "<i4"]))
        override["symbols"] = json.dumps({"x": [addr, shape, dtype]})
        size = math.prod(shape) * (4 if dtype in ("int32", "float32") else 1)
        # the documented symbol: a numpy dtype name, a region inside the image
        invalid = (dtype not in ("int8", "int32", "float32") or addr < 0
                   or any(d < 0 for d in shape) or addr + size > len(dram))
    elif kind == "meta":
        override["meta"] = draw(st.one_of(st.text(max_size=20),
                                          JSON_VALUES.map(json.dumps)))
    elif kind == "insert":
        for _ in range(draw(st.integers(1, 3))):
            words.insert(draw(st.integers(0, len(words) - 1)),
                         isa.encode(_legal_insn(draw)))
    elif kind == "finish":
        last = draw(st.sampled_from(["drop", "wait", "signal"]))
        if last == "drop":
            words = words[:-1]
        else:
            mask = 1 << draw(st.sampled_from(list(isa.Unit))).value
            words[-1] = isa.encode(Insn(Opcode.FINISH, {}, *((mask, 0) if last == "wait"
                                                              else (0, mask))))
        invalid = True
    elif kind == "dram":
        dram = np.frombuffer(draw(st.binary(max_size=300)), np.uint8).copy()
    elif kind == "format":
        override[draw(st.sampled_from(["format", "version"]))] = draw(st.text(max_size=5))
        invalid = True
    wb = isa.to_bytes(words)
    if kind == "words_bytes":
        cut = draw(st.integers(1, len(wb) - 1))
        wb = wb[:cut]
        invalid = True              # a partial word, or the finish cut off
    meta = prog_metadata(prog, **override)
    if kind == "format" and meta["format"] == "bitlut-program" and meta["version"] == "1":
        invalid = None
    return write_prog_raw(TMP / "case.prog", wb, dram, meta), invalid


_LUT = {}


def _prog_case(c):
    # exit 1 would be "DISAGREE": the executor and the cycle model differ on an accepted program
    run_case("prog", ["exec", c[0], "--arch", "lut"], c[1])
    from arch import config
    from arch.program import Program
    from bitlut.errors import UserError
    from sim.cycle import simulate
    from sim.executor import Executor
    cfg = _LUT.setdefault("cfg", config.load("lut"))
    try:
        prog = Program.load(c[0])
    except UserError:
        return
    verdicts = []           # each model on its own (no race check): both accept, or both refuse
    for model in (lambda: Executor(cfg, prog).run(), lambda: simulate(cfg, prog)):
        try:
            model()
            verdicts.append(True)
        except UserError:
            verdicts.append(False)
    assert verdicts[0] == verdicts[1], f"seed {SEED}: executor, cycle model: {verdicts}" \
                                       f"{_inputs([c[0]])}"


@tiers("prog")
def test_fuzz_program_files(examples):
    fuzz(examples, prog_cases(), _prog_case)


# -- CLI integers ---------------------------------------------------------------------------------
NON_ASCII_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@st.composite
def int_text(draw):
    v = draw(st.one_of(st.integers(-10, 300), HOSTILE_INTS, st.integers(0, 2**40)))
    text = str(v)
    style = draw(st.sampled_from(["plain"] * 4 + ["underscore", "plus", "space", "zeros",
                                                  "unicode", "hex", "float", "junk"]))
    if style == "underscore" and len(text) > 1:
        text = text[0] + "_" + text[1:]
    elif style == "plus":
        text = "+" + text
    elif style == "space":
        text = draw(st.sampled_from([" ", "\t", "\n"])) + text
    elif style == "zeros":
        text = "0" + text
    elif style == "unicode":
        text = text.translate(NON_ASCII_DIGITS)
    elif style == "hex":
        text = hex(v)
    elif style == "float":
        text = f"{v}.0"
    elif style == "junk":
        text = draw(st.text(max_size=6))
    return text


def documented_int(text, lo, hi):
    """The README's rule for integer options: ASCII decimal digits, an optional leading minus,
    no leading zeros, in [lo, hi]. None if `text` breaks it."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or (len(digits) > 1 and digits[0] == "0"):
        return None
    if text == "-0":
        return None
    value = int(text)
    return value if lo <= value <= hi else None


INT_OPTIONS = [  # (argv prefix, option, lo, hi, parts)
    (["sim", "x.q"], "--tokens", 1, 65536, None),
    (["sim"], "--gemm", 1, 131072, 3),
    (["sim", "x.q"], "--seed", 0, 2**32 - 1, 1),
    (["sim", "x.q"], "--wbits", 1, 8, 1),
    (["compile", "x.q", "-o", "out"], "--tokens", 1, 65536, 1),
    (["run", "x.q"], "--seed", 0, 2**32 - 1, 1),
    (["roofline", "x.q"], "--tokens", 1, 65536, None),
    (["quantize", "--synthetic", "llama-tiny", "-o", "x.q"], "--samples", 1, 65536, 1),
]


@st.composite
def int_cases(draw):
    prefix, option, lo, hi, parts = draw(st.sampled_from(INT_OPTIONS))
    values = draw(st.lists(int_text(), min_size=1, max_size=4 if parts is None else parts))
    if parts and len(values) < parts:
        values += ["1"] * (parts - len(values))
    text = ",".join(values)
    items = text.split(",")
    checked = [documented_int(v, lo, hi) for v in items]
    valid = all(v is not None for v in checked) and (parts is None or len(items) == parts)
    if option == "--gemm" and valid:
        m, k, n = checked
        valid = max(m * k, k * n, m * n) <= 2**28
    return prefix, option, text, valid, checked


def _int_case(c):
    from bitlut.cli import build_parser
    prefix, option, text, valid, checked = c
    stats = STATS.setdefault("ints", Counter())
    stats["cases"] += 1
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            ns = build_parser().parse_args(prefix + [option, text])
            code = 0
        except SystemExit as e:
            code = e.code
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        stats["ok"] += 1
        if not valid:
            stats["accepted_invalid"] += 1
            raise AssertionError(f"seed {SEED}: {option} {text!r} accepted")
        got = getattr(ns, option.lstrip("-").replace("-", "_"))
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        assert got == checked, (option, text, got)
    else:
        stats["rejected"] += 1
        assert code == 2 and len(lines) == 1 and "error: argument" in lines[0], (text, lines)
        assert valid is False, f"seed {SEED}: {option} {text!r} refused: {lines}"


@tiers("ints")
def test_fuzz_cli_integers(examples):
    fuzz(examples, int_cases(), _int_case)


# -- CLI paths ------------------------------------------------------------------------------------
@st.composite
def path_cases(draw):
    (TMP / "adir").mkdir(exist_ok=True)
    (TMP / "afile").write_text("x")
    choices = {"": True, " ": True, "a\0b": True, str(TMP / "adir"): True,
               str(TMP / "adir") + "/": True, str(TMP / "afile" / "x.bin"): True,
               str(TMP / ("n" * 300)): True, str(TMP / "new" / "deeper" / "ok.bin"): False,
               str(TMP / "ok.bin"): False}
    name = draw(st.one_of(st.sampled_from(sorted(choices)),
                          st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"),
                                  min_size=1, max_size=20)))
    if name not in choices:
        if name.strip() in ("", ".", ".."):
            name = "dots" + name
        name = str(TMP / "free" / name)
    invalid = choices.get(name)
    if "\0" in name:
        invalid = True
    cmd = draw(st.sampled_from(["asm", "inspect", "arch check", "exec"]))
    return cmd, name, invalid


def _path_case(c):
    cmd, name, invalid = c
    src = TMP / "p.s"
    src.write_text("finish\n")
    if cmd == "asm":
        r = run_case("paths", ["asm", src, "-o", name], invalid)
        if r.code == 0:
            assert Path(name).read_bytes() == isa.to_bytes([isa.encode(Insn(Opcode.FINISH))])
    else:                # as an input, none of these is a file of the right kind
        run_case("paths", cmd.split() + [name], True)


@tiers("paths")
def test_fuzz_cli_paths(examples):
    fuzz(examples, path_cases(), _path_case)


def summary_lines():
    """The per-surface counts, for the terminal summary (tests/conftest.py)."""
    if not STATS:
        return []
    keys = ("cases", "ok", "rejected", "crashes", "accepted_invalid", "hangs")
    lines = [f"fuzz seed {SEED} (BITLUT_FUZZ_SEED={SEED} reproduces it)"]
    for surface, c in STATS.items():
        lines.append(f"  {surface:<7} " + "  ".join(f"{k} {c[k]}" for k in keys))
    total = sum(STATS.values(), Counter())
    lines.append("  total   " + "  ".join(f"{k} {total[k]}" for k in keys))
    return lines

