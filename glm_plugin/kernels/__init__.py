"""FP8 MoE kernels: the public `torch.ops.glm_plugin.*` ops and the choice of implementation behind them.

Ops (schemas in `ops.py`, oracle in `reference.py`):
  fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout) -> out
  fp8_linear(x, weight, weight_scale, bias, layout) -> out
  glm_route(router_logits, correction_bias, top_k, n_group, topk_group, renormalize, routed_scaling_factor)
      -> (topk_weights, topk_ids)

Dispatch, per op and device, first available wins:
  cuda       a compiled CUDA kernel registered as `glm_plugin::<op>_cuda` (CUDA tensors)
  triton     `glm_plugin.kernels.triton_fp8_moe` with `available()` and a function named like the op (CUDA)
  cpp        the C++ CPU library (csrc/, JIT-built on first use by `build.py`) (CPU tensors)
  reference  the PyTorch oracle; always available
GLM_PLUGIN_KERNEL=auto|reference|cpp|triton|cuda forces a choice (a forced choice that is unavailable raises,
naming why). The choice is logged once per (op, device type) on the "glm_plugin.kernels" logger, and a fallback
says why once. Nothing here imports torch at import time, so `import glm_plugin.kernels` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading

logger = logging.getLogger("glm_plugin.kernels")

ENV_KERNEL = "GLM_PLUGIN_KERNEL"
IMPLEMENTATIONS = ("cuda", "triton", "cpp", "reference")
_TRITON_MODULE = "glm_plugin.kernels.triton_fp8_moe"

_lock = threading.Lock()
_chosen: dict[tuple[str, str, str], str] = {}
_warned: set[str] = set()


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


def glm_route(router_logits, correction_bias, top_k: int, n_group: int, topk_group: int, renormalize: bool,
              routed_scaling_factor: float):
    """GLM grouped sigmoid top-k routing -> (topk_weights fp32 [T, k], topk_ids int32 [T, k])."""
    import torch

    register_ops()
    return torch.ops.glm_plugin.glm_route(router_logits, correction_bias, top_k, n_group, topk_group,
                                          renormalize, float(routed_scaling_factor))


# ---- availability of each implementation -----------------------------------------------------------------------

class _NotApplicable(str):
    """A reason that is by design (wrong device, op without such a kernel), not worth a warning."""


CUDA_OPS = {"fp8_moe_experts": ("block",)}  # what csrc/cuda implements: op -> scale layouts


def _cuda_registered(op: str) -> bool:
    import torch

    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"glm_plugin::{op}_cuda", "CUDA")
    except RuntimeError:
        return False


def _cuda_unavailable(op: str, device_type: str, layout: str | None) -> str | None:
    if device_type != "cuda":
        return _NotApplicable("CUDA kernels run on CUDA tensors only")
    if op not in CUDA_OPS:
        return _NotApplicable(f"csrc/cuda has no {op} kernel")
    if layout is not None and layout not in CUDA_OPS[op]:
        return _NotApplicable(f"the CUDA {op} kernel takes {'/'.join(CUDA_OPS[op])} scales, not {layout!r}")
    if _cuda_registered(op):
        return None
    from . import build_cuda

    if build_cuda.load_cuda_extension() and _cuda_registered(op):  # built on first use, cached; never raises
        return None
    return build_cuda.unavailable_reason() or f"no compiled CUDA kernel registered as glm_plugin::{op}_cuda"


def _triton_module():
    try:
        return importlib.import_module(_TRITON_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in (_TRITON_MODULE, "triton"):
            return None
        raise


def _triton_unavailable(op: str, device_type: str, layout: str | None) -> str | None:
    if device_type != "cuda":
        return _NotApplicable("the Triton kernels run on CUDA tensors only")
    try:
        mod = _triton_module()
    except Exception as exc:  # a broken triton install must not break the fallback
        return f"importing {_TRITON_MODULE} failed: {type(exc).__name__}: {exc}"
    if mod is None:
        return f"{_TRITON_MODULE} (or triton) is not installed"
    if not hasattr(mod, op):
        return f"{_TRITON_MODULE} has no {op}"
    try:
        ok = bool(mod.available())
    except Exception as exc:
        return f"{_TRITON_MODULE}.available() failed: {type(exc).__name__}: {exc}"
    return None if ok else f"{_TRITON_MODULE}.available() is False"


def _cpp_unavailable(op: str, device_type: str, layout: str | None) -> str | None:
    if device_type != "cpu":
        return _NotApplicable("the C++ kernels run on CPU tensors only")
    if op == "glm_route":
        return _NotApplicable("routing has no C++ kernel (the reference is a handful of tensor ops)")
    from . import build

    if build.load_cpu_extension():
        return None
    return build.unavailable_reason() or "the C++ CPU kernels did not load"


_CHECKS = {"cuda": _cuda_unavailable, "triton": _triton_unavailable, "cpp": _cpp_unavailable}


def why_unavailable(impl: str, op: str, device_type: str, layout: str | None = None) -> str | None:
    """None if `impl` can run `op` on `device_type` (for weights of scale `layout`, if given), else the reason."""
    if impl == "reference":
        return None
    if impl not in _CHECKS:
        raise ValueError(f"unknown kernel implementation {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    return _CHECKS[impl](op, device_type, layout)


def implementation(op: str, device, layout: str | None = None) -> str:
    """The implementation that runs `op` on tensors of `device` (a torch.device or its type string), for FP8
    weights of scale `layout` ("block" / "channel"; not every kernel takes both)."""
    device_type = getattr(device, "type", str(device))
    forced = os.environ.get(ENV_KERNEL, "auto").strip().lower() or "auto"
    key = (op, device_type, layout, forced)
    impl = _chosen.get(key)
    if impl is not None:
        return impl
    with _lock:
        if key in _chosen:
            return _chosen[key]
        if forced != "auto":
            if forced not in IMPLEMENTATIONS:
                raise ValueError(f"{ENV_KERNEL}={forced!r} is not one of auto, {', '.join(IMPLEMENTATIONS)}")
            reason = why_unavailable(forced, op, device_type, layout)
            if reason is not None:
                raise RuntimeError(f"{ENV_KERNEL}={forced} but it cannot run glm_plugin::{op} on {device_type}: "
                                   f"{reason}. Unset {ENV_KERNEL} to fall back automatically.")
            impl = forced
            logger.info("glm_plugin::%s on %s: %s (forced by %s)", op, device_type, impl, ENV_KERNEL)
        else:
            skipped = []
            for candidate in IMPLEMENTATIONS:
                reason = why_unavailable(candidate, op, device_type, layout)
                if reason is None:
                    impl = candidate
                    break
                skipped.append((candidate, reason))
            # Only real fallbacks are worth a warning (a CPU never hopes for Triton).
            # A reason already reported for another op is repeated at INFO only: one warning per cause.
            relevant = [(c, r) for c, r in skipped if not isinstance(r, _NotApplicable)]
            if relevant:
                fresh = any(r not in _warned for _, r in relevant)
                _warned.update(r for _, r in relevant)
                logger.log(logging.WARNING if fresh else logging.INFO, "glm_plugin::%s on %s: using %s (%s)", op,
                           device_type, "the PyTorch reference" if impl == "reference" else impl,
                           "; ".join(f"{c} unavailable: {r}" for c, r in relevant))
            else:
                logger.info("glm_plugin::%s on %s: %s%s", op, device_type, impl, _detail(impl))
        _chosen[key] = impl
        return impl


def _detail(impl: str) -> str:
    if impl != "cpp":
        return ""
    import torch

    return f" ({torch.ops.glm_plugin.cpu_kernel_isa()} microkernel)"


def reset_choices() -> None:
    """Forgets the cached choices (tests that change the environment call this)."""
    with _lock:
        _chosen.clear()
        _warned.clear()
