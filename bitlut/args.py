"""Command-line values checked where they enter, shared by every `<package>/cli.py`.

Integers are strict ASCII decimal (`int()` would also take `1_000`, `+4`, ` 4` and non-ASCII
digits such as `٤`), with a stated range; paths must name something usable. Each checker is a
function of the text that raises `UserError` ("`--flag` must be rule, not value"), and `arg()`
wraps one as an argparse `type=`, so that a bad value is rejected before any work starts (argparse
prints the message and exits 2).
"""

import argparse
import re
from pathlib import Path

from bitlut.errors import UserError

_DECIMAL = re.compile(r"(0|-?[1-9][0-9]*)\Z", re.ASCII)
_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\Z", re.ASCII)

SEED_MAX = 2**32 - 1          # numpy's legacy seeding range; every seed the tools use fits
TOKENS_MAX = 1 << 16          # token rows of one run (a 64 K-token prefill)
DIM_MAX = 1 << 17             # one GEMM dimension of `--gemm`
GEMM_ELEMENTS_MAX = 1 << 28   # M*K, K*N and M*N of `--gemm` (the largest LLM layers are ~2**28)


def integer(text, name, lo, hi):
    """`text` as an int in [lo, hi] written in ASCII decimal digits (a leading `-` allowed, no
    `+`, spaces, underscores or leading zeros)."""
    if not isinstance(text, str) or not _DECIMAL.match(text):
        raise UserError(f"`{name}` must be a decimal integer from {lo} to {hi}, not {text!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise UserError(f"`{name}` must be from {lo} to {hi}, not {value}")
    return value


def number(text, name, lo, hi):
    """`text` as a finite float in [lo, hi], written as an ASCII decimal number (`2.2`, `3`,
    `1e-2`; not `nan`, `inf`, `1_0` or non-ASCII digits, which `float()` would take)."""
    if not isinstance(text, str) or not _NUMBER.match(text):
        raise UserError(f"`{name}` must be a decimal number from {lo:g} to {hi:g}, "
                        f"not {text!r}")
    value = float(text)
    if not lo <= value <= hi:
        raise UserError(f"`{name}` must be from {lo:g} to {hi:g}, not {text}")
    return value


def integers(text, name, lo, hi, count=None):
    """Comma-separated `integer`s (exactly `count` of them when given)."""
    parts = text.split(",") if isinstance(text, str) else [text]
    if count is not None and len(parts) != count:
        raise UserError(f"`{name}` must be {count} comma-separated integers, not {text!r}")
    return [integer(p, name, lo, hi) for p in parts]


def gemm_shape(text, name="--gemm"):
    """`M,K,N` of a synthetic GEMM, each dimension and each operand bounded so that the layer,
    its activations and its outputs fit in memory."""
    m, k, n = integers(text, name, 1, DIM_MAX, count=3)
    for what, size in (("M*K", m * k), ("K*N", k * n), ("M*N", m * n)):
        if size > GEMM_ELEMENTS_MAX:
            raise UserError(f"`{name}` {what} must be at most {GEMM_ELEMENTS_MAX}, "
                            f"not {size} ({text})")
    return m, k, n


def probe(path, what):
    """(is a folder, is a file) of `path`; `UserError` where the name itself is unusable (longer
    than the file system allows, say), which `Path.is_dir` reports as an `OSError`."""
    try:
        return path.is_dir(), path.is_file()
    except OSError as e:
        raise UserError(f"{str(path)[:80]}: {what} must be a usable file name, not "
                        f"{e.strerror or e}") from None


def input_file(text, what="input file"):
    """`text` as the `Path` of an existing regular file."""
    if not isinstance(text, str) or not text or "\0" in text:
        raise UserError(f"{what} must be a file name, not {text!r}")
    p = Path(text)
    folder, present = probe(p, what)
    if folder:
        raise UserError(f"{text}: {what} must be a file, not a folder")
    if not present:
        raise UserError(f"{text}: {what} must exist, not missing")
    return p


def output_dir(text, name="-o"):
    """`text` as the `Path` of a folder to write into (made if missing), not an existing file."""
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise UserError(f"`{name}` must be a folder name, not {text!r}")
    p = Path(text)
    folder, present = probe(p, f"`{name}` folder")
    if present and not folder:
        raise UserError(f"{text}: `{name}` must be a folder, not an existing file")
    return p


def output_file(text, name):
    """`text` as the `Path` of a file to write (`bitlut.fileio.output_path`'s rules)."""
    from bitlut.fileio import output_path
    try:
        return output_path(text)
    except UserError as e:
        raise UserError(f"`{name}`: {e}") from None


PLOT_FORMATS = ("png", "svg", "pdf")   # what matplotlib writes without extra packages


def plot_format(path):
    """The figure format of `path`, from its suffix: one of `PLOT_FORMATS`."""
    fmt = Path(path).suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        raise UserError(f"{path}: figure file suffix must be one of "
                        f"{', '.join('.' + f for f in PLOT_FORMATS)}, not {Path(path).suffix!r}")
    return fmt


def plot_file(text, name="--plot"):
    """`text` as the `Path` of a figure to write, its format known from its suffix."""
    from bitlut.fileio import output_path
    try:
        p = output_path(text)
        plot_format(p)
    except UserError as e:
        raise UserError(f"`{name}`: {e}") from None
    return p


def arg(check, *params):
    """An argparse `type=` calling `check(text, *params)`; its `UserError` becomes argparse's
    one-line error ("argument --seed: must be ..."), the flag named once."""
    def convert(text):
        try:
            return check(text, *params)
        except UserError as e:
            msg = str(e)
            if params and isinstance(params[0], str):
                for lead in (f"`{params[0]}`: ", f"`{params[0]}` "):
                    msg = msg.removeprefix(lead)
            raise argparse.ArgumentTypeError(msg) from None
    convert.__name__ = check.__name__
    return convert


def seed(name="--seed"):
    return arg(integer, name, 0, SEED_MAX)


def tokens(name="--tokens"):
    """One token count."""
    return arg(integer, name, 1, TOKENS_MAX)


def token_list(name="--tokens"):
    """Comma-separated token counts."""
    return arg(integers, name, 1, TOKENS_MAX)
