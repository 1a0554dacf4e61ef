"""GPU FP8 MoE benchmark (Hopper): glm_plugin's CUDA kernel (csrc/cuda; block and channel scales) and Triton kernel
against the engines' own FP8 fused MoE (vLLM's Triton w8a8 block kernel, carried in .gpu-carry/engine/ and launched
by bench/engine_moe.py: `vllm_triton` whole, `vllm_triton_kernels` its kernels alone), torch's bf16 grouped GEMM,
the PyTorch reference and (where importable) vLLM's own fused_experts, at GLM-4.5, GLM-4.5-Air and GLM-4.7-Flash
expert shapes, with microseconds, % of the measured copy bandwidth, % of the dense FP8 peak, and each result's
distance from the reference.

`cuda_channel` is the CUDA kernel on per-output-row (`channel`) scales: the same FP8 bytes with each row given its
128-row block's first scale, checked against the reference in the channel layout.

Bytes of one call: the FP8 weights and block scales of the experts the routing touches, each read once, plus the
activations in and out (the least any implementation must move); FLOPs: 2 x routed rows x (2I x H + H x I).
"% copy" is bytes / time against a device-to-device copy measured at start (bytes read plus written, as a copy
kernel moves them: about 4.3 TB/s on an H200); "% FP8" is FLOPs / time against the dense FP8 peak (1,979 TFLOPS
on H100/H200/H800 SXM; the 989 figure is bf16). torch's baseline runs bf16 weights, twice the bytes: its % copy
still counts the FP8 bytes, so it reads as a speed, not as its own efficiency.

Timing: every call is captured in a CUDA graph where it can be (engines replay decode steps so; launch overhead
would otherwise dominate at one token), else run eagerly (the reference, which syncs with the host); L2 is
flushed before each timed call (a GLM-4.7-Flash decode touches 38 MB of weights, less than the H200's L2);
median of up to --iters calls, fewer for slow points.

    python bench/moe_gpu.py                                   # 3 shapes x 1 8 64 512 4096 tokens, every impl
    python bench/moe_gpu.py --shapes air --batches 1 8 --impls cuda triton
    python bench/moe_gpu.py --json bench.json --deadline-s 200  # what scripts/gpu_check.py runs

Needs CUDA torch on an sm_90 GPU; elsewhere it says so and exits 0 (nothing to measure). Weights and routing are
random (seeded; routing uniform over experts, as a balanced router tends to be): speed does not depend on values.
Exit status 1 when one of glm_plugin's kernels is further from the reference than its tolerance, or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

SHAPES = {"air": dict(name="GLM-4.5-Air", H=4096, I=1408, E=128, topk=8),
          "full": dict(name="GLM-4.5", H=5120, I=1536, E=160, topk=8),   # also GLM-4.6 / 4.7
          "flash": dict(name="GLM-4.7-Flash", H=2048, I=1536, E=64, topk=4)}
BATCHES = (1, 8, 64, 512, 4096)
IMPLS = ("cuda", "cuda_channel", "triton", "vllm_triton", "vllm_triton_kernels", "torch", "reference", "vllm")
OURS = ("cuda", "cuda_channel", "triton")
# Relative (Frobenius) distance from the W8A16 reference allowed per implementation. cuda and vllm quantise
# activations to e4m3 per 1x128 group (~sqrt(2) x 3 % for two GEMM inputs; docs/kernels-cuda.md); triton is the
# reference's maths in bf16 (the SiLU-and-mul intermediate and the output rounded to 8 bits: ~0.3 %); torch
# rounds the dequantised weights and both GEMM outputs to bf16 (~0.6 %).
TOLERANCE = {"cuda": 0.08, "cuda_channel": 0.08, "vllm": 0.08, "vllm_triton": 0.08, "vllm_triton_kernels": 0.08,
             "triton": 0.02, "torch": 0.02, "reference": 0.0}
# Dense FP8 TFLOPS (no sparsity) by device-name substring, from NVIDIA's data sheets; twice the bf16 figure. The
# first match counts: "H200" before "H20", "H100 PCIe" before "H100".
FP8_PEAKS = (("H100 PCIe", 1513.0), ("H200", 1979.0), ("H20", 296.0), ("H100", 1979.0), ("H800", 1979.0))


def fp8_peak_tflops(device_name: str) -> float:
    for key, tflops in FP8_PEAKS:
        if key in device_name:
            return tflops
    return 1979.0


def problem_size(shape: dict, tokens: int, experts_touched: int) -> dict:
    """The least bytes any implementation moves and the FLOPs of one call (FP8 weights, bf16 activations)."""
    H, I = shape["H"], shape["I"]
    per_expert = 2 * I * H + H * I
    scale_bytes = 4 * (-(-2 * I // 128) * (H // 128) + (H // 128) * -(-I // 128))
    weight_bytes = experts_touched * (per_expert + scale_bytes)
    return {"weight_bytes": weight_bytes,
            "bytes": weight_bytes + tokens * H * 2 * 2 + tokens * shape["topk"] * 8,
            "flops": 2 * tokens * shape["topk"] * per_expert}


def rates(us: float, size: dict, copy_tb_s: float, peak_tflops: float) -> dict:
    tb_s = size["bytes"] / us / 1e6
    tflops = size["flops"] / us / 1e6
    return {"us": round(us, 2), "tb_s": round(tb_s, 3), "copy_pct": round(100 * tb_s / copy_tb_s, 1),
            "tflops": round(tflops, 1), "peak_pct": round(100 * tflops / peak_tflops, 1)}


def torch_bf16_moe(hidden, w13t, w2t, topk_weights, topk_ids):
    """The MoE layer as torch alone computes it with bf16 weights, the baseline an FP8 kernel must beat.

    w13t [E, H, 2I] and w2t [E, I, H] are transposed views of the checkpoint's [E, 2I, H] / [E, H, I]. Pairs are
    sorted by expert, both GEMMs are one `torch._grouped_mm` each, silu(gate) * up is taken in the activation
    dtype and a weighted scatter-add sums the pairs. No host synchronisation, so it can be graph-captured."""
    import torch
    import torch.nn.functional as F

    tokens, k = topk_ids.shape
    inter = w2t.shape[1]
    flat = topk_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(w13t.shape[0], dtype=torch.int64, device=flat.device).index_add_(
        0, flat, torch.ones_like(flat))  # bincount would read its maximum back to the host
    offs = counts.cumsum(0).to(torch.int32)
    token = order // k
    gate_up = torch._grouped_mm(hidden[token], w13t, offs=offs)
    down = torch._grouped_mm(F.silu(gate_up[:, :inter]) * gate_up[:, inter:], w2t, offs=offs)
    out = torch.zeros(tokens, hidden.shape[1], dtype=torch.float32, device=hidden.device)
    out.index_add_(0, token, down.float() * topk_weights.reshape(-1)[order].float().unsqueeze(1))
    return out.to(hidden.dtype)


# ---- on the GPU ------------------------------------------------------------------------------------------------

class Timer:
    """Median CUDA-event time of a call, with L2 flushed (a buffer four times the L2 zeroed) before each."""

    def __init__(self):
        import torch

        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.flush = torch.empty(max(4 * l2, 256 << 20), dtype=torch.uint8, device="cuda")

    def __call__(self, fn, iters: int, budget_s: float) -> float:
        import torch

        fn()
        torch.cuda.synchronize()
        first = self._times(fn, 1)[0]
        reps = max(3, min(iters, int(budget_s * 1e6 / max(first, 1.0))))
        return statistics.median(self._times(fn, reps))

    def _times(self, fn, reps: int) -> list[float]:
        import torch

        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            self.flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) * 1e3 for start, end in events]


def measure_copy_tb_s() -> float:
    """Device-to-device copy of 1 GiB, bytes read plus bytes written per second (far above the L2)."""
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return 2 * n / statistics.median(times) / 1e12


def _graphed(fn):
    """(replay, "graph") for a capturable call, else (fn, "eager: why")."""
    import torch

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay, "graph"
    except Exception as exc:  # noqa: BLE001  (a call that cannot be captured is timed eagerly, and says why)
        torch.cuda.synchronize()
        return fn, f"eager: capture failed ({type(exc).__name__}: {str(exc)[:160]})"


def _weights(shape: dict, seed: int):
    import torch

    from glm_plugin.kernels import reference

    g = torch.Generator(device="cuda").manual_seed(seed)
    E, H, I = shape["E"], shape["H"], shape["I"]
    parts = [[], [], [], []]
    for start in range(0, E, 16):  # a few experts at a time: the float copies of GLM-4.5's are 12 GB
        n = min(16, E - start)
        for i, (rows, cols) in enumerate(((2 * I, H), (H, I))):
            q, s = reference.quantize_fp8_block(torch.randn(n, rows, cols, generator=g, device="cuda") * 0.05)
            parts[2 * i].append(q)
            parts[2 * i + 1].append(s)
    return [torch.cat(p) for p in parts]  # w13, s13, w2, s2


def _bf16_weights(w, s):
    """Dequantised to bf16 in chunks, transposed to [E, K, N] (a view) as torch._grouped_mm takes them."""
    import torch

    from glm_plugin.kernels import reference

    out = torch.empty(w.shape, dtype=torch.bfloat16, device=w.device)
    for start in range(0, w.shape[0], 16):
        out[start:start + 16] = reference.dequantize_fp8(w[start:start + 16], s[start:start + 16], "block")
    return out.transpose(1, 2)


def channel_scales(s, rows: int):
    """Block scales [E, Mb, Kb] -> per-row scales [E, rows, 1]: each row takes its block's first scale (the same FP8
    bytes then make a channel-layout checkpoint, with its own reference output)."""
    return s[:, :, :1].repeat_interleave(128, dim=1)[:, :rows].contiguous()


def _runners(selected, w13, s13, w2, s2) -> dict:
    """impl -> (fn(hidden, topk_weights, topk_ids) or None, why not) for one shape's block-FP8 weights (and, for
    cuda_channel, the channel scales derived from them)."""
    import torch

    from glm_plugin.kernels import reference

    runners = {}
    if "cuda" in selected or "cuda_channel" in selected:
        from glm_plugin.kernels import build_cuda

        loaded = build_cuda.load_cuda_extension(build=True)
        op = torch.ops.glm_plugin.fp8_moe_experts_cuda if loaded else None
        if "cuda" in selected:
            runners["cuda"] = ((lambda h, w, i: op(h, w13, s13, w2, s2, w, i, "block"), None) if loaded
                               else (None, build_cuda.unavailable_reason()))
        if "cuda_channel" in selected:
            s13c, s2c = channel_scales(s13, w13.shape[1]), channel_scales(s2, w2.shape[1])
            runners["cuda_channel"] = ((lambda h, w, i: op(h, w13, s13c, w2, s2c, w, i, "channel"), None) if loaded
                                       else (None, build_cuda.unavailable_reason()))
    if "triton" in selected:
        try:
            from glm_plugin.kernels import triton_fp8_moe as tm
        except ImportError as exc:
            runners["triton"] = (None, f"glm_plugin.kernels.triton_fp8_moe not importable ({exc})")
        else:
            ok = tm.available()
            runners["triton"] = ((lambda h, w, i: tm.fp8_moe_experts(h, w13, s13, w2, s2, w, i, "block"))
                                 if ok else None, None if ok else "available() is False")
    if "torch" in selected:
        if hasattr(torch, "_grouped_mm"):
            w13t, w2t = _bf16_weights(w13, s13), _bf16_weights(w2, s2)
            runners["torch"] = (lambda h, w, i: torch_bf16_moe(h, w13t, w2t, w, i), None)
        else:
            runners["torch"] = (None, f"torch {torch.__version__} has no torch._grouped_mm")
    if "reference" in selected:
        runners["reference"] = (lambda h, w, i: reference.fp8_moe_experts(h, w13, s13, w2, s2, w, i, "block"), None)
    if "vllm_triton" in selected or "vllm_triton_kernels" in selected:
        for impl, run in _engine_triton(w13, s13, w2, s2).items():
            if impl in selected:
                runners[impl] = run
    if "vllm" in selected:
        fused, why = _vllm_fused_moe()
        runners["vllm"] = ((lambda h, w, i: fused(h, w13, s13, w2, s2, w, i)) if fused else None, why)
    return runners


def _engine_triton(w13, s13, w2, s2) -> dict:
    """The engine baseline that counts (bench/engine_moe.py): vLLM's Triton fused_moe_kernel as carried in
    .gpu-carry/engine/, whole (`vllm_triton`: torch stand-ins for vLLM's compiled alignment, quantisation,
    SiLU-and-mul and sum) and its two kernel launches plus the sum on inputs prepared once (`vllm_triton_kernels`,
    a lower bound of vLLM's time)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import engine_moe

    try:
        moe = engine_moe.VllmTritonMoE(engine_moe.load_kernel(), w13, s13, w2, s2)
    except Exception as exc:  # noqa: BLE001  (not carried, or a Triton that cannot compile it)
        why = f"{type(exc).__name__}: {exc}"
        return {"vllm_triton": (None, why), "vllm_triton_kernels": (None, why)}
    prepared = {}

    def kernels(h, w, i):
        key = (h.data_ptr(), w.data_ptr(), i.data_ptr())
        if key not in prepared:
            prepared.clear()
            prepared[key] = moe.kernels_only(h, w, i)
        down = prepared[key]()
        return down.view(h.shape[0], -1, down.shape[1]).sum(1)

    return {"vllm_triton": (moe, None), "vllm_triton_kernels": (kernels, None)}


def _vllm_fused_moe():
    """vLLM's Triton fused MoE with 128x128 block FP8 (its default path for these checkpoints on Hopper)."""
    try:
        from vllm.model_executor.layers.fused_moe import fused_experts
    except Exception as exc:  # noqa: BLE001  (CPU builds, missing extensions, version skew)
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


def _measure(impl, fn, args, expected, timer, size, device, budget_s, iters) -> dict:
    import torch

    try:
        out = fn(*args)
        rel = 0.0 if expected is None else float((out.float() - expected.float()).norm()
                                                 / expected.float().norm().clamp(min=1e-30))
        call, mode = ((lambda: fn(*args)), "eager: syncs with the host") if impl == "reference" else \
            _graphed(lambda: fn(*args))
        us = timer(call, iters, budget_s)
    except Exception as exc:  # noqa: BLE001  (one failing implementation must not end the run)
        record = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "ok": False}
        try:
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001  (a sticky error, e.g. an illegal address: this process can run no more)
            record["fatal"] = True
        return record
    record = rates(us, size, device["copy_tb_s"], device["fp8_peak_tflops"])
    record.update(mode=mode, rel_err=round(rel, 5), tolerance=TOLERANCE[impl], ok=rel <= TOLERANCE[impl])
    return record


