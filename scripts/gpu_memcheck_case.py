"""A small FP8 MoE case with routed ids outside [0, E), for `compute-sanitizer --tool memcheck` (gpu_check.py step
3): the CUDA op in both scale layouts, routings where a third of the pairs are -1, E, E + 3 or 2^31 - 1, several
token counts (so the op's workspace is reused at other sizes), each checked against the reference.

Why its own script: memcheck slows every CUDA call many times over, so the case is a few small calls, and it needs
no pytest. Run it with PYTORCH_NO_CUDA_MEMORY_CACHING=1 (gpu_check does): every tensor is then its own allocation
and memcheck sees any access outside the op's buffers. Exit 0 on success, 1 on a wrong result, 2 without a
loadable kernel; memcheck's own exit code (3 under gpu_check) on an access error.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from glm_plugin.kernels import build_cuda, reference

    if not build_cuda.load_cuda_extension(build=True):
        print(f"memcheck case: the CUDA kernel is not loadable: {build_cuda.unavailable_reason()}")
        return 2
    op = torch.ops.glm_plugin.fp8_moe_experts_cuda
    g = torch.Generator(device="cuda").manual_seed(0)
    E, H, I, topk = 8, 256, 256, 4
    bad = 0
    for layout in ("block", "channel"):
        w13, s13 = reference.quantize_fp8(torch.randn(E, 2 * I, H, generator=g, device="cuda") * 0.05, layout)
        w2, s2 = reference.quantize_fp8(torch.randn(E, H, I, generator=g, device="cuda") * 0.05, layout)
        for T in (1, 37, 5):
            hidden = torch.randn(T, H, generator=g, device="cuda").to(torch.bfloat16)
            ids = torch.rand(T, E, generator=g, device="cuda").topk(topk, dim=-1).indices.to(torch.int32)
            foreign = torch.tensor([-1, E, E + 3, 2**31 - 1], dtype=torch.int32, device="cuda")
            mask = torch.rand(T, topk, generator=g, device="cuda") < 0.35
            pick = torch.randint(0, 4, (T, topk), generator=g, device="cuda")
            ids = torch.where(mask, foreign[pick], ids)
            weights = torch.rand(T, topk, generator=g, device="cuda")
            out = op(hidden, w13, s13, w2, s2, weights, ids, layout)
            torch.cuda.synchronize()
            expect = reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, layout).float()
            rel = float((out.float() - expect).norm() / expect.norm().clamp(min=1e-30))
            ok = rel < 0.08 and bool(torch.isfinite(out).all())
            bad += not ok
            print(f"memcheck case: {layout} T={T}, {int(mask.sum())} of {T * topk} pairs outside [0, {E}): "
                  f"{rel:.3g} from the reference {'ok' if ok else 'WRONG'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
