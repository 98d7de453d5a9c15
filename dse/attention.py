"""The decoder block beyond its linear layers, for the sweep's workloads with a decode context.

Ref: LLaMA (Touvron et al. 2023) §2; GQA (Ainslie et al. 2023); docs/block.md.

A workload with `ctx` and `kv` runs its one-token phase (decode) as the whole block after `ctx`
cached tokens: the linear layers as before (`dse.evaluate`), plus two parts compiled by the
block compiler (`compiler.block.lower_block`, timing only, no image):

- **attention**: ONE KV head's attention (`ops=("attention",)`, `chunks=[(0, 0)]`), compiled
  on a one-head copy of the model's shape (`heads = G`, `kv_heads = 1`: head 0's instructions,
  only its DRAM addresses differ from the whole block's), then multiplied by `kv_heads`: every
  head runs the same instructions on its own slice of the cache;
- **vector**: the block's other operators without their linear layers (`linear=False`): the
  norms, the CLAQ gathers, RoPE and the cache write, the quantizations, SiLU and the residuals.

Each part is priced two ways. `estimate` (the cheap rung, every point) sums the `arch.timing`
closed form of every instruction per unit, the DMA transfers on the DRAM port and the events,
as `compiler.tiling.estimate` prices a layer's loop nest: the slowest unit bounds the part.
`simulate` (the sim rung) runs the same program on the SimPy cycle model. DRAM bytes are split
into the KV cache's (`kv.*` symbols) and the rest.

A point that cannot run the workload raises `Infeasible` with a one-line reason: a KV format
its PE array cannot multiply (`arch.kv.check_format`), or a context whose attention does not
fit its scratchpads (`compiler.block.ctx_capacity`: one query row's scores live whole in the
out buffer; no online softmax), naming the buffers and the sizes that would fit.

Compiled parts are cached per process: the attention by the config less what neither its
program's instruction shapes nor their closed forms read (the energy table, the clock, the
DRAM's bandwidth, latency and queue depths, the scratchpads' capacities, which move addresses
only once the context fits) with the shape, context and format, the DMAs' transfer cycles then
priced at each point's bandwidth; the vector part also by the scratchpads and the `.q` file.
SimPy runs are cached by the whole timing config.
"""

import bisect
import dataclasses

from arch import kv as kvmod
from arch import timing
from arch.config import SRAM_MAX_KIB
from arch.isa import MATMUL_OPCODE, Opcode
from bitlut.errors import UserError
from dse import keys

PARTS = ("attention", "vector")
# The scratchpad whose bytes an instruction's `sram_bytes` event is priced at (what it writes
# most of), as compiler.tiling prices a layer's: DMAs their own buffer's.
_SRAM_OF = {Opcode.TBL: "table", Opcode.VSUM: "table", Opcode.PACK: "weight",
            Opcode.CBX: "weight", Opcode.GATHER: "act", Opcode.VKVQ: "act",
            Opcode.VQUANT: "act", **{op: "acc" for op in MATMUL_OPCODE.values()}}
_estimates = {}
_sims = {}


