"""The roofline estimator: hand-checked bounds (layers, the attention and the KV cache, a block,
LLaMA-7B against papers/peers_turn3.md), GPU estimates, the CLI and its figure."""

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from arch import config, kv, roofline
from tests.hostile import assert_one_line, bitlut, tiny_model

LUT, MAC = config.load("lut"), config.load("mac")


def test_peaks_by_kind_hand_checked():
    # LUT 2x64, g=4: uniform 2-bit -> 2*64*4/2 = 256 MACs/cycle; 1-bit -> 512
    assert roofline.peak_macs_per_cycle(LUT, "uniform", 2) == 256
    assert roofline.peak_macs_per_cycle(LUT, "uniform", 1) == 512
    # codebook 2-bit: two columns per 4-bit index -> 2*64*2 = 256, 4-bit: one -> 128
    assert roofline.peak_macs_per_cycle(LUT, "codebook", 2) == 256
    assert roofline.peak_macs_per_cycle(LUT, "codebook", 4) == 128
    assert roofline.peak_macs_per_cycle(MAC, "uniform", 4) == 32 * 32


def test_layer_bound_hand_checked():
    # decode of a 4096x4096 2-bit layer: 4 MiB of weights + 4 KiB x + 4 B sx + 16 KiB y
    b = roofline.layer_bound(LUT, 1, 4096, 4096, "uniform", 2, 4096 * 4096 // 4)
    assert b.dram_bytes == 4096 * 4096 // 4 + 4096 + 4 + 4 * 4096
    assert b.memory_cycles == pytest.approx(b.dram_bytes / 25.6)
    assert b.compute_cycles == pytest.approx(4096 * 4096 / 256)
    assert b.bound == "memory"
    big = roofline.layer_bound(LUT, 2048, 4096, 4096, "uniform", 2, 4096 * 4096 // 4)
    assert big.bound == "compute"


def test_gpu_estimate_hand_checked():
    h100 = roofline.load_gpus()["h100_sxm"]
    m, n, k = 1, 4096, 4096
    t = h100.layer_seconds(m, n, k, 2 * n * k)
    memory = (2 * n * k + 2 * k + 2 * n) / (3350e9 * 0.8)
    assert t == pytest.approx(memory + 5e-6)
    with pytest.raises(Exception, match=r"dtype must be one of fp16, fp8, int8, not 'fp4'"):
        h100.layer_seconds(m, n, k, 1, dtype="fp4")


def test_cli_table_and_plot(cli, tmp_path):
    import quant
    from quant.layer import QModel
    from quant.random_layer import codebook_layer
    rng = np.random.default_rng(0)
    q = QModel("t", {"name": "claq", "settings": {}},
               {"a": codebook_layer(rng, 64, 128, (2, 4), name="a")})
    path = tmp_path / "t.q"
    quant.save(path, q)
    png = tmp_path / "r.png"
    r = cli("roofline", path, "--arch", "lut", "--tokens", "1,64", "--plot", png)
    assert r.returncode == 0, r.stderr
    assert "memory" in r.stdout and "h100_sxm" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the decoder block: attention and the KV cache ---------------------------------------------
TINY = SimpleNamespace(heads=4, kv_heads=2, head_dim=64)     # llama-tiny's attention


def test_attention_bound_hand_checked():
    # int4 KV, per KV head and token: K and V codes 64 * 4 / 8 = 32 B each, records (fp16
    # scale, int16 zero) for K's one group of 64 and V's: 8 B -> 72 B; two KV heads: 144 B
    int4, fp16 = kv.KVFormat("int4"), kv.KVFormat("fp16")
    b = roofline.attention_bound(LUT, TINY, 128, int4)
    assert b.dram_bytes == 129 * 144 == 18576         # 128 rows read, the new one written
    assert b.ops == 2 * 256 * 129 == 66048            # q·Kᵀ and p·V over 129 tokens
    assert b.compute_cycles == 66048 / 128            # LUT 2x64, g=4, 4-bit planes
    assert b.memory_cycles == pytest.approx(18576 / 25.6)
    assert b.bound == "memory"
    # fp16: 2 B x 64 x (K, V) x 2 heads = 512 B a token, on 16 vector lanes: with two query
    # heads per KV head, a MAC per byte, and the vector unit is the bound
    f = roofline.attention_bound(LUT, TINY, 128, fp16)
    assert (f.dram_bytes, f.ops, f.compute_cycles) == (129 * 512, 66048, 66048 / 16)
    assert f.intensity == 1.0 and f.bound == "compute"
    # a causal prefill of 4 tokens from an empty cache: rows attend to 1, 2, 3, 4 tokens
    p = roofline.attention_bound(LUT, TINY, 0, int4, tokens=4)
    assert (p.ops, p.dram_bytes) == (2 * 256 * 10, 4 * 144)
    # 3 tokens after 5 cached: 6 + 7 + 8 attended
    assert roofline.attention_bound(LUT, TINY, 5, int4, tokens=3).ops == 2 * 256 * 21
    # the bit-serial array at 2-bit codes: 8x8 lanes x group 8 / 2 planes = 256 MACs a cycle
    bs = config.load("bitserial")
    assert roofline.attention_peak(bs, kv.KVFormat("int2")) == \
        bs.pe.rows * bs.pe.cols * bs.pe.group / 2
    assert roofline.attention_peak(MAC, kv.KVFormat("int8")) == 32 * 32


@dataclass
class Stub:
    """The members of a `quant.layer.QLayer` that the bounds read."""
    shape: tuple
    bits: float = 2
    kind: str = "uniform"

    def bits_per_weight(self, outliers=True):
        return self.bits


def test_block_bound_hand_checked():
    # hidden 16, intermediate 32, two heads of 8, one KV head; 2-bit weights, fp16 KV
    shape = SimpleNamespace(heads=2, kv_heads=1, head_dim=8)
    sizes = {"q_proj": (16, 16), "k_proj": (8, 16), "v_proj": (8, 16), "o_proj": (16, 16),
             "gate_proj": (32, 16), "up_proj": (32, 16), "down_proj": (16, 32)}
    layers = {r: Stub(s) for r, s in sizes.items()}
    b = roofline.block_bound(LUT, shape, layers, 10, kv.KVFormat("fp16"))
    assert list(b.ops) == ["q_proj", "k_proj", "v_proj", "attention", "o_proj", "gate_proj",
                           "up_proj", "down_proj"]
    # weights: (256 + 128 + 128 + 256 + 512 + 512 + 512) x 2 bits = 576 B; activations per
    # layer: int8 x (K B) + its fp32 scale + fp32 y (4N B): 84 + 52 + 52 + 84 + 148 + 148 + 100
    # KV: 2 B x 8 x (K, V) = 32 B a token, 10 read + 1 written
    assert b.dram == {"weights": 576, "kv": 352, "activations": 668}
    assert b.kv_share == pytest.approx(352 / 1596)
    # the linear layers are DRAM-bound (1244 B at 25.6 B/cycle), the attention on the vector
    # unit: 2 x 16 x 11 MACs / 16 lanes = 22 cycles against 352 / 25.6 = 13.75
    assert b.ops["attention"].cycles == 22
    assert b.cycles == pytest.approx(1244 / 25.6 + 22)


def llama7b(bits=2.215):
    from quant.synthetic import SHAPES
    shape = SHAPES["llama7b"]
    return shape, {r: Stub(s, bits, "codebook") for r, s in shape.layer_shapes.items()}


def test_llama7b_kv_bytes_match_the_peers_note():
    # papers/peers_turn3.md §4a: LLaMA-7B, 2.215 bits a weight, fp16 lm_head, 25.6 GB/s
    shape, layers = llama7b()
    fp16 = kv.KVFormat("fp16")
    # "the KV cache at fp16 is 2·L·h·2 B = 0.5 MiB per context token"
    assert 32 * kv.bytes_per_token(fp16, 32, 128) == 2**19
    m = roofline.model_bound(LUT, shape, layers, 1024, fp16, lm_head_bits=16)
    assert m.dram["kv"] == 1025 * 2**19                  # 0.54 GB at ctx 1024
    # weights: 6.476 G linear at 2.215 bits + a 131 M fp16 lm_head = 2.06 GB; 2.59 GB a
    # token with the cache; "the fp16 KV cache at ctx 1024 is already 21% of the bytes"
    assert m.dram["weights"] / 1e9 == pytest.approx(2.06, abs=0.005)
    assert sum(m.dram.values()) / 1e9 == pytest.approx(2.59, abs=0.01)
    assert m.kv_share == pytest.approx(0.21, abs=0.005)
    # tokens/s on lut.yaml: 12.5 at ctx 0 and 9.9 at ctx 1024 (fp16 KV), 11.0 with int8 KV;
    # within 1%: the bound adds the activations (7 MB a token) and the new KV rows
    assert m.tokens_per_s == pytest.approx(9.9, rel=0.01)
    m0 = roofline.model_bound(LUT, shape, layers, 0, fp16, lm_head_bits=16)
    assert m0.tokens_per_s == pytest.approx(12.5, rel=0.01)
    m8 = roofline.model_bound(LUT, shape, layers, 1024, kv.KVFormat("int8"), lm_head_bits=16)
    assert m8.tokens_per_s == pytest.approx(11.0, rel=0.01)
    # every part of decode is DRAM-bound, the fp16 attention on 16 lanes included
    assert all(b.bound == "memory" for b in m.block.ops.values())


@pytest.fixture(scope="module")
def shaped_q(tmp_path_factory):
    """The synthetic llama-tiny block (RTN 4-bit), which records its model's shape."""
    import quant
    from quant import synthetic
    from quant.method import Method
    path = tmp_path_factory.mktemp("roofline") / "tiny.q"
    quant.save(path, synthetic.quantize_model("llama-tiny", Method("rtn", 4, 64)))
    return path


def test_cli_prints_the_attention_and_the_kv_bytes(shaped_q, tmp_path, monkeypatch):
    from reports import roofline_plot
    got = {}
    real = roofline_plot.plot

    def plot(rows, *a, **k):
        got["rows"] = rows
        return real(rows, *a, **k)
    monkeypatch.setattr(roofline_plot, "plot", plot)
    png = tmp_path / "r.png"
    r = bitlut("roofline", shaped_q, "--arch", "lut", "--ctx", "128", "--kv", "int4",
               "--tokens", "1,4", "--gpu", "--plot", png)
    assert r.ok, r.describe()
    lines = r.out.splitlines()
    att = [ln.split() for ln in lines if ln.lstrip().startswith("attention int4 KV")]
    # decode after 128 cached tokens (the hand-checked bound above); a 4-token prefill from an
    # empty cache: 5120 MACs / 128 a cycle = 40 cycles against 576 B / 25.6 = 22.5
    assert [a[3:6] for a in att] == [["1", "3.56", "memory"], ["4", "8.89", "compute"]]
    assert att[0][6] == "726"                          # 18576 B / 25.6 B a cycle
    assert "KV cache int4, 144 bytes per token per block" in r.out
    assert "M=1 (decode after 128 cached tokens)" in r.out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [x for x in got["rows"] if x["name"] == "attention int4 KV"]
    assert [(x["tokens"], x["peak"]) for x in rows] == [(1, 128), (4, 128)]
    assert rows[0]["intensity"] == pytest.approx(66048 / 18576)
    assert rows[0]["attainable"] == pytest.approx(66048 / (18576 / 25.6))


def test_cli_defaults_and_old_files(shaped_q, tmp_path):
    # a shaped file without --ctx/--kv: the attention at 1,024 tokens, int4 (lut.yaml has no
    # 8-bit weights); a file without a shape prints the layers alone, as before
    r = bitlut("roofline", shaped_q, "--arch", "lut", "--tokens", "1", "--gpu")
    assert r.ok and "attention int4 KV" in r.out and "decode after 1,024" in r.out
    path = tmp_path / "old.q"
    import quant
    quant.save(path, tiny_model())
    r = bitlut("roofline", path, "--arch", "lut", "--tokens", "1", "--gpu")
    assert r.ok and "attention" not in r.out and "KV" not in r.out


def test_cli_bad_input(shaped_q, tmp_path):
    import quant
    path = tmp_path / "old.q"
    quant.save(path, tiny_model())
    assert_one_line(bitlut("roofline", path, "--ctx", "64"),
                    r"old\.q: bitlut roofline --ctx needs the model's shape .* re-quantize it")
    assert_one_line(bitlut("roofline", path, "--kv", "int4"), r"roofline --kv needs the model")
    assert_one_line(bitlut("roofline", shaped_q, "--kv", "bf16"),
                    r"error: --kv must be one of fp16, int8, int4, int2, not 'bf16'$")
    assert_one_line(bitlut("roofline", shaped_q, "--arch", "lut", "--kv", "int8"),
                    r"--kv int8 must be a format the lut array serves")
    assert_one_line(bitlut("roofline", shaped_q, "--ctx", "-1"), r"--ctx")
