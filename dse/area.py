"""Area and SRAM-energy models of a config: what a point costs, without synthesizing it.

Area is in transistor-equivalents (the CMOS estimate; `Mtr` = millions), in the same unit as
Yosys' `stat -tech cmos` that `rtl.verilog` reports, plus an ECP5 estimate (LUTs, DSPs, EBR
blocks). The PE array and the LUT table unit are component terms whose per-lane costs come from
the synthesized arrays in docs/rtl.md ("Resource comparison": the 2x16 / 2x8 LUT and bit-serial
arrays, the 8x8 / 4x4 MAC arrays; every kind's cost is linear in its lanes there, within 2%).
How a lane's cost splits between its accumulator and its datapath (table multiplexer, dot
product, multiplier) is an assumption, not a fit (`LANE` below): those syntheses all share one
entry width and accumulator width, so they cannot separate the terms. `ANCHORS.calibrated` is
therefore False, and the DSE report says so.

Scratchpads are not in the RTL yet; they are priced from tables, per bank:
- CMOS: 6 transistors per bit over an array efficiency that grows with capacity (CACTI-derived
  figures that LLMCompass uses: 0.076 at 4 KiB, 0.704 at 128 KiB, 0.561 at 1 MiB;
  PrincetonUniversity/LLMCompass cost_model/cost_model.py), interpolated in log capacity.
- ECP5: 18 Kbit EBR blocks, ceil(bits per bank / 18432) per bank.
- Energy per byte grows with capacity: M. Horowitz (ISSCC 2014) gives 10, 20 and 100 pJ per
  64-bit read of 8 KB, 32 KB and 1 MB SRAMs; a config's `energy.sram_byte_pj` is taken as the
  32 KiB figure and scaled along that curve (log-log interpolation), so a sweep over buffer
  sizes charges big buffers more.
"""

import math
from dataclasses import dataclass

import numpy as np

from arch import config as arch_config

# Buffers each PE kind uses (the table scratchpad holds the LUT array's tables only).
BUFFERS = tuple(f.name.removesuffix("_kib") for f in arch_config.dataclasses.fields(
    arch_config.Sram) if f.name.endswith("_kib"))
TRANSISTORS_PER_BIT = 6
SRAM_EFFICIENCY = ((4, 0.076), (128, 0.704), (1024, 0.561))     # (KiB, array efficiency)
SRAM_PJ_PER_BYTE = ((8, 10 / 8), (32, 20 / 8), (1024, 100 / 8))  # (KiB, pJ/byte), Horowitz
EBR_BITS = 18 * 1024


@dataclass(frozen=True)
class Anchors:
    """Measured per-lane costs (docs/rtl.md) and the assumed split of a lane.

    The reference lanes: LUT 16 entries x 16 bits with an int32 accumulator, bit-serial group 4
    x 8-bit activations with int32, MAC 8 x 9 bits with int32."""
    lut_lane_tr: float = 319_686 / 32          # lut2x16 (10.0k per lane; 2x8: 10.0k)
    bitserial_lane_tr: float = 258_670 / 32    # bs2x16 (8.1k; 2x8: 8.1k)
    mac_lane_tr: float = 707_026 / 64          # mac8x8 (11.0k; 4x4: 11.0k)
    table_unit_tr: float = 106_872             # lut2x8 table unit, 2 rows, 16 x 16-bit tables
    lut_lane_luts: float = 20_870 / 32         # ECP5
    bitserial_lane_luts: float = 10_404 / 32
    mac_lane_luts: float = 2_080 / 64
    table_unit_luts: float = 1_231
    acc_bit_tr: float = 44.0                   # assumed: a full adder (28) + a flop (16) per bit
    calibrated: bool = False


ANCHORS = Anchors()
_REF = {"lut": 16 * 16, "bitserial": 4 * 8, "mac": 8 * 9}     # reference datapath size


def datapath(cfg):
    """The lane's datapath size in the unit of `_REF`: table entries x entry bits (LUT), group x
    activation bits (bit-serial), activation x dequantized weight bits (MAC)."""
    pe = cfg.pe
    if pe.kind == "lut":
        return cfg.codebook_table_entries * cfg.table_entry_bits
    if pe.kind == "bitserial":
        return pe.group * pe.act_bits
    return pe.act_bits * max(pe.centroid_bits, max(pe.weight_bits) + 1)


def lane_scale(cfg):
    """A lane's cost relative to the measured reference lane of its kind."""
    pe = cfg.pe
    a = ANCHORS
    ref = getattr(a, f"{pe.kind}_lane_tr")
    acc_ref = a.acc_bit_tr * 32
    lane = acc_ref * pe.acc_bits / 32 + (ref - acc_ref) * datapath(cfg) / _REF[pe.kind]
    return lane / ref


