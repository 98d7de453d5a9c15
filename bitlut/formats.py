"""The weight formats a `.q` file can hold, shared by the quantizer (`quant/`) and the hardware
description (`arch/`), which must agree on them and may not import each other.

- `uniform`: b-bit codes with a scale and zero per group, any width up to 8 (the bit-serial and
  MAC arrays take them all; the LUT array the widths its config lists).
- `codebook` (CLAQ): one codebook of 2^b centroids per input column, b = 2..4. A 1-bit codebook
  would be two centroids, which 1-bit uniform codes with a scale and zero express exactly, so
  1-bit columns are uniform.
"""

KINDS = ("codebook", "uniform")
UNIFORM_BITS = tuple(range(1, 9))
CODEBOOK_BITS = (2, 3, 4)
