"""The roofline figure: each layer placed by arithmetic intensity (MACs per DRAM byte) and the
performance its bound allows, under the accelerator's compute roof and bandwidth slope.

Layer names never overlap one another, the roof labels, the legend or a marker: layers that land
on one spot share a label, and each label takes the nearest free place around its point (with a
leader line when it had to move away), or, when the plot has none left, a place in a column
beside the plot. `tests/test_roofline_plot.py` renders the shipped block and checks the boxes.
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import ConnectionPatch  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from arch import roofline  # noqa: E402
from bitlut.args import plot_format  # noqa: E402
from bitlut.fileio import AtomicPath  # noqa: E402

DPI = 120
LABEL_SIZE = 7                       # points
MARKER_PT = 7                        # marker size
SAME_SPOT_PX = 8                     # markers closer than this share a label
MARKER_PX = MARKER_PT * DPI / 72 / 2 + 1      # half the side of the box a marker keeps free
RADII_PX = (8, 14, 22, 32, 44, 58, 75, 95, 120, 150)
ANGLES = [k * math.pi / 8 for k in (0, 8, 4, 12, 2, 6, 10, 14, 1, 7, 9, 15, 3, 5, 11, 13)]
COLUMN_PAD_PX = 6


def plot(rows, config, path, title=None, measured=None):
    """`rows`: dicts with name, tokens, intensity (MACs/byte), peak (MACs/cycle) and
    attainable (MACs/cycle), and optionally roof (what the peak is of; default "peak");
    `measured`: optional {name@tokens: MACs/cycle} from simulation. The format (PNG, SVG or
    PDF) follows `path`'s suffix (`UserError` for any other)."""
    fmt = plot_format(path)
    fig, _, _ = figure(rows, config, title, measured)
    with AtomicPath(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI)
    plt.close(fig)
    return path


def attention_row(config, kv_fmt, bound, tokens):
    """The figure's row of a block's attention (`arch.roofline.attention_bound`): named with its
    KV format, under the roof of the unit that runs its products (the vector unit for fp16)."""
    row = {"name": roofline.attention_name(kv_fmt), "tokens": tokens,
           "intensity": bound.intensity, "peak": roofline.attention_peak(config, kv_fmt),
           "attainable": bound.ops / bound.cycles}
    if kv_fmt.fp16:
        row["roof"] = "vector unit"
    return row


