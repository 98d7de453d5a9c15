"""The FPGA shell's control registers, defined once: the AXI4-Lite register map that the RTL
register block decodes (`rtl.shell`), the host drivers use (`verif.shell_host`), and
`docs/shell.md` documents (`bitlut shell-doc`, generated from this table like `docs/isa.md`).

Every register is 32 bits at a word-aligned byte offset; the slave decodes the address from
bit 2 up (the low two bits are ignored). Accesses:

- `ro`: read only; a write answers SLVERR and changes nothing;
- `rw`: read and write; byte strobes are honoured;
- `w1`: write a 1 to a bit to act (a one-cycle pulse); reads as 0.

A register marked *idle only* takes writes only while the shell is idle (`STATUS.running` is 0):
a write while it runs answers SLVERR and changes nothing, so a program, its length and the DRAM
base cannot change under a running core. An address outside the map answers DECERR (reads
return 0). A write of a value past a register's limit (`PROG_ADDR`, `PROG_LEN`: the program
memory's depth, in `PROG_DEPTH`) answers SLVERR, as does a program word committed past the
memory's end: nothing wraps around.

The error codes in `STATUS.error` are `ErrCode` below, shared by the core (`rtl.core`) and
every host.
"""

import zlib
from dataclasses import dataclass

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from . import isa

__all__ = ["ErrCode", "Bits", "Reg", "REGS", "ADDR_BITS", "DATA_BITS", "VERSION", "MAGIC",
           "PROG_DATA", "reg", "tag_hash", "isa_hash", "reference_markdown"]

DATA_BITS = 32          # AXI4-Lite data width
ADDR_BITS = 8           # the register window: 256 bytes
VERSION = 1             # of this register map; a change to the table bumps it
MAGIC = int.from_bytes(b"blut", "big")


class ErrCode(enum.Enum, shape=3):
    """Why a run stopped (`STATUS.error`; the core's `error` port)."""
    NONE = 0
    ILLEGAL = 1        # unassigned opcode or enum value, reserved bits, a zero count, own token
    RANGE = 2          # a scratchpad extent past the end of its buffer
    UNSUPPORTED = 3    # an opcode this core does not run yet
    DEADLOCK = 4       # every unit blocked: no cycle can ever move again
    OVERRUN = 5        # dispatch ran past `prog_len` without `finish`
    BUS = 6            # a DMA transfer got an error response (SLVERR, DECERR) from the AXI bus


@dataclass(frozen=True)
class Bits:
    """A field of a register: `width` bits from bit `offset` (or the shape of `enum`)."""
    name: str
    offset: int
    width: int
    doc: str
    enum: type | None = None

    @property
    def shape(self):
        return self.enum if self.enum is not None else unsigned(self.width)


@dataclass(frozen=True)
class Reg:
    """One register. `fields` None: the whole register is one value."""
    name: str
    offset: int
    access: str
    doc: str
    fields: tuple | None = None
    idle_only: bool = False
    limit: str | None = None        # the largest value written, in words of the doc

    @property
    def layout(self):
        """The register's bits as an Amaranth layout (fields at their offsets)."""
        fields = self.fields or (Bits("value", 0, DATA_BITS, self.doc),)
        return data.FlexibleLayout(DATA_BITS, {f.name: data.Field(f.shape, f.offset)
                                               for f in fields})

    @property
    def readable(self):
        return self.access in ("ro", "rw")

    @property
    def writable(self):
        return self.access in ("rw", "w1")


