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

from .common import ShiftAccumulate, acc_shape, plane_shape

__all__ = ["BitSerialPEArray", "bitserial_layouts"]


def bitserial_planes(cfg):
    """Bit planes a beat can address: the widest uniform code or the signed centroids."""
    return max(max(cfg.pe.weight_bits), cfg.pe.centroid_bits)


def bitserial_layouts(cfg):
    """`(beat_layout, result_layout)` of the bit-serial array for `cfg`."""
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
    return beat, lanes


class BitSerialPEArray(wiring.Component):
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

    Timing: as `LutPEArray`: `cfg.timing.pe_ii` = 1, `cfg.timing.pe_latency` = 2.
    """

    DEPTH = ShiftAccumulate.DEPTH

    def __init__(self, cfg):
        if cfg.pe.kind != "bitserial":
            self._MustUse__silence = True  # not built: no unused-elaboratable warning
            raise ValueError("`cfg.pe.kind` must be 'bitserial' for a BitSerialPEArray, "
                             f"not {cfg.pe.kind!r}")
        self.cfg = cfg
        self.beat_layout, self.result_layout = bitserial_layouts(cfg)
        super().__init__({
            "i": In(stream.Signature(self.beat_layout)),
            "o": Out(stream.Signature(self.result_layout)),
        })

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
