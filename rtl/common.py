"""Pieces shared by the PE arrays: shapes derived from the config, the saturating/wrapping fit, and
the two-stage shift-accumulate pipeline that the `lut` and `bitserial` arrays put behind their
per-lane term logic.

Ref: LUT Tensor Core (ISCA'25) §3.2, and its released RTL `fp_lut_array_b_cycle_stage1.sv` (one
bit plane per cycle, weight 2^p, psum injected at plane 0, result after the last plane).

Stall discipline (all arrays): one enable, `advance = ~o.valid | o.ready`, moves every pipeline
register at once, and `i.ready = advance`. A stalled output stream therefore freezes the whole
array without losing or duplicating a beat, and with a ready sink the array accepts one beat per
cycle (initiation interval 1).

Each component states its own timing as a `Pipeline`, computed from the registers it builds (a
classmethod `pipeline_for(cfg)`, so it can be read without constructing the component);
`rtl.units.check_timing` compares it with `cfg.timing`, the numbers the cycle model reads.
"""

from dataclasses import dataclass

from amaranth.hdl import Mux, Shape, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from arch.isa import LAYOUTS, Opcode

__all__ = ["II", "Pipeline", "PipelineComponent", "ShiftAccumulate", "ShiftAccumulateArray",
           "INSN", "acc_shape", "fit", "plane_shape", "require_kind", "valid_signature"]

#: An instruction word as every format at once (`view.<opcode name>.<field>`), from the ISA's
#: layouts: the decoder and the units read fields through it, never by their own offsets.
INSN = data.UnionLayout({op.name.lower(): LAYOUTS[op] for op in Opcode})

#: Initiation interval of every unit: all registers move with `advance` and `i.ready = advance`,
#: so with a ready sink a unit accepts one beat per cycle.
II = 1


@dataclass(frozen=True)
class Pipeline:
    """A unit's timing as built, in cycles.

    Members
    -------
    depth : int
        Register stages a beat passes through, not counting systolic skew: what `cfg.timing`
        states as `pe_latency` / `table_latency`.
    ii : int
        Cycles between accepted input beats with a ready sink (`pe_ii` / `table_ii`).
    latency : int
        From the handshake of the input beat that completes a result to that result's handshake,
        with a ready sink: `depth` plus any skew (the MAC array's `rows + cols - 2`).
    """
    depth: int
    ii: int
    latency: int


class PipelineComponent(wiring.Component):
    """A unit built from one `ArchConfig`: its signature and its timing are functions of the
    config (`signature_for(cfg)`, `pipeline_for(cfg)`, classmethods of the subclass), so a test
    bench or a check can read them without constructing the component.

    Members (besides the signature's): `cfg`, `pipeline` (a `Pipeline`), `latency`.
    `src_loc_at` is Amaranth's: a factory passes 1 so that the caller is the one held to using it.
    """

    def __init__(self, cfg, *, src_loc_at=0):
        signature = self.signature_for(cfg)
        self.cfg = cfg
        self.pipeline = self.pipeline_for(cfg)
        super().__init__(signature, src_loc_at=src_loc_at)

    @property
    def latency(self):
        """Cycles from the input handshake that completes a result to the result's handshake."""
        return self.pipeline.latency


def require_kind(cfg, kind, component):
    """Raise `ValueError` unless `cfg.pe.kind` is `kind` (the component's name in the message)."""
    if cfg.pe.kind != kind:
        raise ValueError(f"`cfg.pe.kind` must be {kind!r} for a {component}, "
                         f"not {cfg.pe.kind!r}")


def acc_shape(cfg):
    """The accumulator shape: `signed(pe.acc_bits)`."""
    return signed(cfg.pe.acc_bits)


def plane_shape(planes):
    """Unsigned shape holding a bit-plane number `0 .. planes-1` (at least one bit wide, so the
    Verilog never has a zero-width field)."""
    return Shape.cast(range(max(planes, 2)))


def fit(value, shape, saturate):
    """`value` narrowed to `shape`: two's-complement wrap (plain truncation on assignment) or,
    with `saturate`, clamped to the shape's range."""
    shape = Shape.cast(shape)
    if not saturate:
        return value
    lo, hi = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return Mux(value > hi, hi, Mux(value < lo, lo, value))