def _point(key: str, T: int, fp8_weights, runnable: dict, timer, device: dict, args) -> dict:
    """One shape at T tokens: uniform random routing, every runnable implementation measured against the
    reference's output (after the first implementation that loses the CUDA context, none more)."""
    import torch

    from glm_plugin.kernels import reference

    shape = SHAPES[key]
    g = torch.Generator(device="cuda").manual_seed(T)
    hidden = torch.randn(T, shape["H"], device="cuda", generator=g).to(torch.bfloat16)
    ids = torch.rand(T, shape["E"], device="cuda", generator=g).topk(shape["topk"], -1).indices.int()
    weights = torch.softmax(torch.rand(T, shape["topk"], device="cuda", generator=g), -1)
    touched = int(ids.unique().numel())
    size = problem_size(shape, T, touched)
    point = {"shape": shape["name"], "key": key, **{k: shape[k] for k in ("H", "I", "E", "topk")}, "tokens": T,
             "experts_touched": touched, **size, "impls": {}}
    expected = {"block": reference.fp8_moe_experts(hidden, *fp8_weights, weights, ids, "block")}
    if "cuda_channel" in runnable:
        w13, s13, w2, s2 = fp8_weights
        expected["channel"] = reference.fp8_moe_experts(hidden, w13, channel_scales(s13, w13.shape[1]), w2,
                                                        channel_scales(s2, w2.shape[1]), weights, ids, "channel")
    for impl, fn in runnable.items():
        want = None if impl == "reference" else expected["channel" if impl == "cuda_channel" else "block"]
        record = point["impls"][impl] = _measure(impl, fn, (hidden, weights, ids), want, timer, size, device,
                                                 args.point_budget_s, args.iters)
        if record.get("fatal"):
            break
    return point


