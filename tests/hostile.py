"""Shared by the hostile-input regression tests and the fuzz suite: the CLI called in-process, the
outcome classified, and small valid inputs of every surface to mutate (`.q` files re-signed after
an edit, program files, configs)."""

import contextlib
import io
import json
import struct
import traceback
from dataclasses import dataclass

import numpy as np

import quant
from arch import isa
from arch.isa import Insn, Opcode
from arch.program import Program
from bitlut import cli
from quant import qformat
from quant.layer import QModel
from quant.random_layer import codebook_layer, uniform_layer


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    crash: str = ""          # the traceback, when an exception escaped the entry point

    @property
    def one_line_error(self):
        """Exit 2 with one `bitlut...: error: ...` line on stderr and no traceback."""
        lines = self.err.strip().splitlines()
        return (self.code == 2 and len(lines) == 1 and lines[0].startswith("bitlut")
                and "error: " in lines[0] and "Traceback" not in self.err)

    @property
    def ok(self):
        return self.code == 0 and not self.crash

    def describe(self):
        return f"exit {self.code}; stderr {self.err!r}; stdout {self.out[-300:]!r}{self.crash}"


def bitlut(*argv):
    """Run `bitlut ARGV` in this process (`bitlut.cli.main`), as the console script does."""
    out, err = io.StringIO(), io.StringIO()
    crash = ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:                 # argparse
            code = e.code if isinstance(e.code, int) else 2
        except Exception:                       # noqa: BLE001 - the finding itself
            code, crash = -1, traceback.format_exc()
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def assert_one_line(outcome, pattern=None):
    """`outcome` is a one-line exit-2 error (matching the regex `pattern` if given)."""
    import re
    assert outcome.one_line_error, outcome.describe()
    if pattern is not None:
        assert re.search(pattern, outcome.err), outcome.describe()


# -- `.q` files -----------------------------------------------------------------------------------
def tiny_model(n=24, k=16):
    rng = np.random.default_rng(0)
    layers = {"c": codebook_layer(rng, n, k, (2, 4), name="c", outliers=3),
              "u": uniform_layer(rng, n, k, 2, group_size=8, name="u", outliers=2)}
    return QModel("tiny", {"name": "test", "settings": {}}, layers)


def write_q(path, model=None):
    return quant.save(path, model or tiny_model())


def q_parts(path):
    """(tensors, metadata) of a `.q` file, to edit and write back with `qformat.write_raw`
    (which signs the edit with a valid checksum, so the deeper checks are reached)."""
    from safetensors.numpy import load
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    meta = json.loads(json.loads(data[8:8 + hlen])["__metadata__"][qformat.META_KEY])
    return {k: np.array(v) for k, v in load(data).items()}, meta


# -- program files --------------------------------------------------------------------------------
def small_program():
    """A legal program: load a row into the activation buffer, sum it, store the sums, finish."""
    act, table = isa.Buffer.ACT, isa.Buffer.TABLE
    mask = {u: 1 << u.value for u in isa.Unit}
    insns = [Insn(Opcode.LOAD, dict(buf=act, sram=0, dram=0, rows=1, row_bytes=64, dram_stride=64),
                  0, mask[isa.Unit.VECTOR]),
             Insn(Opcode.VSUM, dict(rows=1, cols=64, act=0, sums=0), mask[isa.Unit.LOAD],
                  mask[isa.Unit.STORE]),
             Insn(Opcode.STORE, dict(buf=table, sram=0, dram=128, rows=1, row_bytes=4,
                                     dram_stride=4), mask[isa.Unit.VECTOR]),
             Insn(Opcode.FINISH)]
    dram = (np.arange(192) % 7).astype(np.uint8)
    return Program([isa.encode(i) for i in insns], dram,
                   {"x": _sym(0, (64,), "int8"), "y": _sym(128, (1,), "int32")}, {"k": 1})


def _sym(addr, shape, dtype):
    from arch.program import Symbol
    return Symbol(addr, shape, dtype)


def write_prog_raw(path, words_bytes, dram, metadata):
    """A program file with arbitrary metadata strings (no checks)."""
    from safetensors.numpy import save_file
    save_file({"words": np.frombuffer(words_bytes, np.uint8).copy(), "dram": dram}, str(path),
              metadata=metadata)
    return path


def prog_metadata(prog, **override):
    meta = {"format": "bitlut-program", "version": "1",
            "symbols": json.dumps({k: [s.addr, list(s.shape), s.dtype]
                                   for k, s in prog.symbols.items()}),
            "meta": json.dumps(prog.meta)}
    meta.update(override)
    return meta


# -- configs --------------------------------------------------------------------------------------
def config_dict(name="lut"):
    import yaml

    from arch import config
    return yaml.safe_load((config.CONFIG_DIR / f"{name}.yaml").read_text())
