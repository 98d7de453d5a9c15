"""`bitlut sim` on the whole model (sim/block_driver.py, docs/block.md), as a user runs it: the
model section and its JSON, the figures' internal consistency (operators sum to the block, the
bytes split sums to the total, the KV bytes are the cache's closed form), and the one-line
refusals of bad model options."""

import json

import numpy as np
import pytest

from arch import config, kv
from quant import qformat
from quant.method import Method
from quant.synthetic import SHAPES, quantize_model


@pytest.fixture(scope="module")
def tiny_q(tmp_path_factory):
    """llama-tiny (GQA: 4 heads over 2 KV heads of 64), RTN 4-bit: a .q with its shape."""
    path = tmp_path_factory.mktemp("model") / "tiny.q"
    qformat.save(path, quantize_model("llama-tiny", Method(name="rtn", bits=4)))
    return path


@pytest.fixture(scope="module")
def old_q(tmp_path_factory, tiny_q):
    """The same file as a version before the model's shape was recorded."""
    path = tmp_path_factory.mktemp("model") / "old.q"
    m = qformat.load(tiny_q)
    m.shape, m.norms = None, None
    qformat.save(path, m)
    return path


def test_the_model_section_and_its_json(cli, tiny_q, tmp_path):
    out = tmp_path / "r.json"
    r = cli("sim", tiny_q, "--no-check", "--tokens", "1", "--ctx", "200", "--prefill", "32",
            "--kv", "int4", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "decode at a 200-token context" in r.stdout
    assert "prefill of 32 tokens: time to first token" in r.stdout
    model = json.loads(out.read_text())["model"]
    dec, pre = model["phases"]
    assert (dec["phase"], dec["past"], pre["phase"], pre["tokens"]) == ("decode", 200,
                                                                        "prefill", 32)
    shape = SHAPES["llama-tiny"]
    for ph in (dec, pre):
        assert sum(o["cycles"] for o in ph["ops"]) == ph["cycles"]
        tot = ph["model"]
        # the model: block x blocks + the final norm (the attention norm's cycles) + the lm_head
        # + the embedding read
        norm = next(o["cycles"] for o in ph["ops"] if o["name"] == "attn_norm")
        assert tot["cycles"] >= ph["cycles"] * shape.blocks + norm + ph["lm_head"]["cycles"]
        assert tot["tokens_per_s"] == pytest.approx(
            ph["tokens"] / (tot["cycles"] * config.load("lut").cycle_ns * 1e-9))
    # decode reads the whole cache once per block: 201 tokens (200 cached and the new one)
    # of K and V, padded to whole 64-token tiles (256), codes and records: at least the
    # cache's closed form, and not more than its tile padding
    per_block = kv.bytes_per_token(kv.KVFormat("int4"), shape.kv_heads, shape.head_dim)
    kv_bytes = dec["model"]["dram_bytes_per_token"]["kv"] / shape.blocks
    assert 201 * per_block <= kv_bytes <= 256 * per_block + 4096
    assert dec["model"]["kv_share"] == pytest.approx(
        kv_bytes * shape.blocks / sum(dec["model"]["dram_bytes_per_token"].values()))


def test_a_longer_context_reads_more_cache(cli, tiny_q, tmp_path):
    """Decode time grows with the context and the KV share with it; an int2 cache reads fewer
    bytes than an fp16 one."""
    runs = {}
    for ctx, fmt in ((64, "fp16"), (1000, "fp16"), (1000, "int2")):
        out = tmp_path / f"{ctx}{fmt}.json"
        r = cli("sim", tiny_q, "--no-check", "--tokens", "1", "--ctx", ctx, "--prefill", "0",
                "--kv", fmt, "--json", out)
        assert r.returncode == 0, r.stderr
        runs[ctx, fmt] = json.loads(out.read_text())["model"]["phases"][0]["model"]
    assert runs[1000, "fp16"]["kv_share"] > runs[64, "fp16"]["kv_share"]
    assert runs[1000, "fp16"]["tokens_per_s"] < runs[64, "fp16"]["tokens_per_s"]
    assert runs[1000, "int2"]["dram_bytes_per_token"]["kv"] < \
        runs[1000, "fp16"]["dram_bytes_per_token"]["kv"] / 4


@pytest.mark.parametrize("args,pattern", [
    (["--ctx", "100000"], r"--ctx: must be from 0 to 65536, not 100000"),
    (["--ctx", "20000"], r"--ctx: a context of 20001 tokens must be at most \d+, the reach"),
    (["--kv", "int3"], r"--kv must be one of fp16, int8, int4, int2, not 'int3'"),
    (["--kv", "int8"], r"--kv int8 must be a format the lut array serves"),
    (["--kv-group", "48", "--kv", "int4"], r"K scale group must be a power of two"),
])
def test_bad_model_options_get_one_line(cli, tiny_q, args, pattern):
    import re
    r = cli("sim", tiny_q, "--no-check", "--tokens", "1", "--prefill", "0", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr


def test_a_file_without_the_shape_runs_its_layers_and_says_why_not_more(cli, old_q):
    r = cli("sim", old_q, "--no-check", "--tokens", "1")
    assert r.returncode == 0, r.stderr
    assert "model: not simulated" in r.stdout and "re-quantize" in r.stdout
    r = cli("sim", old_q, "--no-check", "--tokens", "1", "--ctx", "64")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "needs the model's shape" in r.stderr


def test_a_batch_reads_the_weights_once_for_all_its_sequences(cli, tiny_q, tmp_path):
    runs = {}
    for b in (1, 4):
        out = tmp_path / f"b{b}.json"
        r = cli("sim", tiny_q, "--no-check", "--tokens", "1", "--ctx", "100", "--prefill", "0",
                "--batch", b, "--json", out)
        assert r.returncode == 0, r.stderr
        runs[b] = json.loads(out.read_text())["model"]["phases"][0]["model"]
    w1, w4 = (runs[b]["dram_bytes_per_token"]["weights"] for b in (1, 4))
    assert w4 == pytest.approx(w1 / 4, rel=0.02)
    assert runs[4]["tokens_per_s"] > 2 * runs[1]["tokens_per_s"]
    assert np.isfinite(runs[4]["energy_j_per_token"])


def test_full_simulates_every_block_of_a_checkpoint(cli, tmp_path):
    """A checkpoint's .q holds every block, each with its own weights: `--full` runs each
    block's program and sums them (block 0 and block 1 here), instead of block 0 twice."""
    from quant import model_shape
    from quant.checkpoint import quantize_checkpoint
    from sim import block_driver
    from tests.tiny_models import save_llama
    folder = tmp_path / "ck"
    save_llama(folder, random_norms=True)
    q = quantize_checkpoint(folder, Method(name="rtn", bits=4), random_tokens=True)
    qformat.save(tmp_path / "ck.q", q)
    out = tmp_path / "full.json"
    r = cli("sim", tmp_path / "ck.q", "--no-check", "--tokens", "1", "--ctx", "40",
            "--prefill", "0", "--kv", "fp16", "--full", "--json", out)
    assert r.returncode == 0, r.stderr
    dec = json.loads(out.read_text())["model"]["phases"][0]
    cfg = config.load("lut")
    fmt = kv.KVFormat("fp16")
    each = [block_driver.decode(q.shape, model_shape.block_layers(q, b),
                                model_shape.norm_weights(q, b), cfg, 40, fmt)["cycles"]
            for b in range(q.shape.blocks)]
    assert dec["blocks_simulated"] == 2 and dec["cycles"] == sum(each)
