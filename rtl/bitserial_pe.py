"""The bit-serial PE array (`pe.kind: bitserial`): M x N weight-serial dot-product lanes.

Ref: bit_serial.md §4 (weight-serial form `y = Σ_i s_i · 2^i · Σ_k w_{k,i} · a_k`, `s_i = −1` on
the two's-complement sign plane); BitMoD (HPCA'25) §IV-B (`bs_mul`: an AND of the activation with
the weight bit, then an adder tree); Stripes (MICRO'16).

Each lane is a `pe.group`-wide dot product: per beat, lane (m, n) adds
`(sign ? −1 : 1) · (Σ_k x[m][k] · w[n][k]) << plane` to its accumulator, where `w[n]` holds one
weight bit per activation (bit k for activation k). Activations are broadcast along N, weight bits
along M. Unsigned b-bit codes take b beats with `sign = 0`; signed operands (codebook centroids,
int8 weights) mark their MSB plane with `sign = 1` (weight −2^(b−1)). The accumulate half is the
same two-stage pipeline as the LUT array (`rtl.common.ShiftAccumulate`).
"""

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import (
    ShiftAccumulate,
    ShiftAccumulateArray,
    acc_shape,
    plane_shape,
    require_kind,
)

__all__ = ["BitSerialPEArray", "bitserial_planes"]


def bitserial_planes(cfg):
    """Bit planes a beat can address: the widest uniform code or the signed centroids."""
    return max(max(cfg.pe.weight_bits), cfg.pe.centroid_bits)


class BitSerialPEArray(ShiftAccumulateArray):
    """M x N bit-serial lanes, one weight bit plane per cycle, int accumulators.

    Parameters
    ----------
    cfg : ArchConfig
        A `bitserial` config: `pe.rows` (M), `pe.cols` (N), `pe.group` (activations per lane),
        `pe.weight_bits`, `pe.centroid_bits`, `pe.act_bits`, `pe.acc_bits`, `pe.saturate`.

    Members
    -------
    i : In(stream.Signature(beat_layout))
        One beat per bit plane: `plane`, `sign` (this is a two's-complement sign plane),
        `first` (inject `psum`), `last` (emit the tile), `w[N]` (g weight bits per lane column),
        `x[M][g]` (int8 activations), `psum[M][N]`.
    o : Out(stream.Signature(result_layout))
        One beat per tile: `[M][N]` accumulators.

    Raises `ValueError` for a config whose `pe.kind` is not `bitserial`.

    Timing (`pipeline_for`): as `LutPEArray` (the same `ShiftAccumulate`): one beat per cycle,
    depth 2; the config states them as `timing.pe_ii` and `timing.pe_latency`.
    """

    @classmethod
    def signature_for(cls, cfg):
        """The signature of the array built for `cfg`, without building it."""
        require_kind(cfg, "bitserial", cls.__name__)
        pe = cfg.pe
        lanes = data.ArrayLayout(data.ArrayLayout(acc_shape(cfg), pe.cols), pe.rows)
        beat = data.StructLayout({
            "plane": plane_shape(bitserial_planes(cfg)),
            "sign": 1,
            "first": 1,
            "last": 1,
            "w": data.ArrayLayout(pe.group, pe.cols),
            "x": data.ArrayLayout(data.ArrayLayout(signed(pe.act_bits), pe.group), pe.rows),
            "psum": lanes,
        })
        return wiring.Signature({"i": In(stream.Signature(beat)),
                                 "o": Out(stream.Signature(lanes))})

    def elaborate(self, platform):
        m = Module()
        pe = self.cfg.pe
        p = self.i.payload

        def term(r, c):
            # AND-select then an adder tree: no multiplier (BitMoD bs_mul).
            total = 0
            for k in range(pe.group):
                total = total + Mux(p.w[c][k], p.x[r][k], 0)
            return Mux(p.sign, -total, total) << p.plane

        ShiftAccumulate(m, self.cfg, self.i, self.o, term)
        return m