#: The registers holding one program word, low bits first (a word is `isa.WORD_BITS` wide);
#: the write to the last one commits the word at `PROG_ADDR` and advances `PROG_ADDR`.
PROG_DATA = tuple(f"prog_data{i}" for i in range(isa.WORD_BITS // DATA_BITS))

_PROG_DATA_OFFSET = 0x40

REGS = (
    Reg("id", 0x00, "ro", f"the constant {MAGIC:#010x} (ASCII `blut`): a bitlut shell is here"),
    Reg("version", 0x04, "ro", f"version of this register map ({VERSION})"),
    Reg("isa", 0x08, "ro", "CRC-32 of the instruction set's field table (`arch.regs.isa_hash`): "
        "programs from a compiler with another ISA are refused by the host"),
    Reg("tag", 0x0C, "ro", "CRC-32 of the config's tag (`zlib.crc32(cfg.tag.encode())`): the "
        "config the core was built for"),
    Reg("prog_depth", 0x10, "ro", "words of program memory"),
    Reg("ctrl", 0x20, "w1", "control", fields=(
        Bits("start", 0, 1, "run the loaded program from word 0 (refused while running)"),
        Bits("reset", 1, 1, "soft reset: stop the core, let the DMA finish every AXI "
             "transaction it started (it starts no new one), then reset both; the register "
             "values and the program memory are kept (AXI cannot abandon a transaction: a "
             "slave that never answers holds the reset, `STATUS.running` stays 1)"),
    )),
    Reg("status", 0x24, "ro", "status", fields=(
        Bits("running", 0, 1, "a run, or a soft reset, is in progress, or the DMA still "
             "finishes transactions of a run that stopped"),
        Bits("done", 1, 1, "the last run ended (with or without an error) and the bus is "
             "idle; cleared by `start`"),
        Bits("error", 8, ErrCode.as_shape().width, "why the last run stopped (`ErrCode`)",
             enum=ErrCode),
    )),
    Reg("err_index", 0x28, "ro", "index of the instruction the error names"),
    Reg("cycles", 0x2C, "ro", "cycles of the last run (docs/core.md: time origin and end)"),
    Reg("prog_len", 0x30, "rw", "words of the loaded program", idle_only=True,
        limit="PROG_DEPTH"),
    Reg("prog_addr", 0x34, "rw", "program word the next commit writes; advances by one with "
        "each commit", idle_only=True, limit="PROG_DEPTH - 1"),
    Reg("dram_base", 0x38, "rw", "added to every DRAM address of the program: where the "
        "memory image lies on the AXI4 bus", idle_only=True),
    Reg("irq_enable", 0x3C, "rw", "interrupt enable", fields=(
        Bits("done", 0, 1, "`irq` is high while `STATUS.done` is (a level: `start` or a 0 "
             "here lowers it)"),
    )),
) + tuple(
    Reg(name, _PROG_DATA_OFFSET + 4 * i, "rw",
        f"bits {DATA_BITS * i + DATA_BITS - 1}:{DATA_BITS * i} of the program word"
        + ("; writing it commits the word to `PROG_ADDR` (SLVERR once `PROG_ADDR` is "
           "`PROG_DEPTH`)" if name == PROG_DATA[-1] else ""), idle_only=True)
    for i, name in enumerate(PROG_DATA))


def reg(name):
    """The register called `name` (raises `KeyError` naming the known ones)."""
    for r in REGS:
        if r.name == name:
            return r
    raise KeyError(f"register must be one of {', '.join(r.name for r in REGS)}, not {name!r}")


def tag_hash(cfg):
    """`TAG`: the CRC-32 of `cfg.tag`."""
    return zlib.crc32(cfg.tag.encode())


def isa_hash(formats=None, header=None):
    """`ISA`: the CRC-32 of the instruction set's field table (every opcode, field, width, kind
    and enumeration), so any change to the ISA changes it. `formats` and `header` default to
    `isa.FORMATS` and `isa.HEADER`."""
    formats = isa.FORMATS if formats is None else formats
    header = isa.HEADER if header is None else header

    def text(f):
        values = ",".join(f"{m.name}={m.value}" for m in f.enum) if f.enum else ""
        return f"{f.name}/{f.width}/{f.kind}/{values}"
    lines = [f"word {isa.WORD_BITS}", "header " + " ".join(text(f) for f in header)]
    lines += [f"{op.name}={op.value} " + " ".join(text(f) for f in fields)
              for op, fields in formats.items()]
    return zlib.crc32("\n".join(lines).encode())


def _check(regs):
    offsets = [r.offset for r in regs]
    if len(set(offsets)) != len(offsets) or any(o % 4 or o >= 1 << ADDR_BITS for o in offsets):
        raise ValueError("register offsets must be distinct, word-aligned and inside the "
                         f"{1 << ADDR_BITS}-byte window, not {offsets}")


_check(REGS)


# -- the reference page -------------------------------------------------------------------------
_HOST = """\
## Driving it from a host

1. Read `ID` (must be `{magic:#010x}`), `VERSION`, `ISA` and `TAG`; compare `ISA` with
   `arch.regs.isa_hash()` and `TAG` with `zlib.crc32(cfg.tag.encode())` of the config the
   program was compiled for, and check that the program fits `PROG_DEPTH`.
2. Put the program's DRAM image at some address `B` of the memory behind `m_axi`, and write
   `B` to `DRAM_BASE`.
3. Write 0 to `PROG_ADDR`, then for each 128-bit word `PROG_DATA0` (bits 31:0) to
   `PROG_DATA3` (bits 127:96); the write to `PROG_DATA3` commits the word and advances
   `PROG_ADDR`.
4. Write the word count to `PROG_LEN` and 1 to `CTRL.start`.
5. Poll `STATUS` until `done`; `error` (`ErrCode`) and `ERR_INDEX` say whether and where it
   stopped; `CYCLES` is the core's cycle count of the run.
6. Read the results from the memory image (the program's output addresses plus `B`).

`verif/shell_host.py` is this sequence in Python (`ShellHost`), over any function that performs
one AXI4-Lite read or write; the tests drive it under the Amaranth simulator and under cocotb
(Verilator, cocotbext-axi's `AxiLiteMaster` and `AxiRam`).
"""

_PORTS = """\
## Ports

`rtl.shell.Shell(cfg, prog_depth)`, exported by `bitlut verilog` as `shell.v` (module `shell`):

- `clk`, `rst`: the one clock; `rst` is synchronous and active high (invert an AXI `ARESETn`);
- `irq`: a level interrupt, `STATUS.done` gated by `IRQ_ENABLE.done`;
- `s_axil_*`: an AXI4-Lite slave (`awaddr awprot awvalid awready wdata wstrb wvalid wready
  bresp bvalid bready araddr arprot arvalid arready rdata rresp rvalid rready`), {abits}-bit
  addresses, 32-bit data, the registers below. One write and one read are served at a time;
  AW and W may arrive in either order or together;
- `m_axi_*`: the AXI4 master of the DMA (`rtl.axi.AxiDma`): 32-bit addresses, data as wide as
  `dram.burst_bytes`, one ID, INCR bursts of at most 256 beats that never cross 4 KiB, at most
  `dram.outstanding` bursts in flight per direction. An error response (SLVERR, DECERR) stops
  the core with `ErrCode.BUS` and the DMA instruction's index in `ERR_INDEX`; the DMA still
  finishes every transaction it started, so the bus is left idle. Cycle counts through the
  shell depend on the memory's latency and are not the cycle model's.
"""


def reference_markdown():
    """`docs/shell.md`, generated from the table (a test keeps the checked-in copy fresh)."""
    out = ["# The FPGA shell: ports and registers", "",
           "Generated from `arch/regs.py` by `bitlut shell-doc`; do not edit by hand.", ""]
    out += [_PORTS.format(abits=ADDR_BITS), "## Registers", ""]
    out += [line.strip() for line in __doc__.strip().splitlines()[4:]]
    out += ["", "| offset | register | access | bits | field | meaning |", "|---" * 6 + "|"]
    for r in REGS:
        access = r.access + (", idle only" if r.idle_only else "")
        fields = r.fields or (Bits("", 0, DATA_BITS, r.doc),)
        for k, f in enumerate(fields):
            meaning = f.doc + (f" (at most {r.limit})" if r.limit else "")
            head = (f"| {r.offset:#04x} | `{r.name.upper()}` | {access} " if k == 0
                    else "| | | ")
            label = f"`{f.name}`" if f.name else ""
            out.append(f"{head}| {f.offset + f.width - 1}:{f.offset} | {label} | {meaning} |")
    out += ["", "## Error codes", "", "| `STATUS.error` | name | meaning |", "|---|---|---|"]
    docs = {"NONE": "the run ended at `finish`", "ILLEGAL": "an illegal instruction word",
            "RANGE": "a scratchpad extent past its buffer",
            "UNSUPPORTED": "an opcode this core does not run",
            "DEADLOCK": "no unit can ever move again", "OVERRUN": "dispatch ran past `PROG_LEN`",
            "BUS": "an AXI error response to the DMA instruction at `ERR_INDEX`"}
    out += [f"| {e.value} | `{e.name}` | {docs[e.name]} |" for e in ErrCode]
    out += ["", _HOST.format(magic=MAGIC)]
    return "\n".join(out).rstrip() + "\n"
