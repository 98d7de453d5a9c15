"""The functional ISA executor: runs a `Program` word by word on its DRAM image, bit-exactly.

It is the reference that the SimPy cycle model and the RTL core are checked against, so it checks
everything the hardware assumes and reports a violation as an `ExecError` naming the instruction:
scratchpad and DRAM bounds, token discipline (a wait that no earlier signal can satisfy is a
deadlock; tokens left over at `finish` are unbalanced), accumulator overflow (an error, not a
wrap, unless the config says `saturate`), and illegal words.

The LUT path has an exact fast path (DESIGN.md section 9): when the tables an `lmma` reads are
byte for byte what a `tbl` built from activations x (and centroids), the lookup sums equal the
integer product x @ W^T of the weights the indices select, computed once in float64 (exact at
these magnitudes) with the decoded weights cached across row blocks. Any other table content
(stale, overwritten, never built) takes the per-lookup path. `Executor(fast=False)` forces it;
the tests run both on every program of the compiler's matrix.

Scheduling follows the hardware's decoupled queues: a dispatcher hands instructions, in program
order, to per-unit queues of `queues.insn_depth`; each unit runs its queue in order once the tokens
its instruction waits for are there; a signal into a full token FIFO (`queues.token_depth`) stalls
the producer. Among units that can run, consumers run first (store, vector, matmul, table, load):
a missing dependency token then lets a consumer read stale data, so the bit-exact tests catch it
instead of a lucky order hiding it.

The memory image (weight images, records, scratchpad layouts) is `arch.image`'s: the compiler
encodes with it and this executor decodes with it.
"""

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from arch import image, kv, nonlinear
from arch.image import ACC, ACT, BLOCK_PARAM, GATHER_INDEX, OUT, OUTLIER, PARAM, ROW_SCALE, SUMS
from arch.isa import Buffer, Deq, Ew, Mode, Opcode, Stat, Unit
from bitlut.errors import UserError
from sim.races import WRITES, RaceCheck, sram_sizes

#: The decoder block's opcodes (docs/block.md), whose fp32 functions have a domain.
BLOCK_OPS = frozenset({Opcode.VSTAT, Opcode.VNORM, Opcode.VQUANT, Opcode.VEW, Opcode.VROPE,
                       Opcode.VKVQ, Opcode.VSMAX, Opcode.VMV, Opcode.PACK})

# Consumers first: see the module docstring.
UNIT_ORDER = (Unit.STORE, Unit.VECTOR, Unit.MATMUL, Unit.TABLE, Unit.LOAD)


class ExecError(UserError):
    """The program broke a rule of the hardware (bounds, tokens, overflow)."""


@dataclass
class Stats:
    """What a run did, by unit and by memory level."""
    insns: Counter = field(default_factory=Counter)          # per opcode name
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    sram_bytes: Counter = field(default_factory=Counter)     # per buffer, loads + stores
    table_entries: int = 0                                   # entries built
    lookups: int = 0                                         # table reads (lane x plane)
    bitserial_steps: int = 0                                 # lane x plane steps
    macs: int = 0
    vector_ops: int = 0
    fast_insns: int = 0                                      # lmma run by the exact fast path


