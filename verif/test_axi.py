"""The AXI4 master of the FPGA shell (`rtl.axi.AxiDma`) against an AXI RAM model that checks the
protocol (`verif.axi_ram`), in the Amaranth simulator: random and directed 2-D requests, random
back-pressure on every channel, bursts at 4 KiB boundaries, unaligned rows, error responses."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.axi import AxiDma
from rtl.core import DMA_CMD

from .axi_ram import MASTER_OUT, AxiRam
from .harness import seed


def _row_bytes(mem, dram, rows, row_bytes, stride):
    return [mem[dram + r * stride: dram + r * stride + row_bytes] for r in range(rows)]


def run_dma(requests, W=16, depth=4, ram_bytes=3 * 4096, stall=0.3, seed_=0, errors=(),
            base=0, max_cycles=200_000):
    """Runs `requests` [(kind, dram, rows, row_bytes, stride)] through an `AxiDma` against an
    `AxiRam`; returns (load beats per request, final RAM, RAM model, errors seen, idle at end).
    The core side keeps at most `depth` requests of a kind in flight, as the core does."""
    rng = np.random.default_rng(seed_)
    image = rng.integers(0, 256, ram_bytes, dtype=np.uint8)
    ram = AxiRam(image, W, seed=seed_, stall=stall, errors=errors)
    dut = AxiDma(DMA_CMD, W, depth)
    store_data = {}
    for i, (kind, _, rows, row_bytes, _) in enumerate(requests):
        if kind == "store":
            store_data[i] = [rng.integers(0, 256, row_bytes, dtype=np.uint8) for _ in range(rows)]
    out = {"beats": [], "errors": []}     # load beats in order (the core walks them by count)

    async def bench(ctx):
        ctx.set(dut.base, base)
        queue = {"load": [i for i, r in enumerate(requests) if r[0] == "load"],
                 "store": [i for i, r in enumerate(requests) if r[0] == "store"]}
        inflight = {"load": [], "store": []}
        beats = []          # store beats waiting for the master: (request, bytes)
        pick = random.Random(seed_)
        offered = False
        for _cycle in range(max_cycles):
            for kind, port in (("load", dut.rd_cmd), ("store", dut.wr_cmd)):
                go = (queue[kind] and len(inflight[kind]) < depth and pick.random() < 0.5)
                ctx.set(port.valid, int(bool(go)))
                if go:
                    i = queue[kind].pop(0)
                    _, dram, rows, row_bytes, stride = requests[i]
                    for f, v in (("dram", dram), ("rows", rows), ("row_bytes", row_bytes),
                                 ("dram_stride", stride)):
                        ctx.set(getattr(port.payload, f), v)
                    inflight[kind].append(i)
                    if kind == "store":
                        for row in store_data[i]:
                            beats += [(i, row[k:k + W]) for k in range(0, len(row), W)]
            # a stream: once offered, a beat stays valid until it is taken
            ready_beat = bool(beats) and (offered or pick.random() < 0.7)
            offered = ready_beat
            ctx.set(dut.wr_data.valid, int(ready_beat))
            if ready_beat:
                ctx.set(dut.wr_data.payload,
                        int.from_bytes(beats[0][1].tobytes().ljust(W, b"\0"), "little"))
            for name, value in ram.drive().items():
                ctx.set(getattr(dut.axi, name), value)
            sampled = {n: ctx.get(getattr(dut.axi, n)) for n in MASTER_OUT}
            if ctx.get(dut.rd_data.valid):
                out["beats"].append(ctx.get(dut.rd_data.payload))
            if ready_beat and ctx.get(dut.wr_data.ready):
                beats.pop(0)
                offered = False
            for kind, flag in (("load", dut.rd_error), ("store", dut.wr_error)):
                if ctx.get(flag):
                    out["errors"].append((kind, inflight[kind][0]))
            done = {"load": ctx.get(dut.rd_done), "store": ctx.get(dut.wr_done)}
            ram.clock(sampled)
            await ctx.tick()
            for kind in done:
                if done[kind]:
                    inflight[kind].pop(0)
            if out["errors"] and ctx.get(dut.idle) and ram.quiet:
                break
            if not any(queue.values()) and not any(inflight.values()) and ctx.get(dut.idle):
                break
        out["idle"] = ctx.get(dut.idle) and ram.quiet
        out["inflight"] = inflight

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out, image, ram, store_data


def _expect_ram(image, requests, store_data, base=0):
    mem = image.copy()
    for i, (kind, dram, rows, row_bytes, stride) in enumerate(requests):
        if kind == "store":
            for r in range(rows):
                a = base + dram + r * stride
                mem[a:a + row_bytes] = store_data[i][r]
    return mem


def _check_loads(out, image, requests, W, base=0):
    want = []
    for i, (kind, dram, rows, row_bytes, stride) in enumerate(requests):
        if kind == "load":
            for row in _row_bytes(image, base + dram, rows, row_bytes, stride):
                want += [(i, row[k:k + W]) for k in range(0, row_bytes, W)]
    got = out["beats"]
    assert len(got) == len(want), (len(got), len(want))
    for k, (g, (i, w)) in enumerate(zip(got, want, strict=True)):
        assert g.to_bytes(W, "little")[:len(w)] == w.tobytes(), f"request {i}, beat {k}"


def random_requests(rng, n, W, ram_bytes):
    reqs = []
    for _ in range(n):
        kind = rng.choice(["load", "store"])
        rows = rng.randint(1, 4)
        row_bytes = rng.choice([1, W - 1, W, W + 1, 3 * W + 5, rng.randint(1, 6 * W)])
        stride = row_bytes + rng.randint(0, 2 * W)
        dram = rng.randint(0, ram_bytes - rows * stride - 1)
        reqs.append((kind, dram, rows, row_bytes, stride))
    # stores to disjoint places so the expected RAM does not depend on their order
    return _disjoint_stores(reqs)


def _disjoint_stores(reqs):
    taken, keep = [], []
    for r in reqs:
        kind, dram, rows, row_bytes, stride = r
        span = (dram, dram + (rows - 1) * stride + row_bytes)
        if any(a < span[1] and span[0] < b for a, b in taken):
            continue
        if kind == "store":
            taken.append(span)
        keep.append(r)
    # and no load may read what a store writes (the order between the two is not fixed)
    return [r for r in keep if r[0] == "store" or not any(
        a < r[1] + (r[2] - 1) * r[4] + r[3] and r[1] < b for a, b in taken)]


@pytest.mark.parametrize("W", [4, 16, 64])
def test_random_requests_move_the_right_bytes(W):
    s = seed() + W
    rng = random.Random(s)
    print(f"seed {s}")
    ram_bytes = 4 * 4096
    reqs = random_requests(rng, 14, W, ram_bytes)
    out, image, ram, store_data = run_dma(reqs, W=W, ram_bytes=ram_bytes, seed_=s)
    assert not out["errors"] and out["idle"] and not any(out["inflight"].values()), out
    _check_loads(out, image, reqs, W)
    assert np.array_equal(ram.mem, _expect_ram(image, reqs, store_data))


def test_bursts_split_at_4k_and_256_beats():
    W = 4
    # a row across a 4 KiB boundary at an odd offset, and one longer than 256 beats
    reqs = [("load", 4096 - 10, 1, 40, 40), ("store", 2 * 4096 - 3, 1, 20, 20),
            ("load", 3 * 4096 + 4, 1, 300 * W, 300 * W)]
    out, image, ram, store_data = run_dma(reqs, W=W, ram_bytes=4 * 4096, seed_=seed())
    _check_loads(out, image, reqs, W)
    assert np.array_equal(ram.mem, _expect_ram(image, reqs, store_data))
    reads = [(a, n) for k, a, n in ram.log if k == "read"]
    # the first row: words 4084..4095 (3 words) then 4096.. (8 words); the RAM checked 4 KiB
    assert reads[0] == (4096 - 12, 3) and reads[1] == (4096, 8), reads
    assert max(n for _, n in reads) == 256 and sum(n for _, n in reads[2:]) == 300, reads


def test_no_back_pressure_and_full_back_pressure_agree():
    rng = random.Random(seed())
    reqs = random_requests(rng, 8, 16, 4 * 4096)
    results = [run_dma(reqs, W=16, ram_bytes=4 * 4096, stall=stall, seed_=3)
               for stall in (0.0, 0.8)]
    for out, image, ram, store_data in results:
        _check_loads(out, image, reqs, 16)
        assert np.array_equal(ram.mem, _expect_ram(image, reqs, store_data))


def test_base_register_offsets_every_address():
    reqs = [("load", 5, 2, 20, 33), ("store", 200, 2, 17, 40)]
    out, image, ram, store_data = run_dma(reqs, W=16, ram_bytes=3 * 4096, base=4096 + 7,
                                          seed_=seed())
    _check_loads(out, image, reqs, 16, base=4096 + 7)
    assert np.array_equal(ram.mem, _expect_ram(image, reqs, store_data, base=4096 + 7))


@pytest.mark.parametrize("kind", ["read", "write"])
def test_an_error_response_is_reported_and_the_bus_left_idle(kind):
    reqs = [("load", 0, 3, 100, 100), ("store", 2048, 3, 100, 100), ("load", 1000, 2, 64, 64),
            ("store", 4096, 2, 64, 64)]
    out, *_ = run_dma(reqs, W=16, errors={(kind, 1)}, seed_=seed())
    want = "load" if kind == "read" else "store"
    assert [k for k, _ in out["errors"]] == [want], out["errors"]
    assert out["idle"], "the master must finish every transaction it started"
