"""Measure the calibration set of `dse.gpu` on a CUDA GPU: `python -m dse.gpu_measure -o F.json`.

The same protocol as dse/data/h100_calibration.json: y = x @ W^T for x [M, K], W [N, K] at the
LLaMA-7B attention-projection shape (K = N = 4096) and M in 1, 16, 128, 2048; fp16
`torch.nn.functional.linear` (TF32 off), the int4 weight-only tinygemm kernel
(`aten._weight_int4pack_mm`, bf16 activations, group 128) and `torch._int_mm` (int8, M > 16);
CUDA events, the median of 50 timings of 10 back-to-back calls after 5 warm-up calls. Also a
2 GiB copy and read for bandwidth, and an 8192^3 fp16 matmul for peak. Then
`bitlut calibrate-gpu F.json --gpu <name>` fits the model to it.
"""

import argparse
import json
import statistics
import sys

SHAPES = [("qkvo", m, 4096, 4096) for m in (1, 16, 128, 2048)]


def _time(torch, fn, reps=10, samples=50, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / reps)
    return statistics.median(times)


def _int4(torch, w):
    """W [N, K] bf16 -> (packed int4, scales_and_zeros) for `_weight_int4pack_mm`, group 128.
    The packing entry point changed across torch releases; both forms are tried."""
    n, k = w.shape
    g = w.float().reshape(n, k // 128, 128)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-6)
    q = ((g - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    zero = lo + 8 * scale                                   # tinygemm's mid-point zero
    sz = torch.stack([scale.reshape(n, -1), zero.reshape(n, -1)], -1).transpose(0, 1)
    sz = sz.contiguous().to(torch.bfloat16)
    try:
        packed = torch.ops.aten._convert_weight_to_int4pack(q, 8)
    except RuntimeError:                                    # newer torch: uint8 pairs
        packed = torch.ops.aten._convert_weight_to_int4pack(
            (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
    return packed, sz


def measure():
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("dse.gpu_measure: a CUDA GPU is required, not found")
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    out = {"device": props.name, "torch": torch.__version__,
           "sm_count": props.multi_processor_count, "linear": []}
    buf = torch.empty(1 << 30, dtype=torch.float16, device=dev)
    nbytes = buf.numel() * 2
    out["copy_bw_GBps_rw"] = 2 * nbytes / _time(torch, lambda b=buf: b.clone(), 2, 10) / 1e9
    out["read_bw_GBps"] = nbytes / _time(torch, lambda b=buf: b.sum(), 2, 10) / 1e9
    del buf
    a = torch.randn(8192, 8192, dtype=torch.float16, device=dev)
    out["fp16_gemm_8192_TFLOPs"] = 2 * 8192 ** 3 / _time(torch, lambda a=a: a @ a, 2, 10) / 1e12
    del a
    for layer, m, k, n in SHAPES:
        x = torch.randn(m, k, dtype=torch.float16, device=dev)
        w = torch.randn(n, k, dtype=torch.float16, device=dev) * 0.02
        row = {"layer": layer, "M": m, "K": k, "N": n,
               "fp16_s": _time(torch, lambda x=x, w=w: torch.nn.functional.linear(x, w))}
        packed, sz = _int4(torch, w.to(torch.bfloat16))
        xb = x.to(torch.bfloat16)
        row["int4wo_s"] = _time(torch, lambda xb=xb, p=packed, s=sz:
                                torch.ops.aten._weight_int4pack_mm(xb, p, 128, s))
        if m > 16:
            xi = torch.randint(-127, 128, (m, k), dtype=torch.int8, device=dev)
            wi = torch.randint(-127, 128, (k, n), dtype=torch.int8, device=dev)
            row["int8_s"] = _time(torch, lambda xi=xi, wi=wi: torch._int_mm(xi, wi))
        out["linear"].append(row)
    out["note"] = __doc__.split("\n\n")[1].replace("\n", " ")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m dse.gpu_measure", description=__doc__)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    from bitlut.fileio import atomic_write
    atomic_write(args.output, json.dumps(measure(), indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
