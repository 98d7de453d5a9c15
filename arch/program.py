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
from bitlut.fileio import AtomicPath

FORMAT = "bitlut-program"
VERSION = 1


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
        """The decoded instructions (raises `IsaError` naming the first illegal word). A program
        fresh from the compiler carries them already; one loaded or edited is decoded."""
        if self.decoded is not None and self.decoded[0] == self.words:
            return self.decoded[1]
        return [isa.decode(w, i) for i, w in enumerate(self.words)]

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
        from safetensors.numpy import save_file
        tensors = {"words": np.frombuffer(isa.to_bytes(self.words), np.uint8).copy(),
                   "dram": np.ascontiguousarray(self.dram, np.uint8)}
        meta = {"format": FORMAT, "version": str(VERSION),
                "symbols": json.dumps({k: [s.addr, list(s.shape), s.dtype]
                                       for k, s in self.symbols.items()}),
                "meta": json.dumps(self.meta)}
        with AtomicPath(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path):
        from safetensors import SafetensorError, safe_open
        path = Path(path)
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
        try:
            symbols = {k: Symbol(a, tuple(s), d)
                       for k, (a, s, d) in json.loads(meta["symbols"]).items()}
            extra = json.loads(meta.get("meta", "{}"))
        except (KeyError, ValueError, TypeError):
            raise ProgramError(f"{path}: `symbols` must be JSON name -> [addr, shape, dtype]") \
                from None
        dram = tensors["dram"]
        for k, s in symbols.items():
            if s.addr < 0 or s.addr + s.nbytes > len(dram):
                raise ProgramError(f"{path}: symbol `{k}` must lie inside the DRAM image "
                                   f"({len(dram)} bytes), not at {s.addr}+{s.nbytes}")
        return cls(words, dram, symbols, extra)
