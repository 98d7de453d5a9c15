"""The instruction set: one field table, a codec that matches the Amaranth layouts, a text form
that round-trips, and one-line errors for every malformed input."""

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arch import config, isa
from arch.isa import Buffer, Insn, IsaError, Opcode

ROOT = Path(__file__).resolve().parent.parent


def field_values(op, f):
    if f.enum is not None:
        return st.sampled_from(list(f.enum))
    lo = 1 if f.kind == "count" else 0
    hi = 1 if f.kind == "flag" else (1 << f.width) - 1
    return st.integers(lo, hi)


def token_masks(op):
    unit = isa.UNIT_OF[op]
    own = 0 if unit is None else 1 << unit.value
    return st.integers(0, (1 << isa.TOKEN_BITS) - 1).map(lambda m: m & ~own)


@st.composite
def insns(draw, ops=tuple(Opcode)):
    op = draw(st.sampled_from(ops))
    args = {f.name: draw(field_values(op, f)) for f in isa.FORMATS[op]}
    return Insn(op, args, draw(token_masks(op)), draw(token_masks(op)))


programs = st.lists(insns(), min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(insns())
def test_encode_decode_round_trip(insn):
    word = isa.encode(insn)
    assert 0 <= word < 1 << isa.WORD_BITS
    assert isa.decode(word) == insn


@settings(max_examples=300, deadline=None)
@given(insns())
def test_codec_agrees_with_amaranth_layout(insn):
    # The fast codec is derived from the layouts; this pins it to Amaranth's own packing, which
    # is what the RTL decoder sees (first field in the low bits).
    layout = isa.LAYOUTS[insn.op]
    init = {"op": insn.op, "wait": insn.wait, "signal": insn.signal, **insn.args}
    const = layout.const(init)
    assert const.as_bits() == isa.encode(insn)
    view = layout.from_bits(isa.encode(insn))
    for f in isa.FORMATS[insn.op]:
        got = getattr(view, f.name)
        assert (got if f.enum is not None else int(got)) == insn.args[f.name]
    assert layout.size == isa.WORD_BITS


@settings(max_examples=100, deadline=None)
@given(programs)
def test_assemble_disassemble_assemble(program):
    words = [isa.encode(i) for i in program]
    text = isa.disassemble(words)
    again = isa.assemble(text)
    assert again == words
    assert isa.disassemble(again) == text
    assert isa.from_bytes(isa.to_bytes(words)) == words


def test_hand_checked_word():
    # lmma rows=2 n=64 kgroups=1024 bits=2 mode=uniform accumulate=1 src=0 wgt=0x10 dst=0x20,
    # wait=table (bit 1), signal=vector (bit 3); field offsets worked out from docs/isa.md:
    # op 4:0, wait 9:5, signal 14:10, rows 26:15, n 42:27, kgroups 58:43, bits 63:59,
    # mode 64, accumulate 65, src 85:66, wgt 105:86, dst 125:106.
    insn = isa.parse_line("lmma rows=2 n=64 kgroups=1024 bits=2 mode=uniform accumulate=1 "
                          "src=0 wgt=0x10 dst=0x20 wait=table signal=vector", 0)
    expect = (Opcode.LMMA.value | 0b00010 << 5 | 0b01000 << 10 | 2 << 15 | 64 << 27
              | 1024 << 43 | 2 << 59 | 0 << 64 | 1 << 65 | 0 << 66 | 0x10 << 86 | 0x20 << 106)
    assert isa.encode(insn) == expect


def test_every_opcode_has_a_format_and_unit():
    assert set(isa.FORMATS) == set(Opcode) == set(isa.UNIT_OF)
    assert all(op.value != 0 for op in Opcode)     # an all-zero word is illegal


# -- malformed input: each class gives one line naming index, field and value -------------------
LMMA = "lmma rows=2 n=64 kgroups=8 bits=2 mode=uniform accumulate=0 src=0 wgt=0 dst=0"


@pytest.mark.parametrize("line,pattern", [
    ("frobnicate x=1", r"insn 1: `mnemonic` must be one of nop, .*, not 'frobnicate'"),
    (LMMA.replace("rows=2", "rows=0"), r"insn 1 \(lmma\): `rows` must be at least 1, not 0"),
    (LMMA.replace("bits=2", "bits=32"), r"`bits` must be in \[0, 31\] \(5 bits\), not 32"),
    (LMMA.replace("bits=2", "bits=two"), r"`bits` must be an integer, not 'two'"),
    (LMMA.replace("mode=uniform", "mode=ternary"),
     r"`mode` must be one of uniform, codebook, not 'ternary'"),
    (LMMA.replace("accumulate=0", "accumulate=2"), r"`accumulate` must be 0 or 1, not 2"),
    (LMMA.replace(" dst=0", ""), r"`dst` must be given, not missing"),
    (LMMA + " dst=4", r"`dst` must be given once, not repeated"),
    (LMMA + " colour=red", r"`colour` must be one of the fields of lmma"),
    (LMMA + " wait=matmul", r"`wait` must be free of the instruction's own unit \(matmul\)"),
    (LMMA + " signal=dram", r"`signal` must be a comma-separated list of load, .*, not 'dram'"),
    (LMMA + " rows", r"`rows` must be written as name=value"),
    ("load buf=dram sram=0 dram=0 rows=1 row_bytes=1 dram_stride=0",
     r"`buf` must be one of act, table, .*, not 'dram'"),
])
def test_assembler_errors(line, pattern):
    if pattern.startswith("`"):
        pattern = r"insn 1 \(\w+\): " + pattern
    with pytest.raises(IsaError, match=r"^prog\.s:2: " + pattern) as e:
        isa.assemble("nop  # first\n" + line + "\n", source="prog.s")
    assert "\n" not in str(e.value)


def test_addresses_checked_against_the_config():
    cfg = config.load("lut")
    act = cfg.sram.bytes("act")
    ok = f"load buf=act sram={act - 16:#x} dram=0 rows=1 row_bytes=16 dram_stride=16"
    assert isa.assemble(ok, cfg)
    with pytest.raises(IsaError, match=rf"insn 0 \(load\): `sram` must be inside the act buffer "
                       rf"\({act} bytes\), not {act:#x}"):
        isa.assemble(f"load buf=act sram={act:#x} dram=0 rows=1 row_bytes=1 dram_stride=0", cfg)
    with pytest.raises(IsaError, match=r"insn 0 \(load\): `rows` must be such that sram \+ "
                       rf"rows\*row_bytes <= {act}"):
        isa.assemble(f"load buf=act sram={act - 16:#x} dram=0 rows=2 row_bytes=16 "
                     "dram_stride=16", cfg)
    with pytest.raises(IsaError, match=r"insn 0 \(lmma\): `dst` must be inside the acc buffer"):
        isa.assemble(LMMA.replace("dst=0", f"dst={cfg.sram.bytes('acc'):#x}"), cfg)
    # without a config the same words assemble: capacity is the config's business
    assert isa.assemble(LMMA.replace("dst=0", f"dst={cfg.sram.bytes('acc'):#x}"))


def lmma_word():
    return isa.assemble(LMMA)[0]


@pytest.mark.parametrize("mutate,pattern", [
    (lambda w: 0, r"insn 7: `op` must be an assigned opcode, not 0"),
    (lambda w: (w & ~0x1F) | 31, r"insn 7: `op` must be an assigned opcode, not 31"),
    (lambda w: w | 1 << 127, r"insn 7 \(lmma\): `reserved` must be zero, not 0x2"),
    (lambda w: w & ~(0xFFF << 15), r"insn 7 \(lmma\): `rows` must be at least 1, not 0"),
    (lambda w: w | 1 << (5 + 2), r"insn 7 \(lmma\): `wait` must be free of the instruction's own"),
    (lambda w: 1 << 128, r"insn 7: `word` must be a 128-bit unsigned integer"),
])
def test_decoder_rejects_illegal_words(mutate, pattern):
    with pytest.raises(IsaError, match="^" + pattern):
        isa.decode(mutate(lmma_word()), 7)


def test_decoder_rejects_unassigned_enum_value():
    word = isa.assemble("load buf=act sram=0 dram=0 rows=1 row_bytes=1 dram_stride=0")[0]
    offset = dict((n, m.offset) for n, m in isa.LAYOUTS[Opcode.LOAD])["buf"]
    bad = word | (max(b.value for b in Buffer) + 1) << offset
    with pytest.raises(IsaError, match=r"insn 3 \(load\): `buf` must be one of act, .*, not 8"):
        isa.decode(bad, 3)


def test_binary_length_checked():
    with pytest.raises(IsaError, match=r"p\.bin: length must be a multiple of 16 bytes, not 17"):
        isa.from_bytes(b"\0" * 17, source="p.bin")


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_asm_disasm_round_trip(cli, tmp_path):
    src = tmp_path / "p.s"
    src.write_text(LMMA + " signal=vector\nvdeq rows=2 n=64 deq=lut first=1 acc=0 out=0 param=0 "
                   "sums=0 wait=matmul\nfinish\n")
    out = tmp_path / "p.bin"
    r = cli("asm", src, "-o", out, "--arch", "lut")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == 3 * 16
    r = cli("disasm", out)
    assert r.returncode == 0, r.stderr
    assert isa.assemble(r.stdout) == isa.from_bytes(out.read_bytes())


def test_cli_bad_word_and_bad_asm(cli, tmp_path):
    prog = tmp_path / "p.bin"
    words = isa.assemble("nop\nfinish")
    prog.write_bytes(isa.to_bytes(words) + (31).to_bytes(16, "little"))
    r = cli("disasm", prog)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert re.fullmatch(r"bitlut: error: .*p\.bin: insn 2: `op` must be an assigned opcode, "
                        r"not 31\n", r.stderr)
    src = tmp_path / "bad.s"
    src.write_text("nop\nlmma rows=1\n")
    r = cli("asm", src, "-o", tmp_path / "x.bin")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "bad.s:2: insn 1 (lmma)" in r.stderr
    assert not (tmp_path / "x.bin").exists()


def test_docs_page_is_current():
    page = (ROOT / "docs" / "isa.md").read_text()
    assert page == isa.reference_markdown() + "\n", "run `bitlut isa-doc` to regenerate docs/isa.md"


# -- one source of truth --------------------------------------------------------------------------
OPCODE_LITERAL = re.compile(
    r"Opcode\(\s*\d|\bop(code)?\s*(==|!=)\s*\d|[\"']op[\"']\s*:\s*\d|\bop\s*=\s*\d"
    r"|\bOPCODE_\w+\s*=\s*\d")


def test_no_opcode_numbers_outside_arch():
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".venv", "arch", "build") or rel.name == "test_isa.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if OPCODE_LITERAL.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "opcode numbers written outside arch/:\n" + "\n".join(offenders)


