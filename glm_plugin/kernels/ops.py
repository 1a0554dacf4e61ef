"""torch.library definitions of the glm_plugin ops: schemas, the argument checks, fake (meta) implementations,
and the CPU/CUDA implementations that check a call and hand it to the kernel `dispatch.py` chose.

Why defined in Python rather than in csrc/bindings.cpp: the ops must exist (for torch.compile, for the engines'
model code, for the reference fallback) on machines where the C++ library cannot be built. The C++ libraries add
private `*_cpu` / `*_cuda` ops to the same namespace, which `dispatch.py` calls.

The checks here are the user-facing ones: every bad shape, dtype or layout is refused with an error that names it,
before any implementation runs (the fake implementations run them too, so torch.compile refuses the same calls).
The private C++ ops repeat only what keeps them from reading or writing out of bounds (csrc/op_checks.h).

Importing this module registers the ops; it is imported lazily by `glm_plugin.kernels.register_ops()`.
"""

from __future__ import annotations

import torch

from . import dispatch, reference
from .reference import BLOCK

NAMESPACE = "glm_plugin"

SCHEMAS = {
    "fp8_moe_experts": "fp8_moe_experts(Tensor hidden, Tensor w13, Tensor w13_scale, Tensor w2, Tensor w2_scale, "
                       "Tensor topk_weights, Tensor topk_ids, str layout) -> Tensor",
    "fp8_linear": "fp8_linear(Tensor x, Tensor weight, Tensor weight_scale, Tensor? bias, str layout) -> Tensor",
}

_ACT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _fail(op: str, msg: str) -> None:
    raise ValueError(f"glm_plugin::{op}: {msg}")


def _check_fp8(op: str, name: str, t: torch.Tensor, dim: int) -> None:
    if t.dtype != torch.float8_e4m3fn:
        _fail(op, f"{name} must be torch.float8_e4m3fn, got {t.dtype} (quantise with "
                  f"glm_plugin.kernels.reference.quantize_fp8_block/quantize_fp8_channel)")
    if t.dim() != dim:
        _fail(op, f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")


def _check_scale(op: str, name: str, s: torch.Tensor, expected: tuple, layout: str) -> None:
    if s.dtype != torch.float32:
        _fail(op, f"{name} must be float32, got {s.dtype}")
    if tuple(s.shape) != tuple(expected):
        what = (f"[..., ceil(rows/{BLOCK}), ceil(cols/{BLOCK})] ({BLOCK}x{BLOCK} blocks)" if layout == "block"
                else "[..., rows, 1]")
        _fail(op, f"{name} has shape {tuple(s.shape)}, expected {tuple(expected)} for layout {layout!r} {what}")


def check_moe_args(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout) -> None:
    op = "fp8_moe_experts"
    reference.check_layout(layout)
    if hidden.dim() != 2 or hidden.dtype not in _ACT_DTYPES:
        _fail(op, f"hidden must be [T, H] bfloat16/float16/float32, got {tuple(hidden.shape)} {hidden.dtype}")
    _check_fp8(op, "w13", w13, 3)
    _check_fp8(op, "w2", w2, 3)
    t, h = hidden.shape
    e, two_i, h13 = w13.shape
    if two_i % 2 != 0 or h13 != h:
        _fail(op, f"w13 must be [E, 2*I, H={h}] (gate rows then up rows), got {tuple(w13.shape)}")
    i = two_i // 2
    if tuple(w2.shape) != (e, h, i):
        _fail(op, f"w2 must be [E={e}, H={h}, I={i}], got {tuple(w2.shape)}")
    _check_scale(op, "w13_scale", w13_scale, (e, *reference.scale_shape(two_i, h, layout)), layout)
    _check_scale(op, "w2_scale", w2_scale, (e, *reference.scale_shape(h, i, layout)), layout)
    if topk_ids.dim() != 2 or topk_ids.shape[0] != t or topk_ids.dtype not in (torch.int32, torch.int64):
        _fail(op, f"topk_ids must be [T={t}, k] int32/int64, got {tuple(topk_ids.shape)} {topk_ids.dtype}")
    if tuple(topk_weights.shape) != tuple(topk_ids.shape) or not topk_weights.dtype.is_floating_point:
        _fail(op, f"topk_weights must be a float tensor shaped like topk_ids {tuple(topk_ids.shape)}, got "
                  f"{tuple(topk_weights.shape)} {topk_weights.dtype}")


def check_linear_args(x, weight, weight_scale, bias, layout) -> None:
    op = "fp8_linear"
    reference.check_layout(layout)
    _check_fp8(op, "weight", weight, 2)
    n, k = weight.shape
    if x.dim() < 1 or x.shape[-1] != k or x.dtype not in _ACT_DTYPES:
        _fail(op, f"x must be [..., K={k}] bfloat16/float16/float32, got {tuple(x.shape)} {x.dtype}")
    _check_scale(op, "weight_scale", weight_scale, reference.scale_shape(n, k, layout), layout)
    if bias is not None and tuple(bias.shape) != (n,):
        _fail(op, f"bias must be [N={n}], got {tuple(bias.shape)}")


# ---- fake (meta) implementations: shapes and dtypes only -------------------------------------------------------

def _moe_fake(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout):
    check_moe_args(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout)
    return hidden.new_empty(hidden.shape)


def _linear_fake(x, weight, weight_scale, bias, layout):
    check_linear_args(x, weight, weight_scale, bias, layout)
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# ---- real implementations: check, then run the kernel dispatch chose -------------------------------------------

def _moe_impl(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout):
    check_moe_args(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout)
    if topk_ids.shape[1] == 0:  # no expert per token (top-k 0): the reference's sum over no experts, in every impl
        return torch.zeros_like(hidden)
    run = dispatch.kernel("fp8_moe_experts", hidden.device, layout)
    return run(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout)


def _linear_impl(x, weight, weight_scale, bias, layout):
    check_linear_args(x, weight, weight_scale, bias, layout)
    return dispatch.kernel("fp8_linear", x.device, layout)(x, weight, weight_scale, bias, layout)


_IMPLS = {"fp8_moe_experts": (_moe_impl, _moe_fake), "fp8_linear": (_linear_impl, _linear_fake)}

_lib = None


def define() -> None:
    """Defines the ops once per process (a second call, or a re-import, is a no-op)."""
    global _lib
    if _lib is not None or hasattr(torch.ops.glm_plugin, "fp8_moe_experts"):
        return
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    for name, schema in SCHEMAS.items():
        impl, fake = _IMPLS[name]
        lib.define(schema)
        lib.impl(name, impl, "CPU")
        lib.impl(name, impl, "CUDA")
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=lib)
    _lib = lib


define()
