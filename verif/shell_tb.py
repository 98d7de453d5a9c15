"""The FPGA shell (`rtl.shell.Shell`) under the Amaranth simulator: an AXI4-Lite master that
checks the slave's side of the protocol, with random channel order and back-pressure, and
`verif.axi_ram.AxiRam` behind the AXI4 master (it checks the master's side). `run` plays one
host coroutine (`verif.shell_host.ShellHost`) against a shell for `cfg`."""

import random

from amaranth.sim import Simulator

from rtl.shell import Shell

from .axi_ram import MASTER_OUT, AxiRam
from .shell_host import ShellHost

__all__ = ["LiteMaster", "run"]


class LiteMaster:
    """AXI4-Lite transactions on the shell's `s_axil_*` ports from an Amaranth testbench.
    `stall` is the probability that a valid or ready is held low in a cycle; an address and its
    data start after independent random delays (either may come first, or both together)."""

    def __init__(self, ctx, dut, rng, stall=0.3):
        self.ctx, self.dut, self.rng, self.stall = ctx, dut, rng, stall

    def _port(self, name):
        return getattr(self.dut, f"s_axil_{name}")

    def _delay(self):
        return self.rng.randrange(4) if self.rng.random() < self.stall else 0

    async def _send(self, channels):
        """Offer each `(prefix, payload, delay)` from its delay on until its handshake."""
        ctx, todo, cycle = self.ctx, list(channels), 0
        while todo:
            live = [c for c in todo if cycle >= c[2]]
            for prefix, payload, _ in live:
                for k, v in payload.items():
                    ctx.set(self._port(k), v)
                ctx.set(self._port(f"{prefix}valid"), 1)
            taken = [c for c in live if ctx.get(self._port(f"{c[0]}ready"))]
            await ctx.tick()
            for c in taken:
                ctx.set(self._port(f"{c[0]}valid"), 0)
                todo.remove(c)
            cycle += 1

    async def _receive(self, prefix, names):
        """Wait for `<prefix>valid`, holding ready low at random; the slave must keep valid
        and its payload until the handshake. Returns the payload."""
        ctx, held = self.ctx, None
        ready, valid = self._port(f"{prefix}ready"), self._port(f"{prefix}valid")
        while True:
            go = self.rng.random() >= self.stall
            ctx.set(ready, int(go))
            payload = tuple(ctx.get(self._port(n)) for n in names)
            if ctx.get(valid):
                if held is not None and held != payload:
                    raise AssertionError(f"{prefix}: payload changed before ready")
                held = payload
            elif held is not None:
                raise AssertionError(f"{prefix}valid dropped before ready")
            await ctx.tick()
            if go and held is not None:
                ctx.set(ready, 0)
                return payload

    async def write(self, addr, data, strb):
        await self._send([("aw", {"awaddr": addr}, self._delay()),
                          ("w", {"wdata": data, "wstrb": strb}, self._delay())])
        (resp,) = await self._receive("b", ("bresp",))
        return resp

    async def read(self, addr):
        await self._send([("ar", {"araddr": addr}, self._delay())])
        return await self._receive("r", ("rdata", "rresp"))


def run(cfg, host_fn, image=b"", ram_bytes=4 * 4096, prog_depth=64, seed=0, stall=0.3,
        errors=(), max_cycles=400_000):
    """Run `host_fn(host, peek)` (an async function of a `ShellHost` and of `peek(port)`, the
    value of one of the shell's ports now) against a `Shell(cfg, prog_depth)` whose AXI4
    master sees an `AxiRam` of `ram_bytes` holding `image` from address 0 (`errors`:
    `AxiRam`'s error injection). Returns (`host_fn`'s result, the RAM model)."""
    mem = bytearray(ram_bytes)
    mem[:len(image)] = bytes(image)
    ram = AxiRam(mem, cfg.dram.burst_bytes, seed=seed, stall=stall, errors=errors)
    dut = Shell(cfg, prog_depth)
    out = {}

    async def memory(ctx):
        for _ in range(max_cycles):
            for name, value in ram.drive().items():
                ctx.set(getattr(dut, f"m_axi_{name}"), value)
            ram.clock({n: ctx.get(getattr(dut, f"m_axi_{n}")) for n in MASTER_OUT})
            await ctx.tick()

    async def host(ctx):
        lite = LiteMaster(ctx, dut, random.Random(seed + 1), stall)

        def peek(port):
            return ctx.get(getattr(dut, port))
        out["result"] = await host_fn(ShellHost(lite.read, lite.write), peek)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(host)
    sim.run()
    return out["result"], ram
