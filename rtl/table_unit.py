"""The table precompute unit: one token row's table of one activation group per cycle.

Ref: LUT Tensor Core (ISCA'25) §3.1.1–3.1.2 Eq. 4–5 (signed-sum tables, odd symmetry: the half
table `H[j] = T[(j << 1) | 1]`); DESIGN.md section 3 (CLAQ codebook tables
`T[c_1..c_g] = Σ_i x_i · C_i[c_i]`, first column's code in the low index bits).

One datapath serves both weight formats. Uniform mode adds the `g` activations with every sign
pattern the table stores (2^(g−1) entries with `pe.symmetric`, else 2^g). Codebook mode first
multiplies each activation by its column's centroids (stage 1, one product per centroid slot), then
adds one product per column for each of the 2^index_bits entries (stage 2); `bits` (the code width
b) selects how the slots map to columns: `gc = cfg.codebook_group(b)` (= index_bits // b) columns
of 2^b centroids, slot `i·2^b + k` holding centroid k of column i.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from arch.isa import Mode
from bitlut.formats import CODEBOOK_BITS

from .common import II, Pipeline, PipelineComponent, fit, require_kind

__all__ = ["TableUnit", "codebook_bits", "table_geometry"]


def codebook_bits(cfg):
    """Code widths the codebook mode supports: the config's weight widths that are codebook
    widths (`bitlut.formats.CODEBOOK_BITS`; 1-bit weights use uniform mode) and fit one index
    (at most `pe.index_bits`); none on a uniform-only array (`pe.codebook: false`), whose
    table entries (`cfg.table_entry_bits`) are too narrow for centroid sums."""
    if not cfg.pe.codebook:
        return ()
    return tuple(b for b in cfg.pe.weight_bits if b in CODEBOOK_BITS and b <= cfg.pe.index_bits)


def table_geometry(cfg):
    """The table unit's sizes for `cfg` (a `lut` config): a dict with `cols` (activations per
    input beat), `slots` (centroid slots), `entries` (table entries per output beat),
    `uniform_entries`, `entry_bits`, `max_bits`."""
    pe = cfg.pe
    cb_bits = codebook_bits(cfg)
    # At least one slot, so a config without codebook widths (e.g. weight_bits [1]) still has a
    # well-formed (unused) `cq` field.
    return dict(cols=max([pe.group] + [cfg.codebook_group(b) for b in cb_bits]),
                slots=max([1] + [cfg.codebook_group(b) << b for b in cb_bits]),
                entries=max(cfg.table_entries, cfg.codebook_table_entries),
                uniform_entries=cfg.table_entries, entry_bits=cfg.table_entry_bits,
                max_bits=max(pe.weight_bits))


class TableUnit(PipelineComponent):
    """Builds one table (one token row, one activation group) per cycle, in two pipeline stages.

    Parameters
    ----------
    cfg : ArchConfig
        A `lut` config; shapes come from `pe.group`, `pe.index_bits`, `pe.symmetric`,
        `pe.weight_bits`, `pe.act_bits`, `pe.centroid_bits` and `cfg.table_entry_bits`.

    Members
    -------
    i : In(stream.Signature(in_layout))
        `mode` (`arch.isa.Mode`), `bits` (code width b, codebook mode only), `x` (int8
        activations: the group's `g` in uniform mode, the `index_bits // b` columns in codebook
        mode; unused slots are ignored), `cq` (centroid slots, codebook mode only).
    o : Out(stream.Signature(out_layout))
        `mode` and `table`: uniform mode fills the first `cfg.table_entries` entries (`H[j]`
        with symmetrization, else the full `T[idx]`) and zeroes the rest; codebook mode fills all
        2^index_bits entries (indices above 2^(gc·b) alias lower ones and are never read).

    Raises `ValueError` for a config whose `pe.kind` is not `lut`.

    Timing (`pipeline_for`): two register stages, so a latency of 2 cycles from input to output
    handshake, and one table per cycle; a stalled output freezes the unit. The config states the
    same as `timing.table_latency` and `timing.table_ii` (`rtl.units.check_timing`).
    """

    #: register stages: the activations and codebook products, then the entries
    DEPTH = 2

    @classmethod
    def signature_for(cls, cfg):
        """The signature of the unit built for `cfg`, without building it."""
        require_kind(cfg, "lut", cls.__name__)
        pe, geom = cfg.pe, table_geometry(cfg)
        return wiring.Signature({
            "i": In(stream.Signature(data.StructLayout({
                "mode": Mode,
                "bits": range(geom["max_bits"] + 1),
                "x": data.ArrayLayout(signed(pe.act_bits), geom["cols"]),
                "cq": data.ArrayLayout(signed(pe.centroid_bits), geom["slots"]),
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "mode": Mode,
                "table": data.ArrayLayout(signed(cfg.table_entry_bits), geom["entries"]),
            }))),
        })

    @classmethod
    def pipeline_for(cls, cfg):
        """The unit's `Pipeline`: `DEPTH` stages, no skew, one table per cycle."""
        return Pipeline(depth=cls.DEPTH, ii=II, latency=cls.DEPTH)

    def elaborate(self, platform):
        m = Module()
        cfg, pe = self.cfg, self.cfg.pe
        geom = table_geometry(cfg)
        i, o = self.i, self.o
        g = pe.group
        entry_shape = signed(cfg.table_entry_bits)
        prod_shape = signed(pe.act_bits + pe.centroid_bits)

        advance = Signal()
        m.d.comb += [advance.eq(~o.valid | o.ready), i.ready.eq(advance)]

        # Stage 1: activations and the codebook products.
        s1_valid = Signal()
        s1_mode = Signal(Mode)
        s1_bits = Signal.like(i.payload.bits)
        s1_x = Signal(data.ArrayLayout(signed(pe.act_bits), geom["cols"]))
        s1_p = [Signal(prod_shape, name=f"prod{s}") for s in range(geom["slots"])]
        cb_bits = codebook_bits(cfg)
        with m.If(advance):
            m.d.sync += [s1_valid.eq(i.valid), s1_mode.eq(i.payload.mode),
                         s1_bits.eq(i.payload.bits), s1_x.eq(i.payload.x)]
            with m.Switch(i.payload.bits):
                for b in cb_bits:
                    with m.Case(b):
                        gc = cfg.codebook_group(b)
                        for s in range(geom["slots"]):
                            col = s >> b
                            if col < gc:
                                prod = i.payload.x[col] * i.payload.cq[s]
                                m.d.sync += s1_p[s].eq(prod)
                            else:
                                m.d.sync += s1_p[s].eq(0)
                with m.Default():
                    m.d.sync += [p.eq(0) for p in s1_p]

        # Stage 2: the entries. Uniform: a fixed sign pattern per entry; the half table fixes index
        # bit 0 to 1 (+x_0) and stores entry j at index (j << 1) | 1.
        uniform = []
        for j in range(geom["entries"]):
            if j >= geom["uniform_entries"]:
                uniform.append(0)
                continue
            idx = (j << 1) | 1 if pe.symmetric else j
            total = 0
            for c in range(g):
                xc = s1_x[c]
                total = total + (xc if (idx >> c) & 1 else -xc)
            uniform.append(total)

        codebook = [Signal(entry_shape, name=f"cb{e}") for e in range(geom["entries"])]
        with m.Switch(s1_bits):
            for b in cb_bits:
                with m.Case(b):
                    gc = cfg.codebook_group(b)
                    mask = (1 << b) - 1
                    for e in range(geom["entries"]):
                        total = 0
                        for c in range(gc):
                            total = total + s1_p[(c << b) + ((e >> (c * b)) & mask)]
                        m.d.comb += codebook[e].eq(total)
            with m.Default():
                m.d.comb += [e.eq(0) for e in codebook]

        with m.If(advance):
            m.d.sync += [o.valid.eq(s1_valid), o.payload.mode.eq(s1_mode)]
            for e in range(geom["entries"]):
                value = Mux(s1_mode == Mode.CODEBOOK, codebook[e], uniform[e])
                m.d.sync += o.payload.table[e].eq(fit(value, entry_shape, False))
        return m
