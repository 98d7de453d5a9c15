"""What one instruction costs: cycles on its unit and the events it causes (for energy).

One definition, read by the SimPy cycle model (`sim.cycle`), the compiler's cost model
(`compiler.tiling`) and the roofline, so they cannot drift apart. The cycle counts are closed
forms of the PE pipeline with the latencies and initiation intervals of `config.timing`, which
the RTL tests measure (DESIGN.md section 9: one event per instruction, not per tile).

- LUT array: `ceil(rows / pe.rows) * ceil(n / pe.cols)` tiles, each `kgroups` table groups deep,
  one bit plane per `pe_ii` cycles (uniform: `bits` planes; codebook: one lookup per group),
  plus the pipeline depth (`pe_latency`, from a tile's last beat to its result) once per
  instruction.
- Bit-serial array: the same walk with `bits` planes (the centroid width in codebook mode).
- MAC array (weight-stationary, as SCALE-Sim v3 models it): `ceil(K / R) * ceil(n / C)` folds,
  each `2R + C + rows - 2` cycles (weight preload R, skew R - 1, stream `rows`, drain C - 1)
  plus the PE's `pe_latency`, plus the sequencer's `matmul_overhead` once per instruction.
- Table unit: one table (one row, one group) per `table_ii` cycles, after the scratchpad read
  in front of the table unit; `gather` and `cbx` one chunk of `pe.cols` elements of a row per
  cycle, after two scratchpad reads (`rtl.table_seq`).
- Vector unit: `vector_lanes` elements per cycle plus its pipeline depth.
- DMA: `dma_setup` cycles on the unit; DRAM latency; the bytes rounded up to whole bursts at the
  DRAM's bytes per cycle.
"""

import math

from arch.isa import Mode, Opcode

# What the hardware does, counted: one vocabulary for the executor's `Stats`, the events of
# `events` (what the cycle model charges energy for) and the compiler's estimate. Each counter is
# priced by one field of the config's energy table.
ENERGY_FIELD = {
    "lookups": "lookup_pj",                 # table reads (LUT lane x bit plane)
    "table_entries": "table_entry_pj",      # table entries built
    "bitserial_steps": "bitserial_step_pj", # bit-serial lane x plane steps
    "macs": "mac_pj",                       # int8 multiply-accumulates
    "vector_ops": "vector_op_pj",           # vector-unit element operations
    "sram_bytes": "sram_byte_pj",           # scratchpad bytes read or written
    "dram_bytes": "dram_byte_pj",           # DRAM bytes moved (whole bursts)
}
COUNTERS = tuple(ENERGY_FIELD)
#: The entry width `energy.table_entry_pj` is given for (the shipped tables: one 16-bit add).
ENERGY_ENTRY_BITS = 16
MATMUL_COUNTER = {Opcode.LMMA: "lookups", Opcode.BSMM: "bitserial_steps", Opcode.MMA: "macs"}


def matmul_cycles(config, op, rows, n, kgroups, planes):
    """Cycles of one matmul instruction on the PE array, pipeline depth included.

    LUT and bit-serial: the tiles' beats back to back, then `pe_latency` once, plus
    `matmul_overhead` (`rtl.matmul_unit.OVERHEAD`: the sequencer's start and the scratchpad
    read before the first beat reaches the array; the last tile is written back in the cycle
    it leaves the array). MAC: the folds back to back (`mac_fold_cycles`), plus the same
    `matmul_overhead` once (the start, and the read of the first weight row before the array
    takes it; the last fold's last result is written in the cycle it leaves the array)."""
    pe, t = config.pe, config.timing
    if op is Opcode.MMA:
        k = kgroups * pe.group
        return (math.ceil(k / pe.rows) * math.ceil(n / pe.cols) * mac_fold_cycles(config, rows)
                + t.matmul_overhead)
    return (math.ceil(rows / pe.rows) * math.ceil(n / pe.cols) * kgroups * planes * t.pe_ii
            + t.pe_latency + t.matmul_overhead)


