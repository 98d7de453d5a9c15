"""A fast, deterministic stand-in for `dse.evaluate.evaluate`, for tests of the driver, the
store and the executors (the acceptance tests' "fake slow evaluator").

Its metrics are closed forms of the config (the real area model, and throughputs from the
lane count and clock), so two runs agree to the byte. `BITLUT_DSE_FAKE_DELAY` (seconds per
point) makes it slow; `BITLUT_DSE_FAKE_LOG` names a file it appends `<stage> <key>` to before
each evaluation, which is how tests see what ran, and how often. `BITLUT_DSE_FAKE_DIE` names
a flag file: the first worker to evaluate a point while it is absent creates it and kills its
own process with SIGKILL, mid-task (a worker dying under the driver).
"""

import os
import signal
import time

from dse import area as area_model
from dse.evaluate import PHASE_METRICS


def fake_point(cfg, workload, stage):
    metrics = area_model.area(cfg)
    pe = cfg.pe
    lanes = pe.rows * pe.cols * max(pe.group, 1)
    for phase, m in workload.tokens.items():
        # throughput saturating in the lane count, capped by bandwidth; the sim rung 3% slower
        tok_s = cfg.clock_mhz * lanes * m / (lanes + 64 * m) / (1.03 if stage == "sim" else 1)
        tok_s = min(tok_s, cfg.dram.gbps * 4 * m) / workload.blocks
        metrics.update({f"{phase}_{k}": v for k, v in zip(PHASE_METRICS, (
            tok_s, 1 / (tok_s * 7 + lanes), 1e9 / tok_s, 1e6 / tok_s, 1 / tok_s, 1e-3 * lanes,
            tok_s / metrics["area_mtr"], tok_s * 7 + lanes, 0.0, 0.0, 0.0), strict=True)})
        metrics[f"{phase}_bound"] = "matmul"
    return metrics


def _maybe_die(flag):
    if not flag:
        return
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def evaluate(stage, workload, items):
    delay = float(os.environ.get("BITLUT_DSE_FAKE_DELAY", "0"))
    log = os.environ.get("BITLUT_DSE_FAKE_LOG")
    out = []
    for key, cfg in items:
        if log:
            with open(log, "a") as f:        # one short O_APPEND write: lines never interleave
                f.write(f"{stage} {key}\n")
        time.sleep(delay)
        _maybe_die(os.environ.get("BITLUT_DSE_FAKE_DIE"))
        out.append({"key": key, "stage": stage, "status": "ok",
                    "metrics": fake_point(cfg, workload, stage), "seconds": delay})
    return out


def write_tiny_q(path, bits=2, seed=0):
    """A small `.q` file (two uniform layers, 128 x 256 and 256 x 128, group 64) for sweeps
    that must run in seconds."""
    import numpy as np

    import quant
    from quant.layer import QModel
    from quant.random_layer import uniform_layer
    rng = np.random.default_rng(seed)
    layers = [uniform_layer(rng, 128, 256, bits, 64, name="up"),
              uniform_layer(rng, 256, 128, bits, 64, name="down")]
    quant.save(path, QModel(model="tiny", quantizer={"name": "random", "settings": {}},
                            layers={q.name: q for q in layers}))
    return path


def write_tiny_block_q(path, bits=4, head_dim=128, seed=0):
    """A one-block `.q` file that records the model's shape, for workloads with a decode
    context that must run in seconds: hidden 256, intermediate 512, 4 heads of `head_dim` in 2
    KV heads (GQA), random uniform `bits`-bit layers (group 64), unit norms."""
    import numpy as np

    import quant
    from quant.layer import QModel
    from quant.model_shape import FINAL_NORM, NORM_ROLES, ModelShape
    from quant.random_layer import uniform_layer
    shape = ModelShape(hidden=256, intermediate=512, heads=4, kv_heads=2, head_dim=head_dim,
                       rope_theta=10000.0, norm_eps=1e-6, vocab=512, blocks=2)
    rng = np.random.default_rng(seed)
    layers = [uniform_layer(rng, n, k, bits, 64, name=role)
              for role, (n, k) in shape.layer_shapes.items()]
    norms = {name: np.ones(shape.hidden, np.float32) for name in (*NORM_ROLES, FINAL_NORM)}
    quant.save(path, QModel(model="tiny-block", quantizer={"name": "random", "settings": {}},
                            layers={q.name: q for q in layers}, shape=shape, norms=norms))
    return path
