"""GPU FP8 MoE benchmark (Hopper): our sm_90a CUTLASS kernel vs the Triton kernel (if present) vs vLLM's fused MoE
(if importable), at GLM-4.5-Air and GLM-4.5 expert shapes and batch 1-256, with microseconds, achieved weight
bandwidth (TB/s), achieved TFLOPS and the roofline time of each point.

Roofline of one call: max(bytes / HBM bandwidth, FLOPs / FP8 peak). Bytes = the FP8 weights (and block scales)
of the experts the routing touches, each read once, plus activations in and out; FLOPs = 2 x routed rows x
(2I x H + H x I). Decode is memory-bound: at batch 1 GLM-4.5-Air reads 8 experts x 17.3 MB = 138 MB, 41 us at
H100 SXM's 3.35 TB/s (47 us for the whole MoE layer with its shared expert; docs/kernels-cuda.md).

    python bench/moe_gpu.py                               # both shapes, batch 1 2 4 8 16 32 64 128 256
    python bench/moe_gpu.py --shapes air --batches 1 8 64 --impls ours vllm
    python bench/moe_gpu.py --bandwidth 4.8 --fp8-tflops 1979  # H200 (defaults from the device name)

Needs CUDA torch on an sm_90 GPU; elsewhere it says so and exits 0 (nothing to measure). Weights and routing are
random (seeded; routing uniform over experts, as a balanced router tends to be): speed does not depend on values.
"""

from __future__ import annotations

import argparse
import statistics
import sys

SHAPES = {"air": dict(name="GLM-4.5-Air", H=4096, I=1408, E=128, topk=8),
          "full": dict(name="GLM-4.5", H=5120, I=1536, E=160, topk=8)}
# (HBM TB/s, dense FP8 TFLOPS) by device-name substring; the SXM figures from NVIDIA's data sheets.
# Dense FP8 (no sparsity): 1,979 TFLOPS on H100/H200/H800 SXM, twice their 989 bf16 figure; H100 PCIe 1,513.
DEVICES = (("H200", 4.8, 1979.0), ("H100 PCIe", 2.0, 1513.0), ("H100", 3.35, 1979.0), ("H800", 3.35, 1979.0),
           ("H20", 4.0, 296.0))


def _device_peaks(name: str) -> tuple[float, float]:
    for key, bw, tflops in DEVICES:
        if key in name:
            return bw, tflops
    return 3.35, 1979.0


