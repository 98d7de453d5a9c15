"""One peak-throughput definition: `arch.roofline.peak_macs_per_cycle`, and the weights per cycle
that `bitlut arch check` prints derived from it, hand-checked on the shipped configs."""

import pytest

from arch import config, roofline

KINDS = ("lut", "bitserial", "mac")


@pytest.mark.parametrize("kind, weights", [("lut", 256), ("bitserial", 256), ("mac", 1024)])
def test_shipped_configs_weights_per_cycle(kind, weights):
    # lut and bitserial 2x64 g4 at 1 bit: the two token rows share 64*4/1 weights per cycle;
    # mac 32x32 weight-stationary: every PE holds its own weight
    assert roofline.peak_weights_per_cycle(config.load(kind)) == weights


@pytest.mark.parametrize("kind", KINDS)
def test_weights_per_cycle_follow_the_mac_peak(kind):
    cfg = config.load(kind)
    sharing = 1 if kind == "mac" else cfg.pe.rows
    for b in cfg.pe.weight_bits:
        assert roofline.peak_weights_per_cycle(cfg, "uniform", b) * sharing == \
            roofline.peak_macs_per_cycle(cfg, "uniform", b)


def test_arch_check_prints_the_derived_peak(capsys):
    from bitlut.cli import main
    paths = [str(config.CONFIG_DIR / f"{kind}.yaml") for kind in ("lut", "mac")]
    assert main(["arch", "check", *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "peak 256 weights/cycle" in out[0]
    assert "peak 1024 weights/cycle" in out[1]