class Infeasible(UserError):
    """A point that cannot run a workload: a context beyond its scratchpads' reach, or a KV
    format its PE array cannot multiply. Stored with its reason as status `infeasible`."""


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a decode block, for the whole block (all KV heads).

    Members: `cycles` (the slowest unit's, or SimPy's), `units` {unit: busy cycles, `dram`:
    transfer cycles}, `events` {counter: count, `sram_bytes` left out}, `sram` {buffer: bytes},
    `dram` {"kv": bus bytes, "other": bus bytes}, `instructions`."""
    cycles: int
    units: dict
    events: dict
    sram: dict
    dram: dict
    instructions: int

    @property
    def dram_bytes(self):
        return self.dram["kv"] + self.dram["other"]


def kv_format(config, shape, kv):
    """The `arch.kv.KVFormat` named `kv` for `config`, or `Infeasible`: a code width the PE
    array cannot multiply."""
    try:
        return kvmod.check_format(kv, config, shape.head_dim, where="KV format")
    except UserError as e:
        raise Infeasible(str(e)) from None


def check_context(config, shape, fmt, ctx):
    """None if one decode token after `ctx` cached ones fits the scratchpads (as
    `compiler.block.check_block` decides), else `Infeasible` naming each buffer that must grow
    and the smallest size that fits."""
    from compiler import block as blk
    tile = blk.attention_tile(config)
    ncols = -(-(ctx + 1) // tile) * tile
    g = shape.heads // shape.kv_heads
    if blk.attention_rows(config, shape, fmt, ncols, tile):
        return
    need, cfg = [], config
    while (buf := blk.attention_fits(cfg, shape, fmt, g, ncols, tile)) is not None:
        kib = _smallest_kib(cfg, shape, fmt, g, ncols, tile, buf)
        if kib is None:
            need.append(f"`sram.{buf}_kib` more than {SRAM_MAX_KIB}")
            break
        need.append(f"`sram.{buf}_kib` at least {kib} (not {getattr(config.sram, buf + '_kib')})")
        cfg = cfg.replace(sram=dataclasses.replace(cfg.sram, **{f"{buf}_kib": kib}))
    raise Infeasible(f"a {ctx}-token decode context must fit the scratchpads (a query row's "
                     f"scores live whole in the out buffer, no online softmax; {blk.SLOTS} K or "
                     f"V tiles of {tile} tokens are in flight in the weight buffer): "
                     + ", ".join(need))


def _smallest_kib(config, shape, fmt, rows, ncols, tile, buf):
    from compiler import block as blk
    lo, hi = getattr(config.sram, f"{buf}_kib") + 1, SRAM_MAX_KIB

    def fits(kib):
        cfg = config.replace(sram=dataclasses.replace(config.sram, **{f"{buf}_kib": kib}))
        return blk.attention_fits(cfg, shape, fmt, rows, ncols, tile) != buf
    if not fits(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _config_key(config, sram):
    """What a part's program and closed forms read of the config: less the energy table, the
    clock, the DRAM (but its burst) and the queues; less the scratchpads unless `sram`."""
    d = dataclasses.asdict(config)
    for k in ("name", "source", "energy", "clock_mhz", "queues"):
        d.pop(k, None)
    d["dram"] = {"burst_bytes": d["dram"]["burst_bytes"]}
    if not sram:
        d.pop("sram")
    return keys.key(d)


def _timing_key(config):
    """What a SimPy run reads of the config: all of it but the energy table and names."""
    d = dataclasses.asdict(config)
    for k in ("name", "source", "energy"):
        d.pop(k, None)
    return keys.key(d)


def one_head(shape):
    """`shape` with one KV head and its GQA group of query heads."""
    return dataclasses.replace(shape, heads=shape.heads // shape.kv_heads, kv_heads=1)


def compile_part(part, config, shape, plans, ctx, fmt):
    """The `compiler.block.CompiledBlock` of `part` for one decode token after `ctx` cached
    ones (`plans` {role: Plan} of the block's linear layers). The attention is one KV head's;
    the vector part runs after an empty cache (the cache write's cost does not depend on where
    the row goes), so one compile serves every context."""
    from compiler import block as blk
    if part == "attention":
        return blk.lower_block(one_head(shape), None, (None, None), config, 1, ctx, fmt,
                               image=False, plans=plans, ops=("attention",), chunks=[(0, 0)])
    ops = tuple(o for o in blk.OPERATORS if o != "attention")
    return blk.lower_block(shape, None, (None, None), config, 1, 0, fmt, image=False,
                           plans=plans, ops=ops, linear=False)


class _Categories:
    """DRAM address -> "kv" for the cache's symbols (`kv.*`), "other" for the rest."""

    def __init__(self, program):
        spans = sorted((s.addr, n) for n, s in program.symbols.items())
        self.starts = [a for a, _ in spans]
        self.names = [n for _, n in spans]

    def __call__(self, addr):
        i = bisect.bisect_right(self.starts, addr) - 1
        return "kv" if i >= 0 and self.names[i].startswith("kv.") else "other"


def _counts(config, program):
    """What the closed forms charge a compiled program, less the DRAM port's cycles (which the
    bandwidth sets): (busy cycles per unit, events, scratchpad bytes per buffer, DRAM bus bytes
    by category, {bus bytes of a DMA: how many}, instructions)."""
    units = {"matmul": 0, "table": 0, "vector": 0, "dispatch": 0}
    events, sram, dram, dmas = {}, {}, {"kv": 0, "other": 0}, {}
    category = _Categories(program)
    insns = program.insns()
    for insn in insns:
        if insn.unit is None:
            continue
        unit = insn.unit.name.lower()
        unit = "dispatch" if unit in ("load", "store") else unit
        units[unit] += timing.unit_cycles(config, insn)
        for name, v in timing.events(config, insn).items():
            if name == "sram_bytes":
                buf = (insn.args["buf"].name.lower() if insn.op in (Opcode.LOAD, Opcode.STORE)
                       else _SRAM_OF.get(insn.op, "out"))
                sram[buf] = sram.get(buf, 0) + v
                continue
            if name == "dram_bytes":
                dmas[v] = dmas.get(v, 0) + 1
                dram[category(insn.args["dram"])] += v
            events[name] = events.get(name, 0) + v
    return units, events, sram, dram, dmas, len(insns)


def _priced(config, counts, k):
    """The `Part` of `k` copies (the KV heads) of a program's `_counts` on `config`: each DMA's
    transfer on the DRAM port at the config's bandwidth, the slowest unit's cycles."""
    units, events, sram, dram, dmas, insns = counts
    units = {**units, "dram": sum(n * timing.dram_transfer_cycles(config, b)
                                  for b, n in dmas.items())}
    return _scaled(Part(max(units.values()), units, events, sram, dram, insns), k)


def program_cost(config, program):
    """Busy cycles per unit (`dispatch`: the load and store units' DMA setups; `dram`: each
    transfer's cycles on the DRAM port), events, scratchpad bytes per buffer and DRAM bus bytes
    by category of a compiled program, each instruction by the closed form the cycle model
    charges it (`arch.timing`); `cycles` is the slowest unit's."""
    return _priced(config, _counts(config, program), 1)


def _scaled(p, k):
    """`p` for `k` copies (the KV heads): cycles, counts and bytes times k."""
    def times(d):
        return {n: v * k for n, v in d.items()}
    return Part(p.cycles * k, times(p.units), times(p.events), times(p.sram), times(p.dram),
                p.instructions * k)


def _part_key(part, config_key, shape, ctx, fmt, checksum):
    """A cache key: the attention depends on the context, the vector part on the `.q` file."""
    return (part, config_key, keys.dumps(shape.as_json()), fmt,
            ctx if part == "attention" else None, checksum if part == "vector" else None)


def _heads(part, shape):
    return shape.kv_heads if part == "attention" else 1


def estimate(config, shape, plans, ctx, fmt, checksum):
    """{part: Part} of one decode block after `ctx` cached tokens by the closed forms
    (module docstring), cached per process. `checksum` names the `.q` file whose `plans` these
    are (the vector part's gathers follow its layers)."""
    out = {}
    for part in PARTS:
        key = _part_key(part, _config_key(config, sram=part == "vector"), shape, ctx, fmt,
                        checksum)
        if key not in _estimates:
            cb = compile_part(part, config, shape, plans, ctx, fmt)
            _estimates[key] = _counts(config, cb.program)
        out[part] = _priced(config, _estimates[key], _heads(part, shape))
    return out


def simulate(config, shape, plans, ctx, fmt, checksum):
    """{part: Part} of one decode block after `ctx` cached tokens by the SimPy cycle model
    (timing only), cached per process: `cycles` and `events` are the run's, the units' busy
    cycles its counters'; `sram` is the closed forms' split scaled to the run's scratchpad
    bytes; the DRAM bytes keep the closed forms' split by category, which is exact (the same
    transfers)."""
    from sim.cycle import simulate as cycle_simulate
    out = {}
    for part in PARTS:
        key = _part_key(part, _timing_key(config), shape, ctx, fmt, checksum)
        if key not in _sims:
            cb = compile_part(part, config, shape, plans, ctx, fmt)
            res, _ = cycle_simulate(config, cb.program, data=False)
            cost = program_cost(config, cb.program)
            events = dict(res.events)
            sram_total = events.pop("sram_bytes", 0)
            mix = sum(cost.sram.values())
            sram = {b: v * sram_total / mix for b, v in cost.sram.items()} if mix else {}
            busy = {u: c.busy for u, c in res.units.items()}
            units = {u: busy.get(u, 0) for u in ("matmul", "table", "vector")}
            units.update(dispatch=busy.get("load", 0) + busy.get("store", 0),
                         dram=res.dram_busy)
            one = Part(res.cycles, units, events, sram, cost.dram, res.insns)
            _sims[key] = _scaled(one, _heads(part, shape))
        out[part] = _sims[key]
    return out