def _time_us(fn, iters: int) -> float:
    """Median of `iters` CUDA-event timings after warm-up (L2 is not flushed: the active experts' weights,
    >= 138 MB, do not fit the 50 MB L2 anyway)."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def _weights(shape: dict, seed: int):
    import torch

    from glm_plugin.kernels import reference

    g = torch.Generator(device="cuda").manual_seed(seed)
    E, H, I = shape["E"], shape["H"], shape["I"]
    parts = [[], [], [], []]
    for start in range(0, E, 16):
        n = min(16, E - start)
        for i, (rows, cols) in enumerate(((2 * I, H), (H, I))):
            q, s = reference.quantize_fp8_block(torch.randn(n, rows, cols, generator=g, device="cuda") * 0.05)
            parts[2 * i].append(q)
            parts[2 * i + 1].append(s)
    return [torch.cat(p) for p in parts]  # w13, s13, w2, s2


def _implementations(selected: list[str]):
    """name -> (callable(hidden, w13, s13, w2, s2, weights, ids) or None, why not)."""
    import torch

    impls = {}
    if "ours" in selected:
        from glm_plugin.kernels import build_cuda

        if build_cuda.load_cuda_extension(build=True):
            op = torch.ops.glm_plugin.fp8_moe_experts_cuda
            impls["ours"] = (lambda h, a, sa, b, sb, w, i: op(h, a, sa, b, sb, w, i, "block"), None)
        else:
            impls["ours"] = (None, build_cuda.unavailable_reason())
    if "triton" in selected:
        try:
            from glm_plugin.kernels import triton_fp8_moe

            ok = triton_fp8_moe.available()
            impls["triton"] = ((lambda h, a, sa, b, sb, w, i: triton_fp8_moe.fp8_moe_experts(
                h, a, sa, b, sb, w, i, "block")) if ok else None, None if ok else "available() is False")
        except ImportError as exc:
            impls["triton"] = (None, f"glm_plugin.kernels.triton_fp8_moe not importable ({exc})")
    if "vllm" in selected:
        impls["vllm"] = _vllm_fused_moe()
    return impls


def _vllm_fused_moe():
    """vLLM's Triton fused MoE with 128x128 block FP8 (its default path for these checkpoints on Hopper)."""
    try:
        from vllm.model_executor.layers.fused_moe import fused_experts
    except Exception as exc:  # CPU builds, missing extensions, version skew
        return None, f"vllm fused_experts not importable ({type(exc).__name__}: {exc})"
    try:
        from vllm.model_executor.layers.fused_moe.config import fp8_w8a8_moe_quant_config

        def run(h, a, sa, b, sb, w, i):
            cfg = fp8_w8a8_moe_quant_config(w1_scale=sa, w2_scale=sb, block_shape=[128, 128])
            return fused_experts(h, a, b, w, i, quant_config=cfg)
    except ImportError:  # older vLLM: keyword arguments
        def run(h, a, sa, b, sb, w, i):
            return fused_experts(h, a, b, w, i, use_fp8_w8a8=True, w1_scale=sa, w2_scale=sb, block_shape=[128, 128])
    return run, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["air", "full"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--impls", nargs="+", choices=["ours", "triton", "vllm"], default=["ours", "triton", "vllm"])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--bandwidth", type=float, help="HBM TB/s for the roofline (default: by device name)")
    parser.add_argument("--fp8-tflops", type=float, help="dense FP8 TFLOPS for the roofline (default: by name)")
    parser.add_argument("--check", action="store_true", help="also compare each implementation with ours")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        why = "is CPU-only" if torch.version.cuda is None else "sees no CUDA device"
        print(f"moe_gpu: nothing to measure: torch {torch.__version__} {why} (needs an sm_90 GPU)")
        return 0
    name = torch.cuda.get_device_name()
    bw, tflops = _device_peaks(name)
    bw, tflops = args.bandwidth or bw, args.fp8_tflops or tflops
    print(f"# {name}: roofline {bw} TB/s, {tflops} FP8 TFLOPS; median of {args.iters} CUDA-event timings")
    impls = _implementations(args.impls)
    for impl, (fn, why) in impls.items():
        if fn is None:
            print(f"# {impl}: skipped: {why}")
    runnable = {k: fn for k, (fn, _) in impls.items() if fn is not None}
    if not runnable:
        print("moe_gpu: no implementation available")
        return 1

    header = f"{'shape':12} {'batch':>5} {'experts':>7} {'MB read':>8} {'roof us':>8}"
    for impl in runnable:
        header += f" | {impl + ' us':>10} {'TB/s':>6} {'TFLOPS':>7} {'%roof':>6}"
    print(header)
    for key in args.shapes:
        shape = SHAPES[key]
        H, I, E, topk = shape["H"], shape["I"], shape["E"], shape["topk"]
        w13, s13, w2, s2 = _weights(shape, seed=0)
        for T in args.batches:
            g = torch.Generator(device="cuda").manual_seed(T)
            hidden = torch.randn(T, H, device="cuda", generator=g).to(torch.bfloat16)
            ids = torch.rand(T, E, device="cuda", generator=g).topk(topk, dim=-1).indices.to(torch.int32)
            weights = torch.softmax(torch.rand(T, topk, device="cuda", generator=g), -1)
            active = int(ids.unique().numel())
            per_expert = 2 * I * H + H * I
            scale_bytes = 4 * (-(-2 * I // 128) * (H // 128) + (H // 128) * -(-I // 128))
            nbytes = active * (per_expert + scale_bytes) + T * H * 2 * 2 + T * topk * 8
            flops = 2 * T * topk * per_expert
            roof_us = max(nbytes / (bw * 1e12), flops / (tflops * 1e12)) * 1e6
            row = f"{shape['name']:12} {T:5d} {active:7d} {nbytes / 1e6:8.1f} {roof_us:8.1f}"
            ours_out = None
            for impl, fn in runnable.items():
                args_ = (hidden, w13, s13, w2, s2, weights, ids)
                us = _time_us(lambda: fn(*args_), args.iters)
                row += (f" | {us:10.1f} {nbytes / us / 1e6:6.2f} {flops / us / 1e6:7.1f} "
                        f"{100 * roof_us / us:5.0f}%")
                if args.check:
                    out = fn(*args_).float()
                    if ours_out is None:
                        ours_out = out
                    else:
                        rel = float((out - ours_out).norm() / ours_out.norm())
                        row += f" (vs first {rel:.1e})"
            print(row, flush=True)
        del w13, s13, w2, s2
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