def _interp_log(table, kib):
    """Log-log interpolation (linear extrapolation past the ends) of a (KiB, value) table."""
    xs = np.log([k for k, _ in table])
    ys = np.log([v for _, v in table])
    x = math.log(kib)
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return float(math.exp(ys[i] + slope * (x - xs[i])))


def sram_efficiency(kib):
    """Array efficiency of one SRAM macro of `kib` KiB, clipped to the table's range."""
    lo, hi = SRAM_EFFICIENCY[0][0], SRAM_EFFICIENCY[-1][0]
    return _interp_log(SRAM_EFFICIENCY, min(max(kib, lo), hi))


def sram_byte_pj(cfg, buffer):
    """Energy of one byte read or written in `buffer` of `cfg`, by its bank's capacity."""
    kib = getattr(cfg.sram, f"{buffer}_kib") / cfg.sram.banks
    return cfg.energy.sram_byte_pj * _interp_log(SRAM_PJ_PER_BYTE, kib) / SRAM_PJ_PER_BYTE[1][1]


def buffers_used(cfg):
    return tuple(b for b in BUFFERS if b != "table" or cfg.pe.kind == "lut")


_fitted = None


def fitted():
    """{kind: fit} of the lane model fitted to the cached syntheses (`dse.synth`), for the
    kinds whose fit meets its gate on held-out arrays and matches the current RTL."""
    global _fitted
    if _fitted is None:
        from dse import synth
        fits, _ = synth.fit()
        _fitted = {k: f for k, f in fits.items() if f["calibrated"]}
    return _fitted


_fitted_fpga = None


def fitted_fpga():
    """{(target, resource): {kind: fit}} of the FPGA fits (`dse.synth.fit_fpga`) that meet
    their gates on held-out arrays and match the current RTL."""
    global _fitted_fpga
    if _fitted_fpga is None:
        from dse import synth
        fits, _ = synth.fit_fpga()
        _fitted_fpga = {k: {kind: f for kind, f in kinds.items() if f["calibrated"]}
                        for k, kinds in fits.items()}
    return _fitted_fpga


def _lane_model(f, cfg):
    c_acc, c_dp, c0 = f["coef"]
    lanes = cfg.pe.rows * cfg.pe.cols
    return lanes * (c_acc * cfg.pe.acc_bits + c_dp * datapath(cfg)) + c0


def pe_transistors(cfg):
    """Transistors of the PE array: the fitted lane model where its kind is calibrated, else
    the anchors of docs/rtl.md with the assumed lane split."""
    pe = cfg.pe
    f = fitted().get(pe.kind)
    if f is not None:
        return _lane_model(f, cfg)
    return pe.rows * pe.cols * getattr(ANCHORS, f"{pe.kind}_lane_tr") * lane_scale(cfg)


def area(cfg):
    """{metric: value} of the config's area: totals and the parts (PE array, table unit,
    scratchpads) in millions of transistors, and the ECP5 estimate."""
    pe, a = cfg.pe, ANCHORS
    lanes = pe.rows * pe.cols
    scale = lane_scale(cfg)
    pe_tr = pe_transistors(cfg)
    fpga = fitted_fpga()
    f = fpga.get(("ecp5", "luts"), {}).get(pe.kind)
    pe_luts = (_lane_model(f, cfg) if f is not None
               else lanes * getattr(a, f"{pe.kind}_lane_luts") * scale)
    f = fpga.get(("ecp5", "dsps"), {}).get(pe.kind)
    dsps = (round(_lane_model(f, cfg)) if f is not None
            else lanes if pe.kind == "mac" else 0)
    table_tr = table_luts = 0.0
    if pe.kind == "lut":
        tscale = pe.rows / 2 * cfg.table_entry_bits / 16
        table_tr, table_luts = a.table_unit_tr * tscale, a.table_unit_luts * tscale
    sram_tr, ebr = 0.0, 0
    banks = cfg.sram.banks
    for b in buffers_used(cfg):
        kib = getattr(cfg.sram, f"{b}_kib") / banks
        bits = kib * 1024 * 8
        sram_tr += banks * TRANSISTORS_PER_BIT * bits / sram_efficiency(kib)
        ebr += banks * math.ceil(bits / EBR_BITS)
    return {"area_mtr": (pe_tr + table_tr + sram_tr) / 1e6,
            "area_pe_mtr": pe_tr / 1e6, "area_table_unit_mtr": table_tr / 1e6,
            "area_sram_mtr": sram_tr / 1e6,
            "ecp5_luts": round(pe_luts + table_luts),
            "ecp5_dsps": dsps, "ecp5_ebr": ebr}