def _fmt(record: dict | None) -> str:
    if record is None:
        return f"{'-':>34}"
    if "error" in record:
        return f"{'ERROR':>34}"
    flag = "" if record["ok"] else "!"
    return (f"{record['us']:10.1f} {record['copy_pct']:6.1f}% {record['peak_pct']:5.1f}% "
            f"{record['rel_err']:8.1e}{flag:1}")


def _write(path: str | None, result: dict) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--iters", type=int, default=50, help="most timed calls per point")
    parser.add_argument("--point-budget-s", type=float, default=0.2, help="timed seconds per point, at most")
    parser.add_argument("--fp8-tflops", type=float, help="dense FP8 TFLOPS (default: by device name)")
    parser.add_argument("--json", help="write the results here (rewritten after every point)")
    parser.add_argument("--deadline-s", type=float, help="start no point after this many seconds")
    args = parser.parse_args(argv)
    started = time.monotonic()

    import torch

    if not torch.cuda.is_available():
        why = "is CPU-only" if torch.version.cuda is None else "sees no CUDA device"
        print(f"moe_gpu: nothing to measure: torch {torch.__version__} {why} (needs an sm_90 GPU)")
        return 0
    name = torch.cuda.get_device_name()
    device = {"name": name, "copy_tb_s": round(measure_copy_tb_s(), 3),
              "fp8_peak_tflops": args.fp8_tflops or fp8_peak_tflops(name)}
    result = {"device": device, "tolerance": TOLERANCE, "skipped": {}, "points": [], "stopped": None}
    print(f"# {name}: copy {device['copy_tb_s']} TB/s (measured, read + write), dense FP8 peak "
          f"{device['fp8_peak_tflops']} TFLOPS; columns per implementation: us, % copy, % FP8 peak, "
          f"relative distance from the reference (! = over its tolerance)", flush=True)
    timer = Timer()

    def out_of_time(what: str) -> bool:
        if args.deadline_s is not None and time.monotonic() - started > args.deadline_s:
            result["stopped"] = f"time budget ({args.deadline_s:.0f} s) spent before {what}"
        return bool(result["stopped"])

    for key in args.shapes:
        shape = SHAPES[key]
        if out_of_time(shape["name"]):
            break
        w13, s13, w2, s2 = _weights(shape, seed=0)
        runners = _runners(args.impls, w13, s13, w2, s2)
        for impl, (fn, why) in runners.items():
            if fn is None and impl not in result["skipped"]:
                result["skipped"][impl] = why
                print(f"# {impl}: skipped: {why}", flush=True)
        runnable = {impl: fn for impl, (fn, _) in runners.items() if fn is not None}
        print(f"{shape['name']:14} {'tokens':>6} {'experts':>7} {'MB':>7} | "
              + " | ".join(f"{impl:>34}" for impl in runnable), flush=True)
        for T in args.batches:
            if out_of_time(f"{shape['name']} T={T}"):
                break
            point = _point(key, T, (w13, s13, w2, s2), runnable, timer, device, args)
            lost = [impl for impl, record in point["impls"].items() if record.get("fatal")]
            if lost:
                result["stopped"] = f"the CUDA context was lost at {shape['name']} T={T} {lost[0]}"
            result["points"].append(point)
            _write(args.json, result)
            print(f"{'':14} {T:6d} {point['experts_touched']:7d} {point['bytes'] / 1e6:7.1f} | "
                  + " | ".join(_fmt(point["impls"].get(impl)) for impl in runnable), flush=True)
            if result["stopped"]:
                break
            torch.cuda.empty_cache()
        if result["stopped"]:
            break
        del w13, s13, w2, s2, runners, runnable
        torch.cuda.empty_cache()
    failed = [f"{p['shape']} T={p['tokens']} {impl}" for p in result["points"] for impl, r in p["impls"].items()
              if impl in OURS and not r.get("ok")]
    result["correct"] = not failed
    _write(args.json, result)
    if result["stopped"]:
        print(f"# stopped: {result['stopped']}")
    if failed:
        print(f"# NOT within tolerance of the reference: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
