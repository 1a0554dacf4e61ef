"""Which implementation runs a glm_plugin op: the table of the kernels that exist, and the choice among them.

`KERNELS` lists, per op, the compiled kernels we have in the order they are tried, each with the device type and
scale layouts it takes; the PyTorch reference (`reference.py`) runs every op on any device and comes last. A kernel
the table does not offer for a call's device and layout is skipped silently (by design); one that cannot load here
(no compiler, no GPU, no triton) is skipped with one WARNING naming the cause and the fallback taken. The checks
never raise. GLM_PLUGIN_KERNEL=auto|reference|cpp|triton|cuda forces a choice (a forced choice that is unavailable
raises, naming why). The choice is cached per (op, device type, layout) and logged once. Nothing here imports
torch at import time.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from glm_plugin import settings
from glm_plugin.checkpoint import SCALE_LAYOUTS as LAYOUTS

logger = logging.getLogger("glm_plugin.kernels")

ENV_KERNEL = "GLM_PLUGIN_KERNEL"
IMPLEMENTATIONS = ("cuda", "triton", "cpp", "reference")
_TRITON_MODULE = "glm_plugin.kernels.triton_fp8_moe"


# ---- how each kernel is called (arguments already checked by ops.py) --------------------------------------------

def _moe_cuda(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout):
    import torch

    return torch.ops.glm_plugin.fp8_moe_experts_cuda(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids,
                                                     layout)


def _moe_triton(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout):
    from . import triton_fp8_moe

    return triton_fp8_moe.fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout)


def _moe_cpp(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout):
    import torch

    tensors = [t.contiguous() for t in (hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids)]
    return torch.ops.glm_plugin.fp8_moe_experts_cpu(*tensors, layout)


def _linear_cpp(x, weight, weight_scale, bias, layout):
    import torch

    return torch.ops.glm_plugin.fp8_linear_cpu(x, weight.contiguous(), weight_scale.contiguous(), bias, layout)


def _moe_cuda_refuses(hidden: int, intermediate: int) -> str | None:
    """csrc/cuda/moe_fp8_sm90.cu: moe_unsupported, for the sizes an adapter knows before the first forward."""
    if hidden % 128 or intermediate % 128:
        return (f"the sm_90a FP8 MoE kernel needs hidden and per-rank intermediate sizes that are multiples of 128, "
                f"got {hidden} and {intermediate} (tensor parallelism splits the intermediate size: use a tp that "
                f"keeps it a multiple of 128, or expert parallelism)")
    return None


@dataclass(frozen=True)
class Kernel:
    layouts: tuple[str, ...]    # the FP8 scale layouts it takes
    run: Callable               # called with the op's arguments
    refuses: Callable[[int, int], str | None] | None = None  # (hidden, per-rank intermediate) -> why not, or None


DEVICE = {"cuda": "cuda", "triton": "cuda", "cpp": "cpu"}
"""The torch device type whose tensors each implementation's kernels take."""

KERNELS: dict[str, dict[str, Kernel]] = {  # op -> implementation -> kernel, in dispatch order; never the reference
    "fp8_moe_experts": {"cuda": Kernel(LAYOUTS, _moe_cuda, _moe_cuda_refuses), "triton": Kernel(LAYOUTS, _moe_triton),
                        "cpp": Kernel(LAYOUTS, _moe_cpp)},
    "fp8_linear": {"cpp": Kernel(LAYOUTS, _linear_cpp)},
}
_NAME = {"cuda": "CUDA", "triton": "Triton", "cpp": "C++"}
_WHERE = {"cuda": "csrc/cuda", "triton": _TRITON_MODULE, "cpp": "csrc/cpu"}


def compiled_kernels(op: str, device_type: str, layout: str) -> tuple[str, ...]:
    """The implementations other than the reference that the table offers for `op` on `device_type` tensors with
    `layout` scales, in dispatch order (the device policy asks which could take a layer on an accelerator)."""
    return tuple(impl for impl, k in KERNELS[op].items() if DEVICE[impl] == device_type and layout in k.layouts)


def shape_refusal(impl: str, op: str, hidden: int, intermediate: int) -> str | None:
    """Why kernel `impl` of `op` cannot take a layer of these sizes (None: it takes any it is offered)."""
    kernel = KERNELS[op].get(impl)
    return kernel.refuses(hidden, intermediate) if kernel is not None and kernel.refuses else None


# ---- can it run here? ----------------------------------------------------------------------------------------------

class _NotApplicable(str):
    """A reason that is by design (wrong device, op or layout without such a kernel), not worth a warning."""


