"""The roofline figure: each layer placed by arithmetic intensity (MACs per DRAM byte) and the
performance its bound allows, under the accelerator's compute roof and bandwidth slope."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bitlut.args import plot_format  # noqa: E402
from bitlut.fileio import AtomicPath  # noqa: E402


def plot(rows, config, path, title=None, measured=None):
    """`rows`: dicts with name, tokens, intensity (MACs/byte), peak (MACs/cycle) and
    attainable (MACs/cycle); `measured`: optional {name@tokens: MACs/cycle} from simulation.
    The format (PNG, SVG or PDF) follows `path`'s suffix (`UserError` for any other)."""
    fmt = plot_format(path)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    bw = config.dram_bytes_per_cycle
    xs = [r["intensity"] for r in rows]
    lo, hi = min(xs + [1.0]) / 4, max(xs + [1.0]) * 4
    peaks = sorted({r["peak"] for r in rows})
    for peak in peaks:
        ridge = peak / bw
        ax.plot([lo, ridge, hi], [lo * bw, peak, peak], "-", color="0.3", lw=1.2)
        ax.annotate(f"peak {peak:,.0f} MAC/cycle", (hi, peak), ha="right", va="bottom",
                    fontsize=8)
    ax.annotate(f"DRAM {bw:.1f} B/cycle", (lo * 1.5, lo * 1.5 * bw), fontsize=8, rotation=30)
    markers, spots = {}, {}
    for r in rows:
        key = r["tokens"]
        mk = markers.setdefault(key, "os^dv<>"[len(markers) % 7])
        ax.plot(r["intensity"], r["attainable"], mk, ms=7, alpha=0.8, label=f"M={key}")
        # layers that land on (nearly) one spot are labelled once, with all their names
        spot = (round(math.log10(r["intensity"]), 1), round(math.log10(r["attainable"]), 1), key)
        spots.setdefault(spot, (r["intensity"], r["attainable"], []))[2].append(r["name"])
        if measured and f"{r['name']}@{key}" in measured:
            ax.plot(r["intensity"], measured[f"{r['name']}@{key}"], "x", color="crimson",
                    label="simulated")
    for x, y, names in spots.values():
        ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(6, -12),
                    textcoords="offset points")
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
    with AtomicPath(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
    plt.close(fig)
    return path
