"""One cycle-by-cycle stream driver for every backend (Amaranth simulator and cocotb).

A `Scenario` is an ordered list of input beats (each addressed to one input stream), the expected
output beats, and the traffic pattern: when the source offers data (`valid`) and when the sink
accepts it (`ready`). `drive` plays it through a backend `adapter` and returns a `Trace`: the cycle
of every input and output handshake and the output payloads. `check` compares the outputs with the
expected ones and measures latency and initiation interval from the handshake cycles.

Cycle convention: cycle n is the interval before the n-th rising edge after the driver starts; a
handshake "in cycle n" is `valid & ready` sampled at that edge. Latency is the number of cycles
from the handshake of the input beat that completes an output to that output's handshake, with a
ready sink.

The adapter protocol (three awaitables and two accessors):
`cycle_start()`, `settle()` (inputs applied, combinational logic settled), `cycle_end()`,
`set(port, field, int)`, `get(port, field) -> int` with field in `valid`, `ready`, `payload`.
"""

import os
import random
from dataclasses import dataclass, field

from .payload import pack, unpack

__all__ = ["Scenario", "Trace", "drive", "check", "seed", "READY", "VALID"]


def seed(default=1):
    """The test seed: `BITLUT_SEED` from the environment, else `default`. Printed by the caller."""
    return int(os.environ.get("BITLUT_SEED", default))


def _always(rng, cycle):
    return True


def _random(rng, cycle):
    return rng.random() < 0.6


def _stall(rng, cycle):
    # A long stall early on (the array must freeze, then resume without a lost beat), then random.
    if 3 <= cycle < 25:
        return False
    return rng.random() < 0.7


READY = {"always": _always, "random": _random, "stall": _stall}
VALID = {"always": _always, "random": _random}


@dataclass
class Scenario:
    """Input beats, expected outputs and traffic for one run.

    Members
    -------
    name : str
    items : list of (port, value)
        Input beats in order; `value` is a nested dict/list for the port's layout.
    expected : list
        Expected output payloads (nested), in order.
    completes : list of int
        For each output, the index in `items` of the input beat that completes it.
    ready, valid : str
        Keys of `READY` and `VALID`: the sink's and the source's patterns.
    """
    name: str
    items: list
    expected: list
    completes: list
    ready: str = "always"
    valid: str = "always"
    meta: dict = field(default_factory=dict)


@dataclass
class Trace:
    """Handshake cycles and output payloads of one run."""
    in_cycles: list
    out_cycles: list
    outputs: list
    cycles: int


async def drive(adapter, layouts, out_port, scenario, rng_seed=0, max_cycles=None):
    """Play `scenario` through `adapter`. `layouts` maps port names (inputs and `out_port`) to
    their payload layouts. Returns a `Trace`."""
    rng_ready = random.Random(rng_seed * 7919 + 1)
    rng_valid = random.Random(rng_seed * 7919 + 2)
    ready_fn, valid_fn = READY[scenario.ready], VALID[scenario.valid]
    items = [(port, pack(layouts[port], value)) for port, value in scenario.items]
    in_ports = [p for p in layouts if p != out_port]
    n_out = len(scenario.expected)
    if max_cycles is None:
        max_cycles = 200 + 8 * (len(items) + n_out) + 4 * sum(1 for _ in layouts)
    pos, cycle = 0, 0
    in_cycles, out_cycles, outputs = [], [], []
    while (pos < len(items) or len(outputs) < n_out) and cycle < max_cycles:
        await adapter.cycle_start()
        offer = pos < len(items) and valid_fn(rng_valid, cycle)
        port = items[pos][0] if pos < len(items) else None
        for p in in_ports:
            adapter.set(p, "valid", int(offer and p == port))
        if offer:
            adapter.set(port, "payload", items[pos][1])
        ready = ready_fn(rng_ready, cycle)
        adapter.set(out_port, "ready", int(ready))
        await adapter.settle()
        took = offer and adapter.get(port, "ready")
        if ready and adapter.get(out_port, "valid"):
            out_cycles.append(cycle)
            outputs.append(unpack(layouts[out_port], adapter.get(out_port, "payload")))
        if took:
            in_cycles.append(cycle)
            pos += 1
        await adapter.cycle_end()
        cycle += 1
    return Trace(in_cycles, out_cycles, outputs, cycle)


def _first_diff(got, want, path="out"):
    if isinstance(want, dict):
        for k in want:
            d = _first_diff(got[k], want[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(want, list):
        for k, w in enumerate(want):
            d = _first_diff(got[k], w, f"{path}[{k}]")
            if d:
                return d
        return None
    return None if got == want else f"{path}: got {got}, expected {want}"


def check(scenario, trace, where=""):
    """Assert the outputs equal the expected ones, bit for bit. Returns the measured
    `(latencies, in_intervals)` lists: cycles from each completing input to its output, and the
    cycles between successive input handshakes."""
    tag = f"{where} scenario {scenario.name!r}"
    assert len(trace.in_cycles) == len(scenario.items), (
        f"{tag}: {len(trace.in_cycles)} of {len(scenario.items)} input beats accepted in "
        f"{trace.cycles} cycles")
    assert len(trace.outputs) == len(scenario.expected), (
        f"{tag}: {len(trace.outputs)} outputs, expected {len(scenario.expected)}")
    for k, (got, want) in enumerate(zip(trace.outputs, scenario.expected, strict=True)):
        diff = _first_diff(got, want)
        assert diff is None, f"{tag}: output {k}: {diff}"
    latencies = [trace.out_cycles[k] - trace.in_cycles[i]
                 for k, i in enumerate(scenario.completes)]
    intervals = [b - a for a, b in zip(trace.in_cycles, trace.in_cycles[1:], strict=False)]
    return latencies, intervals