class Executor:
    """Run `program` on a machine described by `config`.

    Members
    -------
    dram : uint8 array, a copy of the program's image, updated by stores.
    sram : dict Buffer -> uint8 array of the scratchpad's capacity.
    stats : `Stats` of the run.
    """

    def __init__(self, config, program, fast=True, races=False):
        self.cfg = config
        self.program = program
        self.fast = fast
        self._table_source = {}     # table address -> (bytes, x, centroids) that `tbl` wrote
        self._weights = {}          # decoded LUT weights by index bytes (see `_decoded`)
        self.dram = program.dram.copy()
        self.sram = {b: np.zeros(config.sram.bytes(b.name.lower()), np.uint8) for b in Buffer}
        self.stats = Stats()
        self.insns = program.insns()
        # `races`: refuse a program whose result depends on timing (sim.races; run() only)
        self.races = RaceCheck(sram_sizes(self.sram), len(self.dram)) if races else None

    # -- memory access with bounds checks -------------------------------------------------------
    def _mem(self, i, insn, fname, buf, addr, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        mem = self.sram[buf]
        if addr + nbytes > len(mem):
            raise ExecError(f"insn {i} ({insn.op.name.lower()}): `{fname}` range "
                            f"[{addr:#x}, {addr + nbytes:#x}) must lie inside the "
                            f"{buf.name.lower()} buffer ({len(mem)} bytes), not past its end")
        if addr % dtype.itemsize:
            raise ExecError(f"insn {i} ({insn.op.name.lower()}): `{fname}` must be aligned to "
                            f"{dtype.itemsize} bytes, not {addr:#x}")
        if self.races is not None:
            self.races.access(buf, slice(addr, addr + nbytes), (insn.op, fname) in WRITES)
        return mem[addr:addr + nbytes].view(dtype).reshape(shape)

    def _image(self, i, insn, fname, addr, layout):
        """The raw bytes of a weight image of `layout` at `addr` of the weight buffer."""
        return self._mem(i, insn, fname, Buffer.WEIGHT, addr, (layout.nbytes,), np.uint8)

    def _acc_store(self, i, insn, dst, value):
        """Write int64 results into an int32 accumulator view, checking the range."""
        bits = self.cfg.pe.acc_bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if value.size and (value.min() < lo or value.max() > hi):
            if not self.cfg.pe.saturate:
                bad = value.max() if value.max() > hi else value.min()
                raise ExecError(f"insn {i} ({insn.op.name.lower()}): accumulator must stay in "
                                f"int{bits} [{lo}, {hi}], not {int(bad)} (overflow)")
            value = np.clip(value, lo, hi)
        dst[...] = value

    # -- the schedule ---------------------------------------------------------------------------
    def run(self):
        """Execute to `finish`; return `self.stats`."""
        depth = self.cfg.queues.insn_depth
        tdepth = self.cfg.queues.token_depth
        queues = {u: deque() for u in Unit}
        tokens = Counter()
        pc, n = 0, len(self.insns)
        finished = False
        while not finished:
            progressed = False
            while pc < n:
                insn = self.insns[pc]
                if insn.op is Opcode.NOP:
                    pc += 1
                    progressed = True
                    continue
                if insn.op is Opcode.FINISH:        # tokenless: `Program.insns` checks
                    if not any(queues.values()):
                        finished = True
                    break
                q = queues[insn.unit]
                if len(q) >= depth:
                    break
                q.append(pc)
                pc += 1
                progressed = True
            if finished:
                break
            for unit in UNIT_ORDER:
                q = queues[unit]
                while q:
                    i = q[0]
                    insn = self.insns[i]
                    waits = [u for u in Unit if insn.wait >> u.value & 1]
                    signals = [u for u in Unit if insn.signal >> u.value & 1]
                    if any(tokens[(u, unit)] == 0 for u in waits):
                        break
                    if any(tokens[(unit, u)] >= tdepth for u in signals):
                        break
                    for u in waits:
                        tokens[(u, unit)] -= 1
                    if self.races is not None:
                        self.races.start(i, insn, waits)
                    self.execute(i, insn)
                    if self.races is not None:
                        self.races.signal(signals)
                    for u in signals:
                        tokens[(unit, u)] += 1
                    q.popleft()
                    progressed = True
            if not progressed:          # (a program ends at a finish: `Program.insns`)
                raise ExecError("deadlock: " + self._blocked(queues, tokens, pc))
        left = {k: v for k, v in tokens.items() if v}
        if left:
            desc = ", ".join(f"{a.name.lower()}->{b.name.lower()}: {v}"
                             for (a, b), v in sorted(left.items(), key=lambda kv: str(kv[0])))
            raise ExecError(f"insn {pc} (finish): token FIFOs must be empty at finish, not "
                            f"holding {desc} (a signal without a matching wait)")
        return self.stats

    def _blocked(self, queues, tokens, pc):
        parts = []
        for unit in Unit:
            if not queues[unit]:
                continue
            i = queues[unit][0]
            insn = self.insns[i]
            need = [u.name.lower() for u in Unit
                    if insn.wait >> u.value & 1 and tokens[(u, unit)] == 0]
            full = [u.name.lower() for u in Unit
                    if insn.signal >> u.value & 1 and tokens[(unit, u)] >= self.cfg.queues.
                    token_depth]
            why = (f"waits for a token from {', '.join(need)}" if need
                   else f"signal FIFO to {', '.join(full)} is full")
            parts.append(f"{unit.name.lower()} at insn {i} ({insn.op.name.lower()}) {why}")
        if pc < len(self.insns):
            parts.append(f"dispatch at insn {pc} ({self.insns[pc].op.name.lower()}) is held")
        return "; ".join(parts)

    # -- instruction semantics -------------------------------------------------------------------
    def execute(self, i, insn):
        self.stats.insns[insn.op.name.lower()] += 1
        if insn.op not in BLOCK_OPS:
            getattr(self, f"_{insn.op.name.lower()}")(i, insn)
            return
        # the block's fp32 functions define their domain (arch.nonlinear raises ValueError
        # outside it: a non-finite score, a zero eps, a scale past fp16): the word's error
        try:
            getattr(self, f"_{insn.op.name.lower()}")(i, insn)
        except ValueError as e:
            raise ExecError(f"insn {i} ({insn.op.name.lower()}): operands must lie in the "
                            f"function's domain (arch.nonlinear), not: {e}") from None

    def _dma(self, i, insn, to_sram):
        a = insn.args
        buf = Buffer(a["buf"])
        rows, rb, stride = a["rows"], a["row_bytes"], a["dram_stride"]
        last = a["dram"] + (rows - 1) * stride + rb
        if last > len(self.dram):
            raise ExecError(f"insn {i} ({insn.op.name.lower()}): `dram` range must lie inside "
                            f"the DRAM image ({len(self.dram)} bytes), not end at {last:#x}")
        sram = self._mem(i, insn, "sram", buf, a["sram"], (rows, rb), np.uint8)
        starts = a["dram"] + stride * np.arange(rows)
        index = starts[:, None] + np.arange(rb)[None, :]
        if self.races is not None:
            self.races.access("dram", index.ravel(), write=not to_sram)
        if to_sram:
            sram[...] = self.dram[index]
            self.stats.dram_read_bytes += rows * rb
        else:
            self.dram[index] = sram
            self.stats.dram_write_bytes += rows * rb
        self.stats.sram_bytes[buf.name.lower()] += rows * rb

    def _load(self, i, insn):
        self._dma(i, insn, to_sram=True)

    def _store(self, i, insn):
        self._dma(i, insn, to_sram=False)

    def _tbl(self, i, insn):
        a, cfg = insn.args, self.cfg
        rows, ngroups = a["rows"], a["ngroups"]
        etype = image.table_dtype(cfg)
        if Mode(a["mode"]) is Mode.UNIFORM:
            g = cfg.pe.group
            x = self._mem(i, insn, "act", Buffer.ACT, a["act"], (rows, ngroups, g), ACT)
            x = x.astype(np.int64)
            idx = np.arange(1 << g)
            signs = 2 * ((idx[:, None] >> np.arange(g)) & 1) - 1          # [2^g, g]
            full = np.einsum("rjg,eg->rje", x, signs)
            table = full[:, :, 1::2] if cfg.pe.symmetric else full     # H[j] = T[(j<<1)|1]
            out = self._mem(i, insn, "tbl", Buffer.TABLE, a["tbl"], table.shape, etype)
            out[...] = table
            self._table_source[a["tbl"]] = (out.tobytes(), x.reshape(rows, -1), None)
            sums = self._mem(i, insn, "sums", Buffer.TABLE, a["sums"], (rows,), SUMS)
            sums[...] = x.sum(axis=(1, 2))
        else:
            b = a["bits"]
            g = self._codebook_group(i, insn, b)
            x = self._mem(i, insn, "act", Buffer.ACT, a["act"], (rows, ngroups, g), ACT)
            cb = self._mem(i, insn, "cb", Buffer.CODEBOOK, a["cb"], (ngroups, g, 1 << b),
                           cfg.centroid_dtype).astype(np.int64)
            idx = np.arange(1 << (g * b))
            codes = (idx[:, None] >> (b * np.arange(g))) & ((1 << b) - 1)     # [E, g]
            # picked[j, e, i] = C_{j,i}[code_i(e)]
            picked = cb[:, np.arange(g)[None, :], codes]                        # [ngroups, E, g]
            table = np.einsum("rjg,jeg->rje", x.astype(np.int64), picked)
            out = self._mem(i, insn, "tbl", Buffer.TABLE, a["tbl"], table.shape, etype)
            out[...] = table
            self._table_source[a["tbl"]] = (out.tobytes(), x.reshape(rows, -1).astype(np.int64),
                                            cb.reshape(ngroups * g, -1))
        self.stats.table_entries += table.size

    def _codebook_group(self, i, insn, b):
        try:
            return self.cfg.codebook_group(b)
        except UserError as e:
            raise ExecError(f"insn {i} ({insn.op.name.lower()}): `bits`: {e}") from None

    def _gather(self, i, insn):
        a = insn.args
        rows, cols = a["rows"], a["cols"]
        src = self._mem(i, insn, "src", Buffer.ACT, a["src"], (rows, cols), ACT).copy()
        idx = self._mem(i, insn, "idx", Buffer.CODEBOOK, a["idx"], (cols,), GATHER_INDEX)
        if idx.size and idx.max() >= cols:
            raise ExecError(f"insn {i} (gather): indices must be below cols ({cols}), "
                            f"not {int(idx.max())}")
        self._mem(i, insn, "dst", Buffer.ACT, a["dst"], (rows, cols), ACT)[...] = src[:, idx]

    def _cbx(self, i, insn):
        a, cfg = insn.args, self.cfg
        n, cols, b = a["n"], a["cols"], a["bits"]
        layout = image.codes_layout(n, cols, b)
        codes = layout.decode(self._image(i, insn, "src", a["src"], layout))
        cb = self._mem(i, insn, "cb", Buffer.CODEBOOK, a["cb"], (cols, 1 << b),
                       cfg.centroid_dtype)
        w = cb[np.arange(cols)[None, :], codes]
        self._mem(i, insn, "dst", Buffer.WEIGHT, a["dst"], (n, cols), cfg.centroid_dtype)[...] = w

    def _lmma(self, i, insn):
        a, cfg = insn.args, self.cfg
        rows, n, kg, bits = a["rows"], a["n"], a["kgroups"], a["bits"]
        mode = Mode(a["mode"])
        uniform = mode is Mode.UNIFORM
        if not uniform:
            self._codebook_group(i, insn, bits)
        entries = image.table_entries(cfg, mode, bits)
        table = self._mem(i, insn, "src", Buffer.TABLE, a["src"], (rows, kg, entries),
                          image.table_dtype(cfg))
        layout = image.matmul_layout(cfg, Opcode.LMMA, mode, n, kg, bits)
        wraw = self._image(i, insn, "wgt", a["wgt"], layout)
        planes = bits if uniform else 1
        self.stats.lookups += rows * n * kg * planes
        source = self._table_source.get(a["src"]) if self.fast else None
        if source is not None and source[0] == table.tobytes():
            # The tables are exactly what `tbl` built from (x, centroids): every lookup sum
            # equals x @ W^T with W the integer weights the indices select (LUT Tensor Core
            # Eq. 1-6), so one exact float64 product replaces rows*n*kg*planes lookups.
            x, cb = source[1], source[2]
            w = self._decoded(wraw, layout, cb)
            acc = np.rint(x.astype(np.float64) @ w.T).astype(np.int64)
            self.stats.fast_insns += 1
            self._accumulate(i, insn, rows, n, acc)
            return
        table = table.astype(np.int64)
        idx = layout.words(wraw)                         # [n, kg, bits] or [n, kg], as stored
        if uniform:
            if cfg.pe.symmetric:
                sign = 2 * (idx & 1) - 1
                vals = table[:, np.arange(kg)[None, :, None], idx >> 1] * sign
            else:
                vals = table[:, np.arange(kg)[None, :, None], idx]     # [rows, n, kg, bits]
            acc = (vals << np.arange(bits)).sum(axis=(2, 3))
        else:
            acc = table[:, np.arange(kg)[None, :], idx].sum(axis=2)
        self._accumulate(i, insn, rows, n, acc)

    def _decoded(self, wraw, layout, cb):
        """The integer weights [n, kg*g] that a block of LUT indices selects, cached by the
        index bytes (the same weights come back for every row block)."""
        key = (wraw.tobytes(), layout, None if cb is None else cb.tobytes())
        w = self._weights.get(key)
        if w is not None:
            return w
        codes = layout.decode(wraw)                      # [n, kg*g], inversion undone
        if layout.fmt == "uniform":
            w = 2 * codes - ((1 << layout.bits) - 1)     # sum_p 2^p (2 q_p - 1), Eq. 2
        else:
            w = cb[np.arange(layout.cols)[None, :], codes]
        w = w.astype(np.float64)
        if len(self._weights) > 4096:
            self._weights.clear()
        self._weights[key] = w
        return w

    def _accumulate(self, i, insn, rows, n, acc):
        dst = self._mem(i, insn, "dst", Buffer.ACC, insn.args["dst"], (rows, n), ACC)
        if insn.args["accumulate"]:
            acc = acc + dst.astype(np.int64)
        self._acc_store(i, insn, dst, acc)

    def _bsmm(self, i, insn):
        a, cfg = insn.args, self.cfg
        rows, n, kg, bits = a["rows"], a["n"], a["kgroups"], a["bits"]
        g = cfg.pe.group
        x = self._mem(i, insn, "src", Buffer.ACT, a["src"], (rows, kg * g), ACT)
        x = x.astype(np.int64)
        if Mode(a["mode"]) is Mode.UNIFORM:
            layout = image.matmul_layout(cfg, Opcode.BSMM, Mode.UNIFORM, n, kg, bits)
            w = layout.decode(self._image(i, insn, "wgt", a["wgt"], layout))   # the codes
        else:
            if bits != cfg.pe.centroid_bits:
                raise ExecError(f"insn {i} (bsmm): `bits` must be the centroid width "
                                f"({cfg.pe.centroid_bits}) in codebook mode, not {bits}")
            w = self._mem(i, insn, "wgt", Buffer.WEIGHT, a["wgt"], (n, kg * g),
                          cfg.centroid_dtype).astype(np.int64)
        # Serial over planes in hardware (the MSB plane of a two's-complement centroid is
        # weighted -2^(b-1)); the sum is the same integer as this product.
        acc = x @ w.T
        self.stats.bitserial_steps += rows * n * kg * bits
        self._accumulate(i, insn, rows, n, acc)

    def _mma(self, i, insn):
        a, cfg = insn.args, self.cfg
        rows, n, kg, bits = a["rows"], a["n"], a["kgroups"], a["bits"]
        k = kg * cfg.pe.group
        x = self._mem(i, insn, "src", Buffer.ACT, a["src"], (rows, k), ACT).astype(np.int64)
        if Mode(a["mode"]) is Mode.UNIFORM:
            layout = image.matmul_layout(cfg, Opcode.MMA, Mode.UNIFORM, n, kg, bits)
            w = layout.decode(self._image(i, insn, "wgt", a["wgt"], layout))
        else:
            w = self._mem(i, insn, "wgt", Buffer.WEIGHT, a["wgt"], (n, k),
                          cfg.centroid_dtype).astype(np.int64)
        self.stats.macs += rows * n * k
        self._accumulate(i, insn, rows, n, x @ w.T)

    def _vsum(self, i, insn):
        a = insn.args
        x = self._mem(i, insn, "act", Buffer.ACT, a["act"], (a["rows"], a["cols"]), ACT)
        self._mem(i, insn, "sums", Buffer.TABLE, a["sums"], (a["rows"],), SUMS)[...] = \
            x.astype(np.int64).sum(axis=1)
        self.stats.vector_ops += x.size

    def _vdeq(self, i, insn):
        a = insn.args
        rows, n, deq = a["rows"], a["n"], Deq(a["deq"])
        acc = self._mem(i, insn, "acc", Buffer.ACC, a["acc"], (rows, n), ACC).astype(np.int64)
        if deq is Deq.BLOCK:
            param = self._mem(i, insn, "param", Buffer.SCALE, a["param"], (1,), BLOCK_PARAM)
        else:
            param = self._mem(i, insn, "param", Buffer.SCALE, a["param"], (n,), PARAM)
        if deq is Deq.BLOCK:
            p = acc
        else:
            sums = self._mem(i, insn, "sums", Buffer.TABLE, a["sums"], (rows,), SUMS)
            corr = acc - param["zero"].astype(np.int64)[None, :] * sums.astype(np.int64)[:, None]
            if deq is Deq.LUT:
                if np.any(corr & 1):
                    raise ExecError(f"insn {i} (vdeq): LUT partials must be even before the "
                                    "halving shift, not odd (zero or sums inconsistent)")
                corr = corr >> 1
            p = corr
        y = param["scale"].astype(np.float32)[None, :] * p.astype(np.float32)
        if a["rowscale"]:
            # pe.act_quant token_group: the k-step's own activation scale per row, folded in
            at = a["param"] + image.rowscale_offset(deq is Deq.BLOCK, n)
            rs = self._mem(i, insn, "param", Buffer.SCALE, at, (rows,), ROW_SCALE)
            y = y * rs[:, None]
            self.stats.vector_ops += rows * n
        out = self._mem(i, insn, "out", Buffer.OUT, a["out"], (rows, n), OUT)
        if a["first"]:
            out[...] = y
        else:
            out[...] = out + y
        self.stats.vector_ops += rows * n

    def _vout(self, i, insn):
        a = insn.args
        rows, n, k, count = a["rows"], a["n"], a["k"], a["count"]
        rec = self._mem(i, insn, "list", Buffer.OUTLIER, a["list"], (count,), OUTLIER)
        x = self._mem(i, insn, "act", Buffer.ACT, a["act"], (rows, k), ACT)
        o = self._mem(i, insn, "out", Buffer.OUT, a["out"], (rows, n), OUT)
        if a["first"]:
            o[...] = 0.0
        if count and (rec["n"].max() >= n or rec["k"].max() >= k):
            raise ExecError(f"insn {i} (vout): outlier records must have n < {n} and k < {k}, "
                            f"not n={int(rec['n'].max())}, k={int(rec['k'].max())}")
        v = rec["v"].astype(np.float32)
        xs = x[:, rec["k"]].astype(np.float32)                          # [rows, count]
        # In list order, one record at a time: the float32 sum order is the contract, and
        # ufunc.at applies repeated indices one after another in index order.
        np.add.at(o, (slice(None), rec["n"].astype(np.int64)), xs * v)
        self.stats.vector_ops += rows * count

    def _vscale(self, i, insn):
        a = insn.args
        rows, n = a["rows"], a["n"]
        out = self._mem(i, insn, "out", Buffer.OUT, a["out"], (rows, n), OUT)
        s = self._mem(i, insn, "scale", Buffer.SCALE, a["scale"], (rows,), ROW_SCALE)
        if a["add"]:
            o = self._mem(i, insn, "corr", Buffer.OUT, a["corr"], (rows, n), OUT)
            out[...] = (out + o) * s[:, None]
        else:
            out[...] = out * s[:, None]
        self.stats.vector_ops += rows * n

    # -- the decoder block (docs/block.md; every fp32 step is arch.nonlinear's) ----------------
    def _rows(self, i, insn, fname, buf, addr, rows, n, tlog, dtype):
        """The [rows, n] operand at `addr` as (logical copy, write-back): row-major, or
        tile-major with 2^tlog columns a tile ([n / 2^t][rows][2^t])."""
        if not tlog:
            view = self._mem(i, insn, fname, buf, addr, (rows, n), dtype)

            def put(v):
                view[...] = v
            return view.copy(), put
        t = 1 << tlog
        if n % t:
            raise ExecError(f"insn {i} ({insn.op.name.lower()}): `n` must be a whole number of "
                            f"{t}-column tiles (tlog {tlog}), not {n}")
        view = self._mem(i, insn, fname, buf, addr, (n // t, rows, t), dtype)

        def put_tiles(v):
            view[...] = v.reshape(rows, n // t, t).transpose(1, 0, 2)
        return view.transpose(1, 0, 2).reshape(rows, n), put_tiles

    def _vstat(self, i, insn):
        a = insn.args
        rows, n, lanes = a["rows"], a["n"], self.cfg.timing.vector_lanes
        x, _ = self._rows(i, insn, "src", Buffer.OUT, a["src"], rows, n, a["tlog"], OUT)
        if Stat(a["stat"]) is Stat.SSQ:
            acc = self._mem(i, insn, "acc", Buffer.SCALE, a["acc"], (rows, lanes), OUT)
            start = None if a["first"] else acc.copy()
            acc[...] = nonlinear.lane_partials(x * x, lanes, start)
        else:
            acc = self._mem(i, insn, "acc", Buffer.SCALE, a["acc"], (rows,), OUT)
            m = nonlinear.lane_max(np.abs(x))
            acc[...] = m if a["first"] else np.maximum(acc, m)
        self.stats.vector_ops += rows * n

    def _vnorm(self, i, insn):
        a = insn.args
        rows, n, lanes = a["rows"], a["n"], self.cfg.timing.vector_lanes
        x = self._mem(i, insn, "src", Buffer.OUT, a["src"], (rows, n), OUT)
        w = self._mem(i, insn, "w", Buffer.SCALE, a["w"], (n,), OUT)
        acc = self._mem(i, insn, "acc", Buffer.SCALE, a["acc"], (rows, lanes), OUT)
        inv_n, eps = self._mem(i, insn, "consts", Buffer.SCALE, a["consts"], (2,), OUT)
        x[...] = nonlinear.rmsnorm_apply(x, w, nonlinear.lane_fold(acc), inv_n, eps)
        self.stats.vector_ops += rows * n

    def _vquant(self, i, insn):
        a = insn.args
        rows, n = a["rows"], a["n"]
        x, _ = self._rows(i, insn, "src", Buffer.OUT, a["src"], rows, n, a["tlog"], OUT)
        amax = self._mem(i, insn, "amax", Buffer.SCALE, a["amax"], (rows,), OUT)
        xq, sx = nonlinear.quantize_rows_with(x, amax)
        _, put = self._rows(i, insn, "dst", Buffer.ACT, a["dst"], rows, n, a["tlog"], ACT)
        put(xq)
        self._mem(i, insn, "sx", Buffer.SCALE, a["sx"], (rows,), ROW_SCALE)[...] = sx
        self.stats.vector_ops += rows * n

    def _vew(self, i, insn):
        a = insn.args
        shape = (a["rows"], a["n"])
        x = self._mem(i, insn, "a", Buffer.OUT, a["a"], shape, OUT).copy()
        y = self._mem(i, insn, "b", Buffer.OUT, a["b"], shape, OUT).copy()
        fn = Ew(a["fn"])
        if fn is Ew.ADD:
            r = x + y
        elif fn is Ew.MUL:
            r = x * y
        else:
            r = nonlinear.silu_mul(x, y)
        self._mem(i, insn, "dst", Buffer.OUT, a["dst"], shape, OUT)[...] = r
        self.stats.vector_ops += x.size

    def _vrope(self, i, insn):
        a = insn.args
        rows, heads, hd, step = a["rows"], a["heads"], a["hd"], a["step"]
        if hd % 2:
            raise ExecError(f"insn {i} (vrope): `hd` must be even, not {hd}")
        x = self._mem(i, insn, "src", Buffer.OUT, a["src"], (rows, heads, hd), OUT)
        cs = self._mem(i, insn, "cs", Buffer.SCALE, a["cs"], (-(-rows // step), hd), OUT)
        t = cs[np.arange(rows) // step]
        half = hd // 2
        x[...] = nonlinear.rope(x, t[:, :half], t[:, half:])
        self.stats.vector_ops += x.size

    def _vkvq(self, i, insn):
        a = insn.args
        rows, heads, hd = a["rows"], a["heads"], a["hd"]
        x = self._mem(i, insn, "src", Buffer.OUT, a["src"], (rows, heads * hd), OUT)
        self.stats.vector_ops += x.size
        if a["fp16"]:
            h16 = x.reshape(rows, heads, hd).transpose(1, 0, 2).astype(np.float16)
            self._mem(i, insn, "dst", Buffer.ACT, a["dst"], (heads, rows, hd),
                      np.float16)[...] = h16
            return
        bits, group = a["bits"], 1 << a["glog"]
        if bits not in kv.KV_FORMATS.values() or hd % group or hd * bits % 8:
            raise ExecError(f"insn {i} (vkvq): `bits` {bits} and group {group} must be a KV "
                            f"format's (2, 4 or 8 bits, a group dividing hd {hd})")
        codes, scales = nonlinear.quantize_kv(x, bits, group)
        packed = kv.encode_rows(codes.reshape(rows * heads, hd), bits)
        rb = packed.shape[1]
        dst = self._mem(i, insn, "dst", Buffer.ACT, a["dst"], (heads, rows, rb), np.uint8)
        dst[...] = packed.reshape(rows, heads, rb).transpose(1, 0, 2)
        j = hd // group
        rec = self._mem(i, insn, "param", Buffer.SCALE, a["param"], (heads, j, rows), PARAM)
        rec["scale"] = scales.reshape(rows, heads, j).transpose(1, 2, 0)
        rec["zero"] = 1 if a["lut"] else 1 << (bits - 1)

    def _vsmax(self, i, insn):
        a = insn.args
        rows, cols, lanes = a["rows"], a["cols"], self.cfg.timing.vector_lanes
        valid = a["valid"] + (np.arange(rows) // a["step"] if a["step"] else 0)
        if np.max(valid) > cols:
            raise ExecError(f"insn {i} (vsmax): valid columns must be at most cols ({cols}), "
                            f"not {int(np.max(valid))} (row {rows - 1})")
        s, put = self._rows(i, insn, "src", Buffer.OUT, a["src"], rows, cols, a["tlog"], OUT)
        p = nonlinear.softmax(s, np.broadcast_to(valid, (rows,)), lanes)
        if a["colscale"]:
            rec = self._mem(i, insn, "cs", Buffer.SCALE, a["cs"], (cols,), PARAM)
            p = p * rec["scale"].astype(np.float32)[None, :]
        put(p)
        self.stats.vector_ops += 3 * rows * cols

    def _vmv(self, i, insn):
        a = insn.args
        rows, n, k, lanes = a["rows"], a["n"], a["k"], self.cfg.timing.vector_lanes
        x = self._mem(i, insn, "src", Buffer.OUT, a["src"], (rows, k), OUT)
        w = self._mem(i, insn, "w", Buffer.WEIGHT, a["w"], (k, n) if a["trans"] else (n, k),
                      np.float16).astype(np.float32)
        if a["trans"]:
            w = w.T
        r = nonlinear.lane_sum(x[:, None, :] * w[None, :, :], lanes)
        dst = self._mem(i, insn, "dst", Buffer.OUT, a["dst"], (rows, n), OUT)
        dst[...] = dst + r if a["accumulate"] else r
        self.stats.vector_ops += rows * n * k

    def _pack(self, i, insn):
        a = insn.args
        n, cols, width, col0, bits = a["n"], a["cols"], a["width"], a["col0"], a["bits"]
        if col0 + cols > width:
            raise ExecError(f"insn {i} (pack): `col0 + cols` must be at most width ({width}), "
                            f"not {col0 + cols}")
        src = image.codes_layout(n, width, bits)
        codes = src.decode(self._mem(i, insn, "src", Buffer.WEIGHT, a["src"], (src.nbytes,),
                                     np.uint8))[:, col0:col0 + cols]
        if a["trans"]:
            codes = codes.T
        try:
            dst = image.weight_layout(self.cfg, "uniform", *codes.shape, bits)
        except ValueError as e:
            raise ExecError(f"insn {i} (pack): {e}") from None
        out = self._mem(i, insn, "dst", Buffer.WEIGHT, a["dst"], (dst.nbytes,), np.uint8)
        out[...] = dst.encode(codes)
        self.stats.vector_ops += n * cols


def run(config, program):
    """Execute `program`; return (dram image after the run, stats)."""
    ex = Executor(config, program)
    stats = ex.run()
    return ex.dram, stats
