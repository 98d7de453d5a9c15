"""The host's side of the FPGA shell (`rtl.shell.Shell`): its registers by name (`arch.regs`),
and a program loaded, run and timed through them (docs/shell.md, Driving it from a host).

`ShellHost` is backend-neutral: it takes two async callables that perform one AXI4-Lite
transaction, `read(addr) -> (data, resp)` and `write(addr, data, strb) -> resp`; the
Amaranth-simulator bench (`verif.shell_tb`) and the cocotb one (`verif.cocotb_shell`, with
cocotbext-axi's `AxiLiteMaster`) supply them.
"""

from dataclasses import dataclass

from arch import regs
from arch.regs import DATA_BITS, ErrCode

__all__ = ["ShellHost", "BusError", "Outcome", "fields", "fields_value"]

RESP_OKAY = 0


class BusError(AssertionError):
    """A register access got another response than the one expected."""


def fields(name, value):
    """`{field: int}` of register `name`'s value (one entry, `value`, for a plain register)."""
    r = regs.reg(name)
    if r.fields is None:
        return {"value": value}
    return {f.name: value >> f.offset & ((1 << f.width) - 1) for f in r.fields}


@dataclass
class Outcome:
    """How a run through the shell ended."""
    error: ErrCode
    err_index: int
    cycles: int
    polls: int


class ShellHost:
    def __init__(self, read, write):
        self._read, self._write = read, write

    async def read(self, name, expect=RESP_OKAY):
        value, resp = await self._read(regs.reg(name).offset)
        if resp != expect:
            raise BusError(f"read of {name.upper()}: response {resp}, expected {expect}")
        return value

    async def write(self, name, value, strb=(1 << DATA_BITS // 8) - 1, expect=RESP_OKAY):
        resp = await self._write(regs.reg(name).offset, value, strb)
        if resp != expect:
            raise BusError(f"write of {value:#x} to {name.upper()}: response {resp}, "
                           f"expected {expect}")

    async def identify(self, cfg):
        """Check that the shell is a bitlut core for `cfg` with this ISA; returns its
        program memory's depth."""
        got = {n: await self.read(n) for n in ("id", "version", "isa", "tag")}
        want = {"id": regs.MAGIC, "version": regs.VERSION, "isa": regs.isa_hash(),
                "tag": regs.tag_hash(cfg)}
        if got != want:
            raise BusError(f"the shell must be a bitlut core for {cfg.tag} ({want}), not {got}")
        return await self.read("prog_depth")

    async def load(self, words, dram_base):
        """Write the program words and their count, and the DRAM base."""
        await self.write("dram_base", dram_base)
        await self.write("prog_addr", 0)
        mask = (1 << DATA_BITS) - 1
        for w in words:
            for i, name in enumerate(regs.PROG_DATA):
                await self.write(name, w >> (DATA_BITS * i) & mask)
        await self.write("prog_len", len(words))

    async def run(self, max_polls=100_000):
        """Start the loaded program and poll `STATUS` until it is done."""
        await self.write("ctrl", fields_value("ctrl", start=1))
        for polls in range(1, max_polls + 1):
            status = fields("status", await self.read("status"))
            if status["done"] and not status["running"]:
                return Outcome(ErrCode(status["error"]), await self.read("err_index"),
                               await self.read("cycles"), polls)
        raise BusError(f"STATUS.done did not rise in {max_polls} polls")

    async def run_program(self, cfg, program, dram_base, max_polls=100_000):
        """`identify`, `load` and `run` an `arch.program.Program`."""
        depth = await self.identify(cfg)
        if len(program.words) > depth:
            raise ValueError(f"a program of {len(program.words)} words must fit the shell's "
                             f"{depth}-word program memory")
        await self.load(program.words, dram_base)
        return await self.run(max_polls)


def fields_value(name, **values):
    """The value of register `name` with its fields set from `values`."""
    r = regs.reg(name)
    return sum(v << next(f.offset for f in r.fields if f.name == k) for k, v in values.items())
