"""The LUT PE array (`pe.kind: lut`): M token rows x N output channels of table-lookup lanes.

Ref: LUT Tensor Core (ISCA'25) §3.1.2 Eq. 4–6 (half table, sign from index bit 0, offline index
inversion), §3.2.2 Fig. 9 (tables broadcast along N, weight indices broadcast along M) and the
released `fp_lut_array_b_cycle_stage1.sv` (one weight bit plane per cycle, psum injected at plane
0); DESIGN.md section 3 (codebook mode: one direct lookup per column group, no bit planes).

Each beat carries the M tables of one activation group (the table buffer's read port), the N lane
indices of one bit plane (uniform) or one column group (codebook), and the tile's partial sums.
Lane (m, n) reads `tables[m][addr(idx[n])]`:

- uniform, symmetric: `sign = idx[0]`, `addr = idx[1:g]`, term `±H[addr] << plane` (negated when
  sign is 0; the inversion of the other index bits was done offline on the static weights);
- uniform, full table: `addr = idx[0:g]`, term `T[addr] << plane`;
- codebook: `addr = idx` (index_bits wide), term `T[addr]`, no shift.

So a uniform tile of b-bit weights is b beats (planes in any order, `first` on the first, `last` on
the last) and its result is `psum + Σ_p T[idx_p] << p`; a tile may also span several activation
groups (new tables in each beat) before its `last` beat.
"""

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from arch.isa import Mode

from .common import (
    ShiftAccumulate,
    ShiftAccumulateArray,
    acc_shape,
    plane_shape,
    require_kind,
)
from .table_unit import table_geometry

__all__ = ["LutPEArray"]


class LutPEArray(ShiftAccumulateArray):
    """M x N LUT lanes with int accumulators, one bit plane (or codebook lookup) per cycle.

    Parameters
    ----------
    cfg : ArchConfig
        A `lut` config: `pe.rows` (M), `pe.cols` (N), `pe.group` (g), `pe.index_bits`,
        `pe.symmetric`, `pe.weight_bits`, `pe.acc_bits`, `pe.saturate`, `cfg.table_entry_bits`.

    Members
    -------
    i : In(stream.Signature(beat_layout))
        One beat per bit plane: `mode`, `plane` (shift, uniform mode), `first` (start the tile:
        inject `psum`), `last` (emit the tile), `idx[N]`, `tables[M][entries]`, `psum[M][N]`.
    o : Out(stream.Signature(result_layout))
        One beat per tile: `[M][N]` accumulators (`pe.acc_bits`, two's-complement wrap, or
        clamped when `pe.saturate`).

    Raises `ValueError` for a config whose `pe.kind` is not `lut`.

    Timing (`pipeline_for`): one beat per cycle; the `ShiftAccumulate` depth (2 cycles) from the
    handshake of a tile's last beat to its result handshake, so a b-plane tile's result follows
    its first beat by `(b − 1) · ii + depth` cycles. The config states the same as
    `timing.pe_ii` and `timing.pe_latency` (`rtl.units.check_timing`).
    """

    @classmethod
    def signature_for(cls, cfg):
        """The signature of the array built for `cfg`, without building it."""
        require_kind(cfg, "lut", cls.__name__)
        pe = cfg.pe
        lanes = data.ArrayLayout(data.ArrayLayout(acc_shape(cfg), pe.cols), pe.rows)
        entries = table_geometry(cfg)["entries"]
        beat = data.StructLayout({
            "mode": Mode,
            "plane": plane_shape(max(pe.weight_bits)),
            "first": 1,
            "last": 1,
            "idx": data.ArrayLayout(pe.index_bits, pe.cols),
            "tables": data.ArrayLayout(
                data.ArrayLayout(signed(cfg.table_entry_bits), entries), pe.rows),
            "psum": lanes,
        })
        return wiring.Signature({"i": In(stream.Signature(beat)),
                                 "o": Out(stream.Signature(lanes))})

    def elaborate(self, platform):
        m = Module()
        pe = self.cfg.pe
        g = pe.group
        p = self.i.payload
        codebook = p.mode == Mode.CODEBOOK

        def read(r, addr):
            # The table read: a binary tree of 2:1 multiplexers on the address bits, the
            # smallest form Yosys maps (a computed part-select of the packed payload becomes a
            # barrel shifter over the whole table; an `Array` a priority case).
            level = [p.tables[r][e] for e in range(len(p.tables[r]))]
            for bit in range(len(addr)):
                level = [Mux(addr[bit], level[k + 1], level[k]) for k in range(0, len(level), 2)]
            return level[0]

        def term(r, c):
            idx = p.idx[c]
            if pe.symmetric:
                addr = Mux(codebook, idx, idx[1:g])
                value = read(r, addr)
                signed_value = Mux(codebook | idx[0], value, -value)
            else:
                addr = Mux(codebook, idx, idx[:g])
                signed_value = read(r, addr)
            return Mux(codebook, signed_value, signed_value << p.plane)

        ShiftAccumulate(m, self.cfg, self.i, self.o, term)
        return m
