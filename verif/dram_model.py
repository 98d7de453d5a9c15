"""The DRAM behind the core's memory port, cycle by cycle, timed by the same `arch.timing`
functions as the cycle model (docs/core.md: the DMA rules).

A command seen in cycle q (the core's last setup cycle) starts its DRAM latency in cycle q + 1;
its transfer then holds the one port, first come first served (a load before a store seen in the
same cycle), for `dram_transfer_cycles` of its whole-burst bytes. Within that window the model
moves the request's beats, one a cycle from the window's first cycle, and pulses `done` in the
window's last cycle. A beat is `W` = `dram.burst_bytes` bytes of one row (the row's last beat
partial), so with `W` at least the DRAM's bytes per cycle every request's beats fit its window.

The model is plain Python, shared by the Amaranth-simulator and the cocotb test benches; it
raises `DramError` if the core breaks the port's contract (a store beat missing when pulled).
"""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from arch import timing

__all__ = ["DramModel", "DramError", "Request"]


class DramError(AssertionError):
    """The core broke the memory port's contract."""


@dataclass
class Request:
    kind: str                 # "load" | "store"
    seen: int                 # the cycle the command was presented
    begin: int                # first transfer cycle
    last: int                 # last transfer cycle (done)
    beats: list               # (DRAM address, bytes) in order
    moved: int = 0
    data: list = field(default_factory=list)


class DramModel:
    """DRAM image `image` (uint8, copied) behind the port of a core for `cfg`."""

    def __init__(self, cfg, image):
        self.cfg = cfg
        self.mem = np.array(image, np.uint8).copy()
        self.W = cfg.dram.burst_bytes
        if self.W < cfg.dram_bytes_per_cycle:
            raise ValueError(f"dram.burst_bytes ({self.W}) must be at least the DRAM's bytes per "
                             f"cycle ({cfg.dram_bytes_per_cycle:g}): one beat a cycle")
        self.port_free = 0
        self.pending = deque()          # requests in port order
        self.requests = []

    def command(self, cycle, kind, dram, rows, row_bytes, stride):
        """A command presented in `cycle`: schedule its transfer."""
        nbytes = timing.dram_bytes(self.cfg, rows, row_bytes)
        arrive = cycle + 1 + self.cfg.dram_latency_cycles
        begin = max(arrive, self.port_free)
        cycles = timing.dram_transfer_cycles(self.cfg, nbytes)
        self.port_free = begin + cycles
        beats = [(dram + r * stride + k * self.W, min(self.W, row_bytes - k * self.W))
                 for r in range(rows) for k in range(-(-row_bytes // self.W))]
        end = dram + (rows - 1) * stride + row_bytes
        if end > len(self.mem):
            raise DramError(f"{kind} of [{dram:#x}, {end:#x}) outside the {len(self.mem)}-byte "
                            "DRAM image")
        req = Request(kind, cycle, begin, begin + cycles - 1, beats)
        assert len(beats) <= cycles, "a request's beats must fit its transfer window"
        self.pending.append(req)
        self.requests.append(req)
        return req

    def _current(self, cycle):
        while self.pending and self.pending[0].last < cycle:
            self.pending.popleft()
        if self.pending and self.pending[0].begin <= cycle:
            return self.pending[0]
        return None

    def outputs(self, cycle):
        """What the port drives in `cycle`: (load beat bytes or None, load done, store pull,
        store done)."""
        req = self._current(cycle)
        beat = pull = None
        rd_done = wr_done = False
        if req is not None:
            if req.moved < len(req.beats):
                if req.kind == "load":
                    addr, n = req.beats[req.moved]
                    beat = self.mem[addr:addr + n].tobytes().ljust(self.W, b"\0")
                    req.moved += 1
                else:
                    pull = req
            if cycle == req.last:
                rd_done, wr_done = req.kind == "load", req.kind == "store"
        return beat, rd_done, pull, wr_done

    def store_beat(self, req, valid, payload):
        """The core's `wr_data` in a cycle the port pulls for `req`."""
        if not valid:
            raise DramError(f"store beat {req.moved} of the command seen in cycle {req.seen} "
                            "was not ready when the port pulled it")
        addr, n = req.beats[req.moved]
        self.mem[addr:addr + n] = np.frombuffer(payload.to_bytes(self.W, "little")[:n], np.uint8)
        req.moved += 1

    def check_done(self, req):
        if req.moved != len(req.beats):
            raise DramError(f"{req.kind} seen in cycle {req.seen} moved {req.moved} of "
                            f"{len(req.beats)} beats by its last cycle")
