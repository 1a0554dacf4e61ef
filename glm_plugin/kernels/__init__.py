"""FP8 MoE kernels: the `torch.ops.glm_plugin.*` ops GLM's FP8 checkpoints run on, and their Python entry points.

Ops (defined in `ops.py`, oracle in `reference.py`):
  fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout) -> out
  fp8_linear(x, weight, weight_scale, bias, layout) -> out

The package: `dispatch.py` (which implementation runs a call), `policy.py` (whose kernel computes a GLM FP8 layer
in an engine), `build.py` / `build_cuda.py` (the JIT-built C++ and CUDA libraries, sharing `jit_cache.py`),
`triton_fp8_moe.py`, `reference.py`.
Nothing here imports torch at import time, so `import glm_plugin.kernels` stays cheap.
"""

from __future__ import annotations

from .dispatch import implementation, why_unavailable

__all__ = ["fp8_linear", "fp8_moe_experts", "implementation", "register_ops", "why_unavailable"]


def register_ops() -> None:
    """Defines the torch.library ops (idempotent; engines call it from their plugin hooks)."""
    from . import ops  # noqa: F401  (importing defines them)


def fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout: str):
    """sum_k topk_weights[t,k] * expert_{topk_ids[t,k]}(hidden[t]) with FP8 expert weights; see reference.py."""
    import torch

    register_ops()
    return torch.ops.glm_plugin.fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids,
                                                layout)


def fp8_linear(x, weight, weight_scale, bias, layout: str):
    """x @ dequant(weight).T (+ bias), in x's dtype."""
    import torch

    register_ops()
    return torch.ops.glm_plugin.fp8_linear(x, weight, weight_scale, bias, layout)