def mac_fold_cycles(config, rows):
    """Cycles one weight-stationary fold of `rows` token rows occupies the MAC array, from its
    first weight row to the next fold's: SCALE-Sim's `2R + C + rows - 2` plus the PE's
    `pe_latency` (the RTL loads the next fold's weights only once the array has drained;
    verif/benches.py pins it on the array, `rtl.matmul_unit.mma_fold_cycles` is the core's), so
    a config with `pe_latency: 0` is SCALE-Sim's ideal array."""
    pe = config.pe
    return 2 * pe.rows + pe.cols + rows - 2 + config.timing.pe_latency


def matmul_count(config, op, rows, n, kgroups, planes):
    """The PE-array work of one matmul, in its counter (`MATMUL_COUNTER[op]`): lookups and
    bit-serial steps are lane x group x plane; MACs are lane x group x the group's columns."""
    if op is Opcode.MMA:
        return rows * n * kgroups * config.pe.group
    return rows * n * kgroups * planes


def matmul_planes(config, op, mode, bits):
    """Bit planes a matmul walks: uniform `bits`; codebook 1 lookup (lut) or the centroid width
    (bit-serial)."""
    if mode is Mode.UNIFORM or op is Opcode.MMA:
        return bits
    return 1 if op is Opcode.LMMA else config.pe.centroid_bits


def dram_bytes(config, rows, row_bytes):
    """Bytes a DMA moves on the DRAM bus: each row rounded up to whole bursts."""
    burst = config.dram.burst_bytes
    return rows * math.ceil(row_bytes / burst) * burst


def dram_transfer_cycles(config, nbytes):
    """Cycles the DRAM port needs for `nbytes`, rounded up exactly (a fraction, not a float, so
    the cycle model and the RTL's memory model cannot drift apart)."""
    return math.ceil(nbytes / config.dram_bytes_per_cycle_exact)


def dma_cycles(config, insn):
    """A DMA instruction occupies its unit for the setup only; the transfer is the DRAM port's
    (`dram_transfer_cycles`), after the latency."""
    return config.timing.dma_setup


def table_cycles(config, insn):
    """`tbl`: one table (one token row, one group) per `table_ii`, plus the scratchpad read in
    front of the table unit (`table_read_latency`) and the unit's pipeline depth; the last busy
    cycle writes the last table (`rtl.table_seq.tbl_latency`)."""
    t = config.timing
    return (insn.args["rows"] * insn.args["ngroups"] * t.table_ii + t.table_read_latency
            + t.table_latency)


def table_unit_stream_cycles(config, insn):
    """`gather` and `cbx`: each row (`rows`, or cbx's `n`) in chunks of `pe.cols` elements,
    one a cycle (a row's last chunk may be partial), plus `table_stream_latency`: the chunk's
    index or code read, then the lanes' element reads (`rtl.table_seq.STREAM_LATENCY`)."""
    a = insn.args
    rows = a["rows"] if insn.op is Opcode.GATHER else a["n"]
    return rows * math.ceil(a["cols"] / config.pe.cols) + config.timing.table_stream_latency


def matmul_insn_cycles(config, insn):
    """`lmma`, `bsmm`, `mma`: `matmul_cycles` of the instruction's block."""
    a = insn.args
    planes = matmul_planes(config, insn.op, Mode(a["mode"]), a["bits"])
    return matmul_cycles(config, insn.op, a["rows"], a["n"], a["kgroups"], planes)


# The elements each vector instruction processes: (field, field) whose product they are.
VECTOR_ELEMENTS = {Opcode.VSUM: ("rows", "cols"), Opcode.VDEQ: ("rows", "n"),
                   Opcode.VSCALE: ("rows", "n"), Opcode.VOUT: ("rows", "count")}


#: Fewest cycles one `vout` record takes: the latency of the vector unit's fp32 adder
#: (`rtl.fp32.FAdd`), so that a record's running sums have left the adder before the next record
#: adds to them (the list order is the float32 sum order). `rtl.vector_unit.RECORD_SLOTS` is the
#: RTL's; verif/test_core_vector.py pins the two equal.
VOUT_RECORD_CYCLES = 4

#: Extra pipeline depth of a `vdeq` with `rowscale` (pe.act_quant token_group): the k-step's row
#: scale is a second fp32 multiply after the record's, one more `rtl.fp32.FMul` (3 stages) in
#: front of the adder; the throughput stays `vector_lanes` a cycle. It is the RTL's
#: `rtl.vector_unit.ROWSCALE_DEPTH` (tests/test_act_quant.py, verif/test_core_vector.py).
ROWSCALE_CYCLES = 3


