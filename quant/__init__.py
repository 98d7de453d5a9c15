"""bitlut quant: CLAQ and the uniform baselines (RTN, GPTQ), calibration, checkpoints and the `.q`
file.

The public API, kept cheap to import (the CLI imports this package; torch loads on first use):

    quant.load(path) -> QModel          # read and validate a .q file (UserError if bad)
    quant.save(path, qmodel)            # write atomically
    quant.dequant(layer) -> Tensor      # float32 [N, K] = dequant(codes) + outliers

Quantizers: `quant.claq.claq`, `quant.uniform.rtn`, `quant.uniform.gptq_uniform`;
calibration: `quant.gptq.Hessian`; whole models: `quant.checkpoint`, `quant.synthetic`.
"""


def load(path):
    """Read and validate a `.q` file; returns a `quant.layer.QModel`."""
    from quant.qformat import load as _load
    return _load(path)


def save(path, qmodel):
    """Write a `quant.layer.QModel` to `path` atomically (validated first)."""
    from quant.qformat import save as _save
    return _save(path, qmodel)


def dequant(layer, outliers=True):
    """Float32 [N, K] weight of a `QLayer`: dequant(codes) + S (the outlier correction)."""
    return layer.dequant(outliers)