def figure(rows, config, title=None, measured=None):
    """The figure of `plot`, unsaved: (figure, axes, the layer labels' `Text` artists)."""
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=DPI)
    bw = config.dram_bytes_per_cycle
    xs = [r["intensity"] for r in rows]
    lo, hi = min(xs + [1.0]) / 4, max(xs + [1.0]) * 4
    roofs = {}
    for r in rows:
        roofs.setdefault(r["peak"], set()).add(r.get("roof", "peak"))
    for peak in sorted(roofs):
        ridge = peak / bw
        ax.plot([lo, ridge, hi], [lo * bw, peak, peak], "-", color="0.3", lw=1.2)
        ax.annotate(f"{' / '.join(sorted(roofs[peak]))} {peak:,.0f} MAC/cycle", (hi, peak),
                    ha="right", va="bottom", fontsize=8)
    ax.annotate(f"DRAM {bw:.1f} B/cycle", (lo * 1.5, lo * 1.5 * bw), fontsize=8, rotation=30)
    markers = {}                     # one marker shape and colour per phase
    for r in rows:
        key = r["tokens"]
        k = markers.setdefault(key, len(markers))
        ax.plot(r["intensity"], r["attainable"], "os^dv<>"[k % 7], color=f"C{k % 10}",
                ms=MARKER_PT, alpha=0.8, label=f"M={key} bound")
        sim = (measured or {}).get(f"{r['name']}@{key}")
        if sim is not None:
            ax.plot([r["intensity"]] * 2, [sim, r["attainable"]], ":", color="crimson", lw=0.8)
            ax.plot(r["intensity"], sim, "x", color="crimson", label="simulated")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs / DRAM byte)")
    ax.set_ylabel("attainable MACs / cycle")
    ax.set_title(title or f"roofline: {config.tag}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    texts = _label(fig, ax, rows, measured or {})
    return fig, ax, texts


def _groups(ax, rows):
    """[(x, y, names)]: rows of one phase whose markers (nearly) coincide on screen."""
    groups = []
    for r in rows:
        px = ax.transData.transform((r["intensity"], r["attainable"]))
        for g in groups:
            if g["tokens"] == r["tokens"] and math.dist(g["px"], px) < SAME_SPOT_PX:
                g["names"].append(r["name"])
                break
        else:
            groups.append({"tokens": r["tokens"], "px": px, "names": [r["name"]],
                           "xy": (r["intensity"], r["attainable"])})
    return groups


def _label_text(names, per_line=3):
    lines = [", ".join(names[i:i + per_line]) for i in range(0, len(names), per_line)]
    return ",\n".join(lines)


def _label(fig, ax, rows, measured):
    """Place one label per group of coinciding markers; returns the labels' `Text` artists."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = [t.get_window_extent(renderer) for t in ax.texts]
    taken.append(ax.get_legend().get_window_extent(renderer))
    for line in ax.get_lines():
        if line.get_marker() not in (None, "None", ""):
            for px in ax.transData.transform(line.get_xydata()):
                taken.append(Bbox.from_extents(px[0] - MARKER_PX, px[1] - MARKER_PX,
                                               px[0] + MARKER_PX, px[1] + MARKER_PX))
    frame = ax.get_window_extent(renderer)
    to_data = ax.transData.inverted()
    texts, homeless = [], []
    # the most crowded spots first: they have the fewest free places
    for g in sorted(_groups(ax, rows), key=lambda g: -len(g["names"])):
        t = ax.text(0, 0, _label_text(g["names"]), fontsize=LABEL_SIZE)
        box = _free_place(t, g["px"], renderer, taken, frame, to_data)
        if box is None:
            homeless.append((g, t))
            continue
        taken.append(box)
        texts.append(t)
        if math.dist(g["px"], _nearest_corner(box, g["px"])) > RADII_PX[1]:
            ax.annotate("", g["xy"], xytext=to_data.transform(_nearest_corner(box, g["px"])),
                        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
    if homeless:
        texts += _column(fig, ax, homeless, renderer)
    return texts


def _free_place(text, anchor, renderer, taken, frame, to_data):
    """Move `text` to the nearest candidate place around `anchor` (display px) whose box is
    inside `frame` and meets none of `taken`; returns the box, or None if there is none."""
    for radius in RADII_PX:
        for a in ANGLES:
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            ha = "left" if dx > 1e-6 else "right" if dx < -1e-6 else "center"
            va = "bottom" if dy > 1e-6 else "top" if dy < -1e-6 else "center"
            text.set_ha(ha)
            text.set_va(va)
            text.set_position(to_data.transform((anchor[0] + dx, anchor[1] + dy)))
            box = text.get_window_extent(renderer)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                      and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(b) for b in taken):
                return box
    return None


def _nearest_corner(box, px):
    """The point of `box` nearest to `px` (where a leader line ends)."""
    return (min(max(px[0], box.x0), box.x1), min(max(px[1], box.y0), box.y1))


def _column(fig, ax, homeless, renderer):
    """Labels that found no free place in the plot, stacked beside it (the figure widens to
    hold them), top to bottom in the order of their points, each with a leader line."""
    w_in, h_in = fig.get_size_inches()
    width_px = max(t.get_window_extent(renderer).width for _, t in homeless) + 2 * COLUMN_PAD_PX
    extra_in = width_px / fig.dpi
    scale = w_in / (w_in + extra_in)
    for a in fig.axes:                       # keep every axes where it was, in pixels
        x0, y0, w, h = a.get_position().bounds
        a.set_position([x0 * scale, y0, w * scale, h])
    fig.set_size_inches(w_in + extra_in, h_in)
    fig.canvas.draw()
    frame = ax.get_window_extent(renderer)
    to_fig = fig.transFigure.inverted()
    x = frame.x1 + COLUMN_PAD_PX
    y = frame.y1
    out = []
    for g, t in sorted(homeless, key=lambda gt: -gt[0]["px"][1]):
        t.remove()
        t = fig.text(*to_fig.transform((x, y)), _label_text(g["names"]), fontsize=LABEL_SIZE,
                     ha="left", va="top")
        box = t.get_window_extent(renderer)
        y = box.y0 - COLUMN_PAD_PX
        fig.add_artist(ConnectionPatch(g["xy"], to_fig.transform((box.x0, box.y1 - 4)),
                                       "data", "figure fraction", axesA=ax, color="0.5",
                                       lw=0.6))
        out.append(t)
    return out