def test_the_opcode_scan_would_catch_a_literal():
    assert OPCODE_LITERAL.search("if insn.op == 7:")
    assert OPCODE_LITERAL.search("Opcode(7)")
    assert not OPCODE_LITERAL.search("if insn.op == Opcode.LMMA:")


# Limits derived from field widths (`isa.field_max`), never restated: the largest value of every
# field at least a byte wide, written as a number in code outside arch/, is a second copy. Test
# vectors are data, not limits (`test_*.py`, `*_vectors.py`); a line that means another number
# of the same value (an fp32 exponent field, say) says "not an ISA field" in its comment.
FIELD_MAXIMA = sorted({(1 << f.width) - 1 for fields in isa.FORMATS.values() for f in fields
                       if f.width >= 8})
FIELD_LITERAL = re.compile(r"(?<![\w.])(" + "|".join(
    [str(v) for v in FIELD_MAXIMA] + [hex(v) for v in FIELD_MAXIMA]) + r")(?![\w.])",
    re.IGNORECASE)
CODE_PACKAGES = ("bitlut", "quant", "compiler", "sim", "rtl", "verif", "reports", "bench")


def test_no_field_widths_outside_arch():
    offenders = []
    for package in CODE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name.startswith("test_") or path.name.endswith("_vectors.py"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if FIELD_LITERAL.search(code) and "not an ISA field" not in line[len(code):]:
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, ("field limits written as numbers outside arch/ (use "
                           "isa.field_max):\n" + "\n".join(offenders))


def test_the_field_width_scan_would_catch_a_literal():
    assert {255, 1023, 4095, 65535} <= set(FIELD_MAXIMA)
    assert FIELD_LITERAL.search("MAX_ROWS = 255")
    assert FIELD_LITERAL.search("if count > 0xFFF:")
    assert not FIELD_LITERAL.search("MAX_ROWS = field_max(Opcode.TBL, 'rows')")
    assert not FIELD_LITERAL.search("x = 2550 + 1.255")
