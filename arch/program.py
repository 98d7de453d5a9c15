"""A compiled program: instruction words, the DRAM image they run on, and a symbol map.

This is the contract between the compiler (which writes it), and the functional executor, the
cycle model and the RTL testbenches (which run it). On disk it is one safetensors file (no pickle:
loading never executes code) holding two uint8 tensors, `words` (16 bytes per instruction,
little-endian) and `dram`, and JSON metadata: the format name and version, the symbols and free
metadata (config tag, layer names, tiling decisions).

A symbol names a region of the DRAM image: `Symbol(addr, shape, dtype)`; `dtype` is a numpy
dtype name (`int8`, `float32`, ...). Inputs are written into the image before a run and outputs
are read from it after.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arch import isa
from bitlut.errors import UserError
from bitlut.fileio import atomic_write, safetensors_bytes

FORMAT = "bitlut-program"
VERSION = 1
# numpy dtypes a symbol may hold: the ones the image contract uses (arch/image.py)
SYMBOL_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                 "float16", "float32", "float64")


class ProgramError(UserError):
    """A malformed program file or symbol access."""


@dataclass(frozen=True)
class Symbol:
    addr: int
    shape: tuple
    dtype: str

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Program:
    words: list
    dram: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    symbols: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    decoded: tuple = field(default=None, repr=False, compare=False)   # (words copy, insns)

    def insns(self):
        """The decoded instructions (raises `IsaError` naming the first illegal word, and
        `ProgramError` for a program that breaks `check_program`'s rules). A program fresh from
        the compiler carries them already; one loaded or edited is decoded. The functional
        executor and the cycle model both run what this returns, so they accept and reject the
        same programs."""
        if self.decoded is not None and self.decoded[0] == self.words:
            return self.decoded[1]
        insns = [isa.decode(w, i) for i, w in enumerate(self.words)]
        check_program(insns)
        return insns

    # -- the DRAM image ---------------------------------------------------------------------------
    def alloc(self, name, shape, dtype, align=64):
        """Reserve a zeroed, aligned region of the image for `name` and return its symbol."""
        if name in self.symbols:
            raise ProgramError(f"symbol `{name}` must be defined once, not twice")
        addr = -(-len(self.dram) // align) * align
        sym = Symbol(addr, tuple(int(s) for s in shape), np.dtype(dtype).name)
        grown = np.zeros(addr + sym.nbytes, np.uint8)
        grown[:len(self.dram)] = self.dram
        self.dram = grown
        self.symbols[name] = sym
        return sym

    def view(self, name):
        """A writable numpy view of symbol `name` inside the image."""
        sym = self.symbols.get(name)
        if sym is None:
            raise ProgramError(f"symbol must be one of {', '.join(self.symbols) or 'none'}, "
                               f"not {name!r}")
        raw = self.dram[sym.addr:sym.addr + sym.nbytes]
        return raw.view(sym.dtype).reshape(sym.shape)

    def write(self, name, value):
        view = self.view(name)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ProgramError(f"symbol `{name}` must be written with shape {view.shape}, "
                               f"not {value.shape}")
        view[...] = value.astype(view.dtype, casting="same_kind" if value.dtype.kind == "f"
                                 else "unsafe")

    def read(self, name):
        return self.view(name).copy()

    # -- files ------------------------------------------------------------------------------------
    def save(self, path):
        """Write the program atomically; the same program always gives the same bytes."""
        tensors = {"words": np.frombuffer(isa.to_bytes(self.words), np.uint8).copy(),
                   "dram": np.ascontiguousarray(self.dram, np.uint8)}
        meta = {"format": FORMAT, "version": str(VERSION),
                "symbols": json.dumps({k: [s.addr, list(s.shape), s.dtype]
                                       for k, s in self.symbols.items()}),
                "meta": json.dumps(self.meta, sort_keys=True)}
        return atomic_write(path, safetensors_bytes(tensors, meta))

    @classmethod
    def load(cls, path):
        from safetensors import SafetensorError, safe_open
        path = Path(path)
        if path.is_dir():
            raise ProgramError(f"{path}: program file must be a file, not a folder")
        if not path.is_file():
            raise ProgramError(f"{path}: program file must exist, not missing")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                names = set(f.keys())
                tensors = {k: f.get_tensor(k) for k in names}
        except (SafetensorError, OSError, ValueError) as e:
            raise ProgramError(f"{path}: file must be a bitlut program (safetensors), "
                               f"not unreadable ({str(e).splitlines()[0]})") from None
        if meta.get("format") != FORMAT:
            raise ProgramError(f"{path}: `format` must be {FORMAT!r}, not {meta.get('format')!r}")
        if meta.get("version") != str(VERSION):
            raise ProgramError(f"{path}: `version` must be {VERSION}, not {meta.get('version')!r}")
        for k in ("words", "dram"):
            if k not in tensors or tensors[k].dtype != np.uint8 or tensors[k].ndim != 1:
                raise ProgramError(f"{path}: tensor `{k}` must be a 1-D uint8 array")
        words = isa.from_bytes(tensors["words"].tobytes(), source=str(path))
        dram = tensors["dram"]
        symbols = _parse_symbols(path, meta.get("symbols"), len(dram))
        try:
            extra = json.loads(meta.get("meta", "{}"))
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise ProgramError(f"{path}: `meta` must be a JSON object, not "
                               f"{str(meta.get('meta'))[:40]!r}")
        return cls(words, dram, symbols, extra)


def is_program_file(blob):
    """Whether the bytes `blob` are a program file (a safetensors container whose metadata names
    this format) rather than raw instruction words. The container starts with the length of its
    JSON header; raw words that happen to look like that for one byte still fail to parse."""
    if len(blob) < 8:
        return False
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        return False
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError:
        return False
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _parse_symbols(path, text, dram_bytes):
    """The symbol map of a program file's `symbols` metadata, every symbol checked to be a
    well-typed region inside the DRAM image of `dram_bytes`."""
    rule = "JSON name -> [addr, shape, dtype]"
    try:
        raw = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise ProgramError(f"{path}: `symbols` must be {rule}, not {str(text)[:40]!r}")
    symbols = {}
    for name, entry in raw.items():
        where = f"{path}: symbol `{name[:40]}`"
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ProgramError(f"{where} must be [addr, shape, dtype], not {str(entry)[:40]}")
        addr, shape, dtype = entry
        if type(addr) is not int or not 0 <= addr <= dram_bytes:
            raise ProgramError(f"{where}: address must be an integer in [0, {dram_bytes}], "
                               f"not {str(addr)[:40]}")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d <= dram_bytes
                                                for d in shape)):
            raise ProgramError(f"{where}: shape must be a list of integers in "
                               f"[0, {dram_bytes}], not {str(shape)[:40]}")
        if dtype not in SYMBOL_DTYPES:
            raise ProgramError(f"{where}: dtype must be one of {', '.join(SYMBOL_DTYPES)}, "
                               f"not {str(dtype)[:40]!r}")
        # exact integers: int64 products would wrap around to a small (or zero) size
        nbytes = np.dtype(dtype).itemsize
        for d in shape:
            nbytes *= d
        if addr + nbytes > dram_bytes:
            raise ProgramError(f"{where} must lie inside the DRAM image ({dram_bytes} bytes), "
                               f"not at {addr}+{nbytes}")
        symbols[name] = Symbol(addr, tuple(shape), dtype)
    return symbols


def check_program(insns):
    """The rules a whole program obeys beyond its words' (`isa.decode`): it ends at a `finish`
    (the first one; words after it never run), and `finish` has no tokens, as it waits for every
    unit to drain. Raises `ProgramError` naming the instruction."""
    for i, insn in enumerate(insns):
        if insn.op is isa.Opcode.FINISH:
            if insn.wait or insn.signal:
                raise ProgramError(f"insn {i} (finish): `wait` and `signal` must be none, not "
                                   f"wait={insn.wait:#x} signal={insn.signal:#x}; finish waits "
                                   "for every unit to drain")
            return
    last = f"after insn {len(insns) - 1}" if insns else "with no instructions"
    raise ProgramError(f"program must end with finish, not run off the end {last}")