def _not_offered(impl: str, op: str, device_type: str, layout: str | None) -> _NotApplicable | None:
    if device_type != DEVICE[impl]:
        return _NotApplicable(f"the {_NAME[impl]} kernels run on {DEVICE[impl].upper()} tensors only")
    kernel = KERNELS.get(op, {}).get(impl)
    if kernel is None:
        return _NotApplicable(f"{_WHERE[impl]} has no {op} kernel")
    if layout is not None and layout not in kernel.layouts:
        return _NotApplicable(f"the {_NAME[impl]} {op} kernel takes {'/'.join(kernel.layouts)} scales, "
                              f"not {layout!r}")
    return None


def _cuda_registered(op: str) -> bool:
    import torch

    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"glm_plugin::{op}_cuda", "CUDA")
    except RuntimeError:
        return False


def _cuda_loads(op: str) -> str | None:
    if _cuda_registered(op):
        return None
    from . import build_cuda

    if build_cuda.load_cuda_extension() and _cuda_registered(op):  # loads a prebuilt library only; never raises
        return None
    return build_cuda.unavailable_reason() or f"no compiled CUDA kernel registered as glm_plugin::{op}_cuda"


def _triton_loads(op: str) -> str | None:
    try:
        mod = importlib.import_module(_TRITON_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in (_TRITON_MODULE, "triton"):
            return f"{_TRITON_MODULE} (or triton) is not installed"
        return f"importing {_TRITON_MODULE} failed: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken triton install must not break the fallback
        return f"importing {_TRITON_MODULE} failed: {type(exc).__name__}: {exc}"
    try:
        ok = bool(mod.available())
    except Exception as exc:
        return f"{_TRITON_MODULE}.available() failed: {type(exc).__name__}: {exc}"
    return None if ok else f"{_TRITON_MODULE}.available() is False"


def _cpp_loads(op: str) -> str | None:
    from . import build

    if build.load_cpu_extension():
        return None
    return build.unavailable_reason() or "the C++ CPU kernels did not load"


_LOADS = {"cuda": _cuda_loads, "triton": _triton_loads, "cpp": _cpp_loads}


def why_unavailable(impl: str, op: str, device_type: str, layout: str | None = None) -> str | None:
    """None if `impl` can run `op` on `device_type` (for weights of scale `layout`, if given), else the reason."""
    if impl == "reference":
        return None
    if impl not in _LOADS:
        raise ValueError(f"unknown kernel implementation {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    return _not_offered(impl, op, device_type, layout) or _LOADS[impl](op)


# ---- the choice ------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_chosen: dict[tuple[str, str, str | None, str], str] = {}
_warned: set[str] = set()


def implementation(op: str, device, layout: str | None = None) -> str:
    """The implementation that runs `op` on tensors of `device` (a torch.device or its type string), for FP8
    weights of scale `layout` ("block" / "channel"; not every kernel takes both)."""
    device_type = getattr(device, "type", str(device))
    forced = settings.value(ENV_KERNEL).strip().lower() or "auto"
    key = (op, device_type, layout, forced)
    impl = _chosen.get(key)
    if impl is not None:
        return impl
    with _lock:
        if key not in _chosen and forced == "auto":
            _chosen[key] = _first_available(op, device_type, layout)
        elif key not in _chosen:
            _chosen[key] = _forced(forced, op, device_type, layout)
        return _chosen[key]


def kernel(op: str, device, layout: str | None = None) -> Callable:
    """The function that computes `op` (same arguments) with the implementation `implementation` chose."""
    impl = implementation(op, device, layout)
    if impl == "reference":
        from . import reference

        return getattr(reference, op)
    return KERNELS[op][impl].run


def _forced(forced: str, op: str, device_type: str, layout: str | None) -> str:
    if forced not in IMPLEMENTATIONS:
        raise ValueError(f"{ENV_KERNEL}={forced!r} is not one of auto, {', '.join(IMPLEMENTATIONS)}")
    reason = why_unavailable(forced, op, device_type, layout)
    if reason is not None:
        raise RuntimeError(f"{ENV_KERNEL}={forced} but it cannot run glm_plugin::{op} on {device_type}: "
                           f"{reason}. Unset {ENV_KERNEL} to fall back automatically.")
    logger.info("glm_plugin::%s on %s: %s (forced by %s)", op, device_type, forced, ENV_KERNEL)
    return forced


def _first_available(op: str, device_type: str, layout: str | None) -> str:
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
    return impl


def _detail(impl: str) -> str:
    if impl != "cpp":
        return ""
    import torch

    return f" ({torch.ops.glm_plugin.cpu_kernel_isa()} microkernel)"