def vector_insn_cycles(config, insn):
    """Vector instructions, as the RTL core's vector unit walks them, then its pipeline depth
    (`vector_latency`) once: `vsum`, `vdeq`, `vscale` row by row, `vector_lanes` elements a
    cycle (a row's last chunk may be partial; a `vdeq` with `rowscale` adds
    `ROWSCALE_CYCLES`); `vout` zeroes its rows x n outputs the same way
    when `first`, then takes each record in list order, one row a cycle, at least
    `VOUT_RECORD_CYCLES` a record."""
    a, t = insn.args, config.timing
    lanes = t.vector_lanes
    if insn.op is Opcode.VSUM:
        steps = a["rows"] * math.ceil(a["cols"] / lanes)
    elif insn.op in (Opcode.VDEQ, Opcode.VSCALE):
        steps = a["rows"] * math.ceil(a["n"] / lanes)
        if a.get("rowscale"):
            steps += ROWSCALE_CYCLES
    else:
        steps = (a["first"] * a["rows"] * math.ceil(a["n"] / lanes)
                 + a["count"] * max(a["rows"], VOUT_RECORD_CYCLES))
    return steps + t.vector_latency


#: Cycles of a row's scalar tail on the vector unit, for the block's operators that end a row
#: with one: folding the `vector_lanes` partial sums (`arch.nonlinear.lane_fold`) and a
#: reciprocal or rsqrt (three Newton steps of dependent fp32 multiplies and adds). The model's
#: assumption until the RTL core runs these opcodes (docs/block.md), which will measure it.
ROW_TAIL_CYCLES = 48

#: The passes `vsmax` makes over a row: max, exp and sum, normalize (and colscale).
SOFTMAX_PASSES = 3


def block_vector_cycles(config, insn):
    """The decoder block's vector instructions (docs/block.md), `vector_lanes` elements a cycle
    per pass over their operand, `ROW_TAIL_CYCLES` per row where a row ends in a reduction's
    scalar (vnorm, vquant, vsmax, and vkvq per scale group), then `vector_latency` once."""
    a, t = insn.args, config.timing
    lanes = t.vector_lanes
    op = insn.op
    if op is Opcode.VROPE:
        return a["rows"] * a["heads"] * math.ceil(a["hd"] / lanes) + t.vector_latency
    if op is Opcode.VKVQ:
        beats = a["rows"] * a["heads"] * math.ceil(a["hd"] / lanes)
        if a["fp16"]:
            return beats + t.vector_latency
        groups = a["rows"] * a["heads"] * (a["hd"] >> a["glog"])
        return 2 * beats + groups * ROW_TAIL_CYCLES + t.vector_latency
    if op is Opcode.VSMAX:
        return (SOFTMAX_PASSES * a["rows"] * math.ceil(a["cols"] / lanes)
                + a["rows"] * ROW_TAIL_CYCLES + t.vector_latency)
    if op is Opcode.VMV:
        return a["rows"] * a["n"] * math.ceil(a["k"] / lanes) + t.vector_latency
    steps = a["rows"] * math.ceil(a["n"] / lanes)
    if op in (Opcode.VNORM, Opcode.VQUANT):
        steps += a["rows"] * ROW_TAIL_CYCLES
    return steps + t.vector_latency


def pack_cycles(config, insn):
    """`pack`: each source row in chunks of `pe.cols` codes, one a cycle, as `cbx` walks its
    rows, plus `table_stream_latency`."""
    a = insn.args
    return a["n"] * math.ceil(a["cols"] / config.pe.cols) + config.timing.table_stream_latency


def block_vector_elements(insn):
    """Elements the block's vector and pack instructions touch, each pass counted (the
    `vector_ops` counter)."""
    a, op = insn.args, insn.op
    if op in (Opcode.VROPE, Opcode.VKVQ):
        return a["rows"] * a["heads"] * a["hd"] * (2 if op is Opcode.VKVQ and not a["fp16"]
                                                    else 1)
    if op is Opcode.VSMAX:
        return SOFTMAX_PASSES * a["rows"] * a["cols"]
    if op is Opcode.VMV:
        return a["rows"] * a["n"] * a["k"]
    if op is Opcode.PACK:
        return a["n"] * a["cols"]
    return a["rows"] * a["n"]


