"""An AXI4 slave RAM, cycle by cycle, in plain Python (backend-neutral like `dram_model`): the
memory behind the FPGA shell's master in the tests, and the protocol checker of that master.

Each cycle the bench calls `drive()` for the slave's outputs (ready and valid signals with
random back-pressure from a seeded generator), samples the master's outputs, then `clock(...)`
with both sides' values: handshakes happen where valid and ready were both high. The model
raises `AxiViolation` when the master breaks AXI4 (ARM IHI 0022E): a burst over 256 beats or
across 4 KiB, an unaligned or non-INCR burst of the wrong size, `wlast` in the wrong place,
data for a burst whose address was not sent (this master promises that order), a valid
dropped before its handshake, or payload changed while waiting.
"""

import random
from collections import deque

import numpy as np

__all__ = ["AxiRam", "AxiViolation", "MASTER_OUT", "SLAVE_OUT"]

MASTER_OUT = ("arvalid", "araddr", "arlen", "arsize", "arburst", "awvalid", "awaddr", "awlen",
              "awsize", "awburst", "wvalid", "wdata", "wstrb", "wlast", "rready", "bready")
SLAVE_OUT = ("arready", "awready", "wready", "rvalid", "rdata", "rresp", "rlast", "bvalid",
             "bresp")


class AxiViolation(AssertionError):
    """The master broke the AXI4 protocol."""


class AxiRam:
    """`mem` (uint8, copied) behind a `W`-byte AXI4 slave. `stall` is the probability that a
    ready or valid is held low in a cycle; `latency` cycles between a read address and its first
    data; `errors` a set of (kind, n): the n-th read or write burst answers SLVERR."""

    def __init__(self, mem, W, seed=0, stall=0.3, latency=3, errors=()):
        self.mem = np.array(mem, np.uint8).copy()
        self.W, self.rng, self.stall, self.latency = W, random.Random(seed), stall, latency
        self.errors = set(errors)
        self.cycle = 0
        self.reads = deque()        # [ready cycle, addr, beats left, resp]
        self.writes = deque()       # [addr, beats left, resp, burst beats]
        self.responses = deque()    # write responses to send
        self.bursts = {"read": 0, "write": 0}
        self.log = []               # (kind, address, beats)
        self._held = {}             # channel: payload while valid is high without ready
        self._out = {}

    def _free(self):
        return self.rng.random() >= self.stall

    def drive(self):
        """The slave's outputs for this cycle: a dict of signal name to value."""
        out = {"arready": int(self._free()), "awready": int(self._free()),
               "wready": int(self._free() and bool(self.writes)), "rvalid": 0, "rdata": 0,
               "rresp": 0, "rlast": 0, "bvalid": 0, "bresp": 0}
        if self.reads and self.reads[0][0] <= self.cycle and self._free():
            _, addr, left, resp = self.reads[0]
            out.update(rvalid=1, rlast=int(left == 1), rresp=resp,
                       rdata=int.from_bytes(self.mem[addr:addr + self.W].tobytes(), "little"))
        if self.responses and self._free():
            out.update(bvalid=1, bresp=self.responses[0])
        self._out = out
        return out

    def _check_burst(self, kind, addr, length, size, burst):
        beats = length + 1
        if burst != 1 or (1 << size) != self.W:
            raise AxiViolation(f"{kind} burst type {burst} size {1 << size}: want INCR, "
                               f"{self.W} bytes")
        if addr % self.W:
            raise AxiViolation(f"{kind} address {addr:#x} not aligned to {self.W} bytes")
        if addr // 4096 != (addr + beats * self.W - 1) // 4096:
            raise AxiViolation(f"{kind} burst at {addr:#x} of {beats} beats crosses 4 KiB")
        if addr + beats * self.W > len(self.mem):
            raise AxiViolation(f"{kind} burst at {addr:#x} past the {len(self.mem)}-byte RAM")
        self.log.append((kind, addr, beats))
        n = self.bursts[kind]
        self.bursts[kind] += 1
        return 2 if (kind, n) in self.errors else 0

    def _stable(self, channel, valid, ready, payload):
        held = self._held.get(channel)
        if held is not None and (not valid or held != payload):
            raise AxiViolation(f"{channel}: valid dropped or payload changed before ready")
        self._held[channel] = payload if valid and not ready else None

    def clock(self, s):
        """End of the cycle: `s` holds the master's outputs (`ar*`, `aw*`, `w*`, `rready`,
        `bready`) as sampled this cycle."""
        o = self._out
        self._stable("ar", s["arvalid"], o["arready"], (s["araddr"], s["arlen"]))
        self._stable("aw", s["awvalid"], o["awready"], (s["awaddr"], s["awlen"]))
        self._stable("w", s["wvalid"], o["wready"], (s["wdata"], s["wstrb"], s["wlast"]))
        if s["arvalid"] and o["arready"]:
            resp = self._check_burst("read", s["araddr"], s["arlen"], s["arsize"], s["arburst"])
            self.reads.append([self.cycle + self.latency, s["araddr"], s["arlen"] + 1, resp])
        if o["rvalid"] and s["rready"]:
            r = self.reads[0]
            r[1] += self.W
            r[2] -= 1
            if r[2] == 0:
                self.reads.popleft()
        if s["wvalid"] and o["wready"]:
            w = self.writes[0]
            for b in range(self.W):
                if s["wstrb"] >> b & 1:
                    self.mem[w[0] + b] = s["wdata"] >> (8 * b) & 0xFF   # not an ISA field
            if bool(s["wlast"]) != (w[1] == 1):
                raise AxiViolation(f"wlast {s['wlast']} with {w[1]} beats of the burst left")
            w[0] += self.W
            w[1] -= 1
            if w[1] == 0:
                self.writes.popleft()
                self.responses.append(w[2])
        elif s["wvalid"] and not self.writes:
            raise AxiViolation("write data before its burst's address")
        if s["awvalid"] and o["awready"]:
            resp = self._check_burst("write", s["awaddr"], s["awlen"], s["awsize"], s["awburst"])
            self.writes.append([s["awaddr"], s["awlen"] + 1, resp, s["awlen"] + 1])
        if o["bvalid"] and s["bready"]:
            self.responses.popleft()
        self.cycle += 1

    @property
    def quiet(self):
        return not (self.reads or self.writes or self.responses)
