"""The synthetic-layer factory (`quant.random_layer`): the same seed gives the same layer (tests,
`bitlut sim --gemm` figures and the SCALE-Sim comparison depend on it), and the layers are valid.

The digests were taken from the four implementations the factory replaced (tests/layers.py,
sim/cli.py, sim/scalesim_compare.py, and bench through sim/cli.py); a change to the order or the
kind of draws changes them."""

import hashlib

import numpy as np
import pytest

import quant
from quant.layer import QModel
from quant.random_layer import codebook_layer, gemm_layer, uniform_layer


def _digest(layer):
    h = hashlib.sha256()
    for field in ("codes", "bits", "scales", "zeros", "codebooks", "outlier_rows",
                  "outlier_cols", "outlier_vals"):
        a = getattr(layer, field, None)
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("build, digest", [
    (lambda: uniform_layer(np.random.default_rng(3), 17, 33, 4, 8, outliers=9),
     "0fa1e9786d93d3f9"),
    (lambda: codebook_layer(np.random.default_rng(3), 40, 300, (2, 3, 4), outliers=5),
     "cdaf89cadb6e80a0"),
    (lambda: gemm_layer(2, 100, 7, 3), "b57c314ba842ba40"),
    # sim.scalesim_compare.ours(5, 100, 70)
    (lambda: uniform_layer(0, 70, 100, 8, group_size=100, name="gemm", scale_min=1.0,
                           scale_spread=0.0, zero=0), "7477c74dfcb90164"),
])
def test_same_seed_same_layer_as_before(build, digest):
    assert _digest(build()) == digest


def test_seed_or_generator():
    a = uniform_layer(7, 9, 20, 2, 8, outliers=4)
    b = uniform_layer(np.random.default_rng(7), 9, 20, 2, 8, outliers=4)
    assert _digest(a) == _digest(b)


def test_layers_pass_the_q_format_checks(tmp_path):
    # quant.save validates every layer (shapes, code ranges, outlier order) and load reads it back
    layers = {"u": uniform_layer(1, 9, 21, 3, 8, name="u", outliers=5),
              "c": codebook_layer(1, 9, 21, (2, 4), name="c", outliers=5),
              "gemm_4x300x16": gemm_layer(4, 300, 16, 2)}
    quant.save(tmp_path / "m.q", QModel("tiny", {"name": "test", "settings": {}}, layers))
    back = quant.load(tmp_path / "m.q").layers
    assert {name: _digest(q) for name, q in back.items()} == \
        {name: _digest(q) for name, q in layers.items()}
    g = back["gemm_4x300x16"]
    assert g.group_size == 128 and (g.zeros == 2).all()