BLOCK_OPS = (Opcode.VSTAT, Opcode.VNORM, Opcode.VQUANT, Opcode.VEW, Opcode.VROPE, Opcode.VKVQ,
             Opcode.VSMAX, Opcode.VMV)


def dispatcher_cycles(config, insn):
    """`nop` and `finish` are the dispatcher's: one cycle."""
    return 1


# The closed form that charges each opcode: one function per kind of datapath.
CYCLES = {
    Opcode.NOP: dispatcher_cycles, Opcode.FINISH: dispatcher_cycles,
    Opcode.LOAD: dma_cycles, Opcode.STORE: dma_cycles,
    Opcode.TBL: table_cycles,
    Opcode.GATHER: table_unit_stream_cycles, Opcode.CBX: table_unit_stream_cycles,
    Opcode.LMMA: matmul_insn_cycles, Opcode.BSMM: matmul_insn_cycles,
    Opcode.MMA: matmul_insn_cycles,
    Opcode.VSUM: vector_insn_cycles, Opcode.VDEQ: vector_insn_cycles,
    Opcode.VSCALE: vector_insn_cycles, Opcode.VOUT: vector_insn_cycles,
    **{op: block_vector_cycles for op in BLOCK_OPS}, Opcode.PACK: pack_cycles,
}


def unit_cycles(config, insn):
    """Cycles the instruction occupies its unit (DMA: the setup only; the transfer is the DRAM
    port's, see `dram_transfer_cycles`)."""
    return CYCLES[insn.op](config, insn)


def events(config, insn):
    """The counters (`COUNTERS`) that `insn` advances: {counter: count}."""
    a = insn.args
    op = insn.op
    ev = {}
    if op in (Opcode.LOAD, Opcode.STORE):
        ev["dram_bytes"] = dram_bytes(config, a["rows"], a["row_bytes"])
        ev["sram_bytes"] = a["rows"] * a["row_bytes"]
    elif op is Opcode.TBL:
        if Mode(a["mode"]) is Mode.UNIFORM:
            entries = config.table_entries
        else:
            entries = 1 << (config.codebook_group(a["bits"]) * a["bits"])
        ev["table_entries"] = a["rows"] * a["ngroups"] * entries
        ev["sram_bytes"] = a["rows"] * a["ngroups"] * entries * config.table_entry_bytes
    elif op in MATMUL_COUNTER:
        planes = matmul_planes(config, op, Mode(a["mode"]), a["bits"])
        ev[MATMUL_COUNTER[op]] = matmul_count(config, op, a["rows"], a["n"], a["kgroups"],
                                              planes)
        ev["sram_bytes"] = 4 * a["rows"] * a["n"]
    elif op in BLOCK_OPS or op is Opcode.PACK:
        elements = block_vector_elements(insn)
        ev["vector_ops"] = elements
        ev["sram_bytes"] = 4 * elements
    elif op in VECTOR_ELEMENTS or op in (Opcode.GATHER, Opcode.CBX):
        count = VECTOR_ELEMENTS.get(op) or {Opcode.GATHER: ("rows", "cols"),
                                            Opcode.CBX: ("n", "cols")}[op]
        elements = a[count[0]] * a[count[1]]
        ev["vector_ops"] = elements
        ev["sram_bytes"] = 4 * elements
    return ev


def event_pj(config, counter):
    """Energy of one event of `counter` in pJ: its energy-table field; a table entry's, which
    the table gives for an entry `ENERGY_ENTRY_BITS` wide (one 16-bit add), scales with
    `config.table_entry_bits` (an adder and a register that wide)."""
    pj = getattr(config.energy, ENERGY_FIELD[counter])
    if counter == "table_entries":
        pj *= config.table_entry_bits / ENERGY_ENTRY_BITS
    return pj


def energy_pj(config, counts, cycles):
    """Energy of a run in pJ: each counter priced by `event_pj`, plus the static power over
    `cycles`."""
    e = config.energy
    dynamic = sum(event_pj(config, k) * v for k, v in counts.items())
    return dynamic + e.static_mw * 1e-3 * cycles * config.cycle_ns * 1e-9 * 1e12
