"""The roofline figure's labels: rendered for the shipped LLaMA-7B block (both phases, with its
attention) and for a crowd of layers that cannot all be labelled inside the plot, no two text
boxes (layer labels, roof labels, the legend) meet, none covers a marker, all lie inside the
figure, and every layer is named once. `bitlut sim --plot` of a model adds its attention."""

import itertools
import math

import numpy as np
import pytest
from matplotlib.text import Text

from arch import config, kv, roofline
from quant.synthetic import SHAPES, llama_block
from reports import roofline_plot
from tests.hostile import bitlut

LUT = config.load("lut")


def rows_of(shapes, tokens, bits=2.2, gain=0.95):
    """Figure rows for (name, n, k) `shapes` at each of `tokens`: CLAQ-like mixed precision
    (one column in ten at 4 bits, the rest at 2: 2.2 bits), the simulation at `gain` of the
    bound."""
    rows, measured = [], {}
    for m in tokens:
        for name, n, k in shapes:
            widths = np.full(k, 2)
            widths[::10] = 4
            b = roofline.layer_bound(LUT, m, n, k, "codebook", widths,
                                     math.ceil(bits * n * k / 8))
            rows.append({"name": name, "tokens": m, "intensity": b.intensity,
                         "peak": roofline.peak_macs_per_cycle(LUT, "codebook", bits),
                         "attainable": b.ops / b.cycles})
            measured[f"{name}@{m}"] = gain * b.ops / b.cycles
    return rows, measured


def text_boxes(fig):
    """(text, display box) of every non-empty text and legend of the rendered figure."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    out = [(t.get_text(), Text.get_window_extent(t, r)) for ax in fig.axes for t in ax.texts
           if t.get_text()]
    out += [(t.get_text(), t.get_window_extent(r)) for t in fig.texts if t.get_text()]
    out += [("legend", ax.get_legend().get_window_extent(r)) for ax in fig.axes]
    return out


def assert_readable(fig, ax, labels, rows):
    boxes = text_boxes(fig)
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        assert not ba.overlaps(bb), f"{a!r} {ba.bounds} overlaps {b!r} {bb.bounds}"
    for text, box in boxes:
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), \
            f"{text!r} {box.bounds} leaves the figure {fig.bbox.bounds}"
    for r in rows:
        px = ax.transData.transform((r["intensity"], r["attainable"]))
        for t in labels:
            assert not Text.get_window_extent(t, fig.canvas.get_renderer()).contains(*px), \
                f"{t.get_text()!r} covers the marker of {r['name']}"
    # every layer of every phase named once
    named = sorted(n.strip() for t in labels for n in t.get_text().replace("\n", "").split(","))
    assert named == sorted(r["name"] for r in rows)


def attention_rows(shape, fmt, ctx, tokens):
    """Figure rows of the attention: decode after `ctx` tokens, prefills from an empty cache."""
    rows = []
    for m in tokens:
        b = roofline.attention_bound(LUT, shape, ctx if m == 1 else 0, fmt, m)
        rows.append(roofline_plot.attention_row(LUT, fmt, b, m))
    return rows


def test_the_shipped_block_labels_do_not_overlap():
    shapes = [(s.name, s.n, s.k) for s in llama_block(4096, 11008)]
    rows, measured = rows_of(shapes, (1, 2048))
    rows += attention_rows(SHAPES["llama7b"], kv.KVFormat("int4"), 1024, (1, 2048))
    rows += attention_rows(SHAPES["llama7b"], kv.KVFormat("fp16"), 1024, (1,))
    fig, ax, labels = roofline_plot.figure(rows, LUT, "llama7b.q", measured)
    assert_readable(fig, ax, labels, rows)
    assert len(fig.texts) == 0          # all of them found a place inside the plot
    assert "vector unit 16 MAC/cycle" in [t.get_text() for t in ax.texts]


@pytest.mark.parametrize("count", [40])
def test_a_crowd_of_layers_is_labelled_beside_the_plot(count):
    # `count` layers whose intensities differ by a few percent: they cannot all be labelled
    # around their points, and the ones left over go into a column beside the plot
    shapes = [(f"layer{i:02d}", 512 + 37 * i, 4096) for i in range(count)]
    rows, measured = rows_of(shapes, (1, 16, 2048))
    fig, ax, labels = roofline_plot.figure(rows, LUT, "crowd", measured)
    assert_readable(fig, ax, labels, rows)
    assert len(fig.texts) > 0


def test_plot_writes_a_png(tmp_path):
    rows, measured = rows_of([("a", 256, 256)], (1,))
    path = roofline_plot.plot(rows, LUT, tmp_path / "r.png", measured=measured)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_plot_has_the_models_attention(tmp_path, monkeypatch):
    # `bitlut sim --ctx --plot` of a file with the model's shape: the figure gets the
    # attention of decode and of the prefill, beside the layers, each with its closed-form
    # bound and its simulated point
    import quant
    from quant import synthetic
    q = tmp_path / "tiny.q"
    quant.save(q, synthetic.quantize_model("llama-tiny"))
    got = {}
    real = roofline_plot.plot

    def plot(rows, cfg, path, title=None, measured=None):
        got.update(rows=rows, measured=measured)
        return real(rows, cfg, path, title, measured)
    monkeypatch.setattr(roofline_plot, "plot", plot)
    png = tmp_path / "s.png"
    r = bitlut("sim", q, "--arch", "lut", "--tokens", "1", "--ctx", "128", "--prefill", "16",
               "--kv", "fp16", "--no-check", "--plot", png)
    assert r.ok, r.describe()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    att = [x for x in got["rows"] if x["name"] == "attention fp16 KV"]
    assert [x["tokens"] for x in att] == [1, 16]
    # decode: 2 x 256 x 129 MACs over 129 x 512 B, on the 16 vector lanes
    assert att[0]["intensity"] == 1.0 and att[0]["peak"] == 16 and att[0]["attainable"] == 16
    assert att[0]["roof"] == "vector unit"
    assert set(got["measured"]) >= {"attention fp16 KV@1", "attention fp16 KV@16"}
    assert 0 < got["measured"]["attention fp16 KV@1"] <= 16
    assert sum(x["name"] == "q_proj" for x in got["rows"]) == 1
