"""The MAC baseline (`pe.kind: mac`): a weight-stationary systolic array of int MACs.

Ref: SCALE-Sim (Samajdar et al., ISPASS'20) weight-stationary dataflow; bit_serial.md and
lut_tensor_core.md §3.1 (the dequantize-then-multiply MAC baseline the papers compare against).

The array has R = `pe.rows` reduction rows (input features k) and C = `pe.cols` output columns.
PE (r, c) holds weight `w[r][c]` (already dequantized: `q − z` or the codebook centroid), passes its
activation to the right and its partial sum down: `ps(r, c) = ps(r−1, c) + a_r · w[r][c]`.
Activations enter row r skewed by r cycles, partial sums enter column c skewed by c cycles, and
column c's result is deskewed by `C − 1 − c` cycles, so the streams outside are aligned: one
activation vector (one token row, R features) in, one result vector (C outputs) out.

Weights are loaded through their own stream, one row of C weights per beat, beat r writing row r;
a load is accepted only once no activation is in flight (the array drains first), and activations
wait while a load is part-way. Loading and computing do not overlap (no shadow weights), as in
SCALE-Sim's weight-stationary model without prefetch.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import II, Pipeline, PipelineComponent, acc_shape, fit, require_kind

__all__ = ["MacPEArray", "mac_weight_bits"]


def mac_weight_bits(cfg):
    """Width of one dequantized weight: a signed centroid (`pe.centroid_bits`) or `q − z` of the
    widest uniform code (one more bit than the code)."""
    return max(cfg.pe.centroid_bits, max(cfg.pe.weight_bits) + 1)


class MacPEArray(PipelineComponent):
    """R x C weight-stationary systolic array of int8 x int MACs with int accumulators.

    Parameters
    ----------
    cfg : ArchConfig
        A `mac` config: `pe.rows` (R), `pe.cols` (C), `pe.act_bits`, `pe.acc_bits`,
        `pe.weight_bits`, `pe.centroid_bits`, `pe.saturate`.

    Members
    -------
    w : In(stream.Signature(weight_layout))
        Weight rows: R beats load the array, beat r writing row r (`w[C]`, signed).
    i : In(stream.Signature(act_layout))
        One token row per beat: `x[R]` (int8) and `psum[C]` (added at the top of each column).
    o : Out(stream.Signature(result_layout))
        One beat per activation beat: `psum[c] + Σ_r x[r] · w[r][c]`.

    Raises `ValueError` for a config whose `pe.kind` is not `mac`.

    Timing (`pipeline_for`): one activation beat per cycle; depth 2 (the multiply-add register
    and the output register), which the config states as `timing.pe_latency`; latency from an
    activation handshake to its result handshake `depth + R + C − 2` (R + C − 2 is the systolic
    skew); a weight load takes R beats at one per cycle once the array has drained.
    """

    #: register stages on every path besides the skew: the PE's multiply-add, the output
    DEPTH = 2

    @classmethod
    def signature_for(cls, cfg):
        """The signature of the array built for `cfg`, without building it."""
        require_kind(cfg, "mac", cls.__name__)
        pe = cfg.pe
        return wiring.Signature({
            "w": In(stream.Signature(data.StructLayout({
                "w": data.ArrayLayout(signed(mac_weight_bits(cfg)), pe.cols),
            }))),
            "i": In(stream.Signature(data.StructLayout({
                "x": data.ArrayLayout(signed(pe.act_bits), pe.rows),
                "psum": data.ArrayLayout(acc_shape(cfg), pe.cols),
            }))),
            "o": Out(stream.Signature(data.ArrayLayout(acc_shape(cfg), pe.cols))),
        })

    @classmethod
    def pipeline_for(cls, cfg):
        """The array's `Pipeline`. Column c's partial sum passes c skew registers, one PE
        register per row (R) and C − 1 − c deskew registers, then the output register (row r's
        activations arrive in step, skewed by r and passed along by c PEs): R + C − 2 cycles of
        skew besides the `DEPTH` stages."""
        skew = cfg.pe.rows + cfg.pe.cols - 2
        return Pipeline(depth=cls.DEPTH, ii=II, latency=cls.DEPTH + skew)

    def elaborate(self, platform):
        m = Module()
        cfg, pe = self.cfg, self.cfg.pe
        R, C = pe.rows, pe.cols
        shape = acc_shape(cfg)
        sat = pe.saturate
        w, i, o = self.w, self.i, self.o

        advance = Signal()
        m.d.comb += advance.eq(~o.valid | o.ready)

        # Weight load: row counter, and a count of activations in flight to know the array drained.
        load_row = Signal(range(max(R, 2)))
        inflight = Signal(range(self.latency + 2))
        weights = [[Signal(signed(mac_weight_bits(cfg)), name=f"w_{r}_{c}") for c in range(C)]
                   for r in range(R)]
        m.d.comb += [
            w.ready.eq(inflight == 0),
            i.ready.eq(advance & (load_row == 0)),
        ]
        with m.If(w.valid & w.ready):
            with m.Switch(load_row):
                for r in range(R):
                    with m.Case(r):
                        m.d.sync += [weights[r][c].eq(w.payload.w[c]) for c in range(C)]
            m.d.sync += load_row.eq(0 if R == 1 else (load_row + 1) % R)
        i_fire = i.valid & i.ready
        o_fire = o.valid & o.ready
        m.d.sync += inflight.eq(inflight + i_fire - o_fire)

        # Everything below moves only with `advance` (a stalled output freezes the array).
        def delay(value, n, name):
            for k in range(n):
                reg = Signal.like(value, name=f"{name}_d{k}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        a_reg = [[Signal(signed(pe.act_bits), name=f"a_{r}_{c}") for c in range(C)]
                 for r in range(R)]
        ps_reg = [[Signal(shape, name=f"ps_{r}_{c}") for c in range(C)] for r in range(R)]
        with m.If(advance):
            x_in = [delay(i.payload.x[r], r, f"xskew{r}") for r in range(R)]
            ps_in = [delay(i.payload.psum[c], c, f"pskew{c}") for c in range(C)]
            for r in range(R):
                for c in range(C):
                    a = x_in[r] if c == 0 else a_reg[r][c - 1]
                    above = ps_in[c] if r == 0 else ps_reg[r - 1][c]
                    m.d.sync += [
                        a_reg[r][c].eq(a),
                        ps_reg[r][c].eq(fit(above + a * weights[r][c], shape, sat)),
                    ]
            for c in range(C):
                m.d.sync += o.payload[c].eq(delay(ps_reg[R - 1][c], C - 1 - c, f"deskew{c}"))
            valid = delay(i_fire, R + C - 1, "valid")
            m.d.sync += o.valid.eq(valid)
        return m
