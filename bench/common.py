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