#: The most beats of one `lmma` / `bsmm` tile in groups: the ISA's widest `kgroups`.
MAX_KGROUPS = max((1 << Shape.cast(LAYOUTS[op]["kgroups"].shape).width) - 1
                  for op in (Opcode.LMMA, Opcode.BSMM))


def exact_acc_shape(cfg, term_shape, plane_width):
    """A signed shape that holds every sum of one tile exactly: a `psum` of `acc_shape(cfg)`
    plus `MAX_KGROUPS` groups of up to 2^`plane_width` beats, each a term of `term_shape`."""
    beats = MAX_KGROUPS << plane_width
    width = max(acc_shape(cfg).width, Shape.cast(term_shape).width)
    return signed(width + beats.bit_length() + 1)


class ShiftAccumulate:
    """The back half of a `lut` or `bitserial` PE array, built into an existing module.

    Stage 1 registers, per lane, `term + (first ? psum : 0)` (the caller computes `term`, already
    shifted by the bit plane and signed, from the input payload). Stage 2 adds it to the lane's
    accumulator (or to zero on a tile's first beat) and, on the tile's last beat, writes the sum
    to the output payload instead, so the next tile can start in the very next cycle while the
    result waits in the output register. Latency: 2 cycles from the handshake of a tile's last
    beat to its result handshake (with a ready sink); one beat per cycle.

    The result is the tile's exact sum fitted to `pe.acc_bits` once (`fit`), as the executor
    fits an instruction's sum (`sim.executor` `_acc_store`; a tile is all of an instruction's
    groups for its outputs). Wrapping, the stages are `pe.acc_bits` wide (a wrap of each step is
    a wrap of the sum); saturating, they are `exact_acc_shape` wide, so that a partial sum that
    leaves the range and comes back is not clamped on the way.

    Members
    -------
    advance : Signal
        High when the pipeline moves this cycle (`~o.valid | o.ready`).
    """

    #: pipeline depth in cycles, from the last beat's handshake to the result handshake
    DEPTH = 2

    def __init__(self, m, cfg, i, o, term):
        pe = cfg.pe
        rows, cols = pe.rows, pe.cols
        shape = acc_shape(cfg)
        sat = pe.saturate
        p = i.payload
        inner = exact_acc_shape(cfg, term(0, 0).shape(), len(p.plane)) if sat else shape

        self.advance = advance = Signal()
        m.d.comb += [advance.eq(~o.valid | o.ready), i.ready.eq(advance)]

        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1 = [[Signal(inner, name=f"s1_{r}_{c}") for c in range(cols)] for r in range(rows)]
        acc = [[Signal(inner, name=f"acc_{r}_{c}") for c in range(cols)] for r in range(rows)]

        with m.If(advance):
            m.d.sync += [s1_valid.eq(i.valid), s1_first.eq(p.first), s1_last.eq(p.last)]
            m.d.sync += o.valid.eq(s1_valid & s1_last)
            for r in range(rows):
                for c in range(cols):
                    inject = Mux(p.first, p.psum[r][c], 0)
                    m.d.sync += s1[r][c].eq(term(r, c) + inject)
            with m.If(s1_valid):
                for r in range(rows):
                    for c in range(cols):
                        total = Mux(s1_first, 0, acc[r][c]) + s1[r][c]
                        with m.If(s1_last):
                            m.d.sync += o.payload[r][c].eq(fit(total, shape, sat))
                        with m.Else():
                            m.d.sync += acc[r][c].eq(total)


class ShiftAccumulateArray(PipelineComponent):
    """A PE array whose back half is `ShiftAccumulate` (`lut`, `bitserial`): its pipeline is that
    of the shift-accumulate stages, with no skew and one beat per cycle."""

    @classmethod
    def pipeline_for(cls, cfg):
        return Pipeline(depth=ShiftAccumulate.DEPTH, ii=II, latency=ShiftAccumulate.DEPTH)


def valid_signature(payload_shape):
    """A beat without back-pressure: `payload` and `valid`, the members of a
    `stream.Signature` less `ready`, so a stream's valid and payload wire straight to it. (A
    `stream.Signature(always_ready=True)` would be the same contract, but its constant `ready`
    cannot be a port of `verilog.convert` in Amaranth 0.5.)"""
    return wiring.Signature({"payload": Out(payload_shape), "valid": Out(1)})
