"""Pipelined IEEE 754 binary32 arithmetic for the vector unit, bit-exact with numpy `float32`.

Ref: IEEE 754-2008 §4.3.1 (roundTiesToEven), §7.4 (overflow: ±inf under roundTiesToEven), §7.5
(underflow: a tiny result is rounded at the subnormal grid, not flushed), §6.3 (the sign of an
exact zero sum is + under roundTiesToEven, unless both addends are −0), §5.4.1-5.4.2 (integer and
binary16 conversions); the datapath follows the textbook guard/round/sticky design (Goldberg,
"What every computer scientist should know about floating-point arithmetic", §1.3 and Theorem 2;
Patterson & Hennessy, "Computer Organization and Design", §3.5).

What the vector unit computes (sim/executor.py `_vdeq`, `_vout`, `_vscale`) is single operations
of numpy `float32`, each rounded to nearest even, never fused: `FMul`, `FAdd`, the integer
conversion `IntToF32` (numpy's `astype(np.float32)` of an int64, one rounding, no detour through
float64) and the fp16 widening `F16ToF32` (exact). Subnormal inputs and outputs are computed,
never flushed (numpy runs without FTZ/DAZ).

Every unit is one pipeline of combinational stages with a register rank after each (`_Pipeline`):
a stage is a function from the previous rank's registers to the values the next rank holds, so
what crosses a rank is written down once, and `latency` is the number of stages the unit lists,
the same list its `elaborate` builds. All ranks move every cycle: one operation is accepted per
cycle (initiation interval 1) and there is no back-pressure (`valid_signature`: a stream's
`payload` and `valid`, no `ready`).

The shared back end (`_round_pack`) takes a sign, a biased exponent and a 26-bit significand
normalized to bit 25 (24 result bits, a guard bit, and a sticky bit that is the OR of everything
below): a tiny result (exponent below 1) is first shifted right onto the subnormal grid, with the
bits shifted out ORed into the sticky bit; then it rounds to nearest even and packs exponent and
fraction as one integer, so that a rounding carry moves into the exponent by itself (a subnormal
becoming the least normal, the largest finite becoming infinity).

NaN results are the default quiet NaN `QNAN` (0x7fc00000), whatever the inputs' payloads (numpy
on x86 returns the first NaN operand quieted, or 0xffc00000 for an invalid operation; only
"is a NaN" is the contract). `F16ToF32` is bit-exact with numpy on every word, NaNs included:
a NaN keeps its sign and payload (shifted up 13 bits), unquieted, as numpy's own conversion does.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .common import valid_signature

__all__ = ["F16", "F32", "QNAN", "FAdd", "FMul", "F16ToF32", "IntToF32",
           "leading_zeros", "shift_right_sticky"]

#: An IEEE 754 binary32 word; fields from the least significant bit, as in memory.
F32 = data.StructLayout({"frac": 23, "exp": 8, "sign": 1})
#: An IEEE 754 binary16 word.
F16 = data.StructLayout({"frac": 10, "exp": 5, "sign": 1})
#: The default quiet NaN every NaN result of `FMul`, `FAdd` is.
QNAN = 0x7FC0_0000

_BIAS = 127
_EXP_MAX = 255  # the all-ones exponent field: infinities and NaNs (not an ISA field)
_INF = _EXP_MAX << 23
#: Width of the significand the rounding back end takes: 24 result bits, guard, sticky.
_SIG = 26


def _wire(m, value, name):
    """`value` as a named combinational signal: a value used more than once is then built once
    (Amaranth emits an expression anew at each use)."""
    wire = Signal(value.shape(), name=name)
    m.d.comb += wire.eq(value)
    return wire


def leading_zeros(m, value):
    """The number of leading zero bits of `value` (`len(value)` when it is zero): a binary tree
    of priority decisions, `log2` levels deep, over `value` padded with zeros at the bottom to a
    power of two (the padding never counts, as the all-zero case is a separate output). Its
    signals are added to the module `m`."""
    width = len(value)
    size = 1 << max(width - 1, 1).bit_length()
    padded = Cat(Const(0, size - width), value)

    def tree(v):
        # (all zero, count of leading zeros if not all zero) of a power-of-two-wide value
        if len(v) == 2:
            return _wire(m, ~(v[0] | v[1]), "lz_zero"), ~v[1]
        half = len(v) // 2
        lo_zero, lo_count = tree(v[:half])
        hi_zero, hi_count = tree(v[half:])
        count = Mux(hi_zero, Cat(lo_count, Const(1, 1)), Cat(hi_count, Const(0, 1)))
        return _wire(m, lo_zero & hi_zero, "lz_zero"), _wire(m, count, "lz_count")

    zero, count = tree(_wire(m, padded, "lz_in"))
    return _wire(m, Mux(zero, width, count), "lz")


def shift_right_sticky(m, value, amount):
    """`value >> amount` with every bit shifted out ORed into bit 0 (the sticky bit), so the
    result still tells "exact" from "something was lost"; a logarithmic shifter, one stage per
    bit of `amount`, its signals added to the module `m`. Amounts of `len(value)` or more
    leave only the sticky bit."""
    width = len(value)
    value = _wire(m, value, "srs_in")
    for bit in range(len(amount)):
        step = 1 << bit
        if step >= width:
            shifted = Cat(value.any(), Const(0, width - 1))
        else:
            shifted = Cat(value[step:], Const(0, step))
            shifted = shifted | value[:step].any()
        value = _wire(m, Mux(amount[bit], shifted, value), f"srs_{step}")
    return value


def _significand(x):
    """The 24-bit significand of a binary32 (hidden bit 1 unless subnormal or zero) and its
    effective biased exponent (subnormals sit at exponent 1, like the least normals)."""
    normal = x.exp != 0
    return Cat(x.frac, normal), Mux(normal, x.exp, 1)


def _classify(x):
    """(zero, inf, nan) of a binary32."""
    top = x.exp == _EXP_MAX
    return (x.exp == 0) & (x.frac == 0), top & (x.frac == 0), top & (x.frac != 0)


def _normalize(m, sig, exp):
    """`sig` shifted left so its top bit is set, `exp` lowered to match, and the result narrowed
    to the rounding width `_SIG` (the bits below the guard bit ORed into the sticky bit)."""
    width = len(sig)
    count = leading_zeros(m, sig)
    norm = _wire(m, (sig << count)[:width], "norm")
    if width >= _SIG:
        narrow = Cat(norm[:width - _SIG + 1].any(), norm[width - _SIG + 1:])
    else:
        narrow = Cat(Const(0, _SIG - width), norm)
    return narrow, exp - count


def _round_pack(m, sign, exp, sig, *, tiny=True):
    """The binary32 nearest to `sig * 2**(exp - 127 - 25)`, ties to even (`sig` normalized to bit
    25, or 0 when the caller substitutes the result). With `tiny=False` the caller guarantees
    `exp >= 1` and the subnormal shifter is not built."""
    if tiny:
        # Below the least normal exponent the result lies on the subnormal grid: move the
        # significand right by 1 - exp (capped at its width: all of it is sticky then).
        under = _wire(m, exp < 1, "under")
        distance = _wire(m, 1 - exp, "distance")
        amount = Mux(under, Mux(distance > _SIG, _SIG, distance), 0)[:5]
        sig = shift_right_sticky(m, sig, amount)
        exp = _wire(m, Mux(under, 1, exp), "exp_tiny")
    mant, guard, sticky = sig[2:], sig[1], sig[0]  # `sig` is a signal: used three times
    up = guard & (sticky | mant[0])
    # Exponent and fraction as one integer: (exp - 1) * 2^23 + mant counts the hidden bit into
    # the exponent field, so a carry out of the fraction increments the exponent (up to inf).
    packed = ((exp - 1).shift_left(23) + mant + up)[:31]
    return Cat(Mux(exp >= _EXP_MAX, _INF, packed), sign)


def _select(result, sign, *, nan, inf, zero):
    """The final word: the special classes override the rounded `result`."""
    return Mux(nan, QNAN,
               Mux(inf, Cat(Const(_INF, 31), sign),
                   Mux(zero, Cat(Const(0, 31), sign), result)))


class _Pipeline(wiring.Component):
    """A fixed-depth pipeline: `stages` is a tuple of functions `stage(m, rank)`, each taking
    the previous register rank as a namespace (the first: the input payload as `payload`) and
    returning a `dict` of the values the next rank registers (the last: `result`, the output
    payload); `m` is the module, for the combinational signals a stage names.

    Members
    -------
    i : In(valid_signature(operand layout))
        One operation per cycle when `valid`; never stalled.
    o : Out(valid_signature(F32))
        The result, `latency` cycles after its operands; the sink must take every beat.
    """

    def __init__(self, payload_shape):
        super().__init__({"i": In(valid_signature(payload_shape)),
                          "o": Out(valid_signature(F32))})

    @property
    def stages(self):
        raise NotImplementedError

    @property
    def latency(self):
        """Cycles from an operation's input beat to its result beat: one register rank per
        stage."""
        return len(self.stages)

    def elaborate(self, platform):
        m = Module()
        rank, valid = SimpleNamespace(payload=self.i.payload), self.i.valid
        for n, stage in enumerate(self.stages, 1):
            regs = {}
            for name, value in stage(m, rank).items():
                # data registers carry no reset (no reset multiplexer): only `valid` says
                # whether they mean anything
                reg = Signal(value.shape(), name=f"s{n}_{name}", reset_less=True)
                m.d.sync += reg.eq(value)
                regs[name] = reg
            valid_reg = Signal(name=f"s{n}_valid")
            m.d.sync += valid_reg.eq(valid)
            rank, valid = SimpleNamespace(**regs), valid_reg
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(rank.result)]
        return m


_OPERANDS = data.StructLayout({"a": F32, "b": F32})


class FMul(_Pipeline):
    """`a * b` in binary32, rounded to nearest even (numpy `float32` multiply).

    Stages: (1) classify, significand product (24 x 24 -> 48 bits), exponent sum; (2) leading
    zero count and normalization (subnormal operands give leading zeros); (3) subnormal shift,
    rounding, specials. `latency` is 3.

    Members
    -------
    i : In(valid_signature(StructLayout({"a": F32, "b": F32})))
        The operands.
    o : Out(valid_signature(F32))
        The product; NaN results are `QNAN` (a NaN operand, or inf * 0); the sign of every other
        result, zeros and infinities included, is `a.sign ^ b.sign`.
    """

    def __init__(self):
        super().__init__(_OPERANDS)

    @property
    def stages(self):
        return (self._multiply, self._normalize, self._round)

    @staticmethod
    def _multiply(m, r):
        a, b = r.payload.a, r.payload.b
        (a_zero, a_inf, a_nan), (b_zero, b_inf, b_nan) = _classify(a), _classify(b)
        ma, ea = _significand(a)
        mb, eb = _significand(b)
        return {
            "sign": a.sign ^ b.sign,
            "product": ma * mb,
            # (ma * 2^(ea-150)) * (mb * 2^(eb-150)) = (product / 2^47) * 2^(ea+eb-126-127)
            "exp": ea + eb - (_BIAS - 1),
            "nan": a_nan | b_nan | (a_inf & b_zero) | (b_inf & a_zero),
            "inf": a_inf | b_inf,
            "zero": a_zero | b_zero,
        }

    @staticmethod
    def _normalize(m, r):
        sig, exp = _normalize(m, r.product, r.exp)
        return {"sign": r.sign, "sig": sig, "exp": exp, "nan": r.nan, "inf": r.inf,
                "zero": r.zero}

    @staticmethod
    def _round(m, r):
        return {"result": _select(_round_pack(m, r.sign, r.exp, r.sig), r.sign,
                                  nan=r.nan, inf=r.inf, zero=r.zero)}


class FAdd(_Pipeline):
    """`a + b` in binary32, rounded to nearest even (numpy `float32` add).

    Stages: (1) classify, order the operands by magnitude, exponent difference; (2) align the
    smaller significand (3 extra bits: guard, round, sticky) and add or subtract; (3) leading
    zero count and normalization; (4) subnormal shift, rounding, specials. `latency` is 4.

    With the operands ordered, the difference never goes negative, and three extra bits suffice:
    an alignment that sends bits into the sticky bit (distance 2 or more) leaves at most one
    bit of cancellation, and a massive cancellation (distance 0 or 1) is exact.

    Members
    -------
    i : In(valid_signature(StructLayout({"a": F32, "b": F32})))
        The operands.
    o : Out(valid_signature(F32))
        The sum. NaN results are `QNAN` (a NaN operand, or inf - inf). An exact zero sum is +0
        unless both operands are -0; a sum with an infinity has the infinity's sign; a finite
        sum too large is ±inf.
    """

    def __init__(self):
        super().__init__(_OPERANDS)

    @property
    def stages(self):
        return (self._order, self._align, self._normalize, self._round)

    @staticmethod
    def _order(m, r):
        a, b = r.payload.a, r.payload.b
        (_, a_inf, a_nan), (_, b_inf, b_nan) = _classify(a), _classify(b)
        # |a| < |b| as integers on the low 31 bits: binary32 magnitudes order like their words
        swap = _wire(m, a.as_value()[:31] < b.as_value()[:31], "swap")
        big = _wire(m, data.View(F32, Mux(swap, b.as_value(), a.as_value())), "big")
        small = _wire(m, data.View(F32, Mux(swap, a.as_value(), b.as_value())), "small")
        m_big, e_big = _significand(big)
        m_small, e_small = _significand(small)
        return {
            # the larger operand's sign; also the sign of an infinite result (inf is largest)
            "sign": big.sign,
            "subtract": a.sign ^ b.sign,
            "m_big": m_big,
            "m_small": m_small,
            "exp": e_big,
            "distance": (e_big - e_small)[:8],
            "nan": a_nan | b_nan | (a_inf & b_inf & (a.sign != b.sign)),
            "inf": a_inf | b_inf,
        }

    @staticmethod
    def _align(m, r):
        grs = 3  # guard, round and sticky positions below the significands
        distance = Mux(r.distance > 24 + grs, 24 + grs, r.distance)[:5]
        small = shift_right_sticky(m, Cat(Const(0, grs), r.m_small), distance)
        big = Cat(Const(0, grs), r.m_big)
        total = Mux(r.subtract, big - small, big + small)[:24 + grs + 1]
        return {"sign": r.sign, "subtract": r.subtract, "total": total, "exp": r.exp,
                "nan": r.nan, "inf": r.inf}

    @staticmethod
    def _normalize(m, r):
        # total has its binary point below bit 26: a carry-out lands on bit 27, hence exp + 1
        sig, exp = _normalize(m, r.total, r.exp + 1)
        zero = r.total == 0
        return {
            # an exact zero from opposite signs is +0 (roundTiesToEven, §6.3); -0 + -0 is -0
            "sign": r.sign & ~(zero & r.subtract),
            "sig": sig,
            "exp": exp,
            "nan": r.nan,
            "inf": r.inf,
            "zero": zero,
        }

    @staticmethod
    def _round(m, r):
        return {"result": _select(_round_pack(m, r.sign, r.exp, r.sig), r.sign,
                                  nan=r.nan, inf=r.inf, zero=r.zero)}


class IntToF32(_Pipeline):
    """A signed two's-complement integer of `width` bits to binary32, rounded to nearest even
    (numpy `astype(np.float32)` of an int64: one rounding).

    Stages: (1) sign and magnitude; (2) leading zero count and normalization; (3) rounding.
    `latency` is 3. No result is subnormal; only `width` above 128 can reach ±inf.

    Parameters
    ----------
    width : int
        The integer's width in bits, 1 to 256.

    Members
    -------
    i : In(valid_signature(signed(width)))
        The integer.
    o : Out(valid_signature(F32))
        The nearest binary32; 0 gives +0.

    Raises `TypeError` or `ValueError` for a `width` that is not an integer from 1 to 256.
    """

    def __init__(self, width):
        if not isinstance(width, int) or isinstance(width, bool):
            raise TypeError(f"`width` must be an integer, not {width!r}")
        if not 1 <= width <= 256:
            raise ValueError(f"`width` must be from 1 to 256, not {width}")
        self.width = width
        super().__init__(signed(width))

    @property
    def stages(self):
        return (self._magnitude, self._normalize, self._round)

    def _magnitude(self, m, r):
        x = r.payload
        negative = x < 0
        # -(-2^(w-1)) = 2^(w-1) still fits w unsigned bits
        return {"sign": negative, "mag": Mux(negative, -x, x)[:self.width]}

    def _normalize(self, m, r):
        # mag = (sig / 2^25) * 2^(width - 1 - lz) once normalized
        sig, exp = _normalize(m, r.mag, _BIAS + self.width - 1)
        return {"sign": r.sign, "sig": sig, "exp": exp, "zero": r.mag == 0}

    @staticmethod
    def _round(m, r):
        return {"result": _select(_round_pack(m, r.sign, r.exp, r.sig, tiny=False), r.sign,
                                  nan=Const(0), inf=Const(0), zero=r.zero)}


class F16ToF32(_Pipeline):
    """Binary16 to binary32, exact (numpy `astype(np.float32)` of a `float16`).

    One stage: subnormal fp16 values (f * 2^-24) are normalized with a leading zero count of
    their 10-bit fraction; infinities stay infinities, NaNs keep sign and payload (a signalling
    NaN stays signalling, as in numpy; `FMul` and `FAdd` treat every NaN alike). `latency` is 1.

    Members
    -------
    i : In(valid_signature(F16))
        The fp16 word.
    o : Out(valid_signature(F32))
        The same value as binary32.
    """

    def __init__(self):
        super().__init__(F16)

    @property
    def stages(self):
        return (self._widen,)

    @staticmethod
    def _widen(m, r):
        x = r.payload
        count = leading_zeros(m, x.frac)
        # f * 2^-24 with f's top bit at 9 - count: 1.xxx * 2^(-15 - count), biased 112 - count;
        # the shift by count + 1 drops that top bit, which becomes the hidden bit
        sub_frac = (x.frac << (count + 1))[:10]
        sub_exp = (_BIAS - 15 - count)[:8]
        subnormal = (x.exp == 0) & (x.frac != 0)
        top = x.exp == 0x1F
        exp = Mux(top, _EXP_MAX, Mux(subnormal, sub_exp, Mux(x.exp == 0, 0, x.exp + 112)))
        frac = Cat(Const(0, 13), Mux(subnormal, sub_frac, x.frac))
        return {"result": Cat(frac, exp[:8], x.sign)}
