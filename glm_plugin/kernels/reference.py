"""Pure-PyTorch oracle for the glm_plugin kernels: FP8 (de)quantisation, FP8 linear, GLM routing, FP8 MoE experts.

Every other implementation (CPU C++, Triton, CUDA) is tested against these functions, so they favour being
obviously right over being fast: weights are dequantised to fp32, activations stay in fp32 (W8A16, no activation
quantisation), and the only rounding besides the final cast is the one engines do between the two expert GEMMs
(the SiLU-and-mul intermediate is materialised in the activation dtype).

The helpers `quantize_fp8_block`, `quantize_fp8_channel` and `dequantize_fp8` are shared by tests, benchmarks and
scripts so that every FP8 tensor in the project is produced the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glm_plugin.checkpoint import FP8_BLOCK as BLOCK  # noqa: F401 (kernels and tests read both here)
from glm_plugin.checkpoint import SCALE_LAYOUTS as LAYOUTS

FP8_MAX = 448.0
"""Largest finite float8_e4m3fn value."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'block' ({BLOCK}x{BLOCK} weight_scale_inv) or 'channel' (per-output-channel "
                         f"weight_scale), got {layout!r}")


def scale_shape(n: int, k: int, layout: str) -> tuple[int, int]:
    """Shape of the scale of one [n, k] FP8 weight in `layout`."""
    check_layout(layout)
    return (_cdiv(n, BLOCK), _cdiv(k, BLOCK)) if layout == "block" else (n, 1)


def quantize_fp8_block(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., N, K] float -> (float8_e4m3fn [..., N, K], fp32 scale [..., ceil(N/b), ceil(K/b)]), dequant = q * s.

    The scale is the block's absolute maximum over 448, as DeepSeek/zai-org exporters write `weight_scale_inv`;
    partial edge blocks are scaled by their own maximum.
    """
    *lead, n, k = w.shape
    nb, kb = _cdiv(n, block), _cdiv(k, block)
    wf = w.float()
    padded = F.pad(wf, (0, kb * block - k, 0, nb * block - n))
    blocks = padded.reshape(*lead, nb, block, kb, block)
    amax = blocks.abs().amax(dim=(-3, -1))  # [..., nb, kb]
    scale = amax.clamp(min=1e-12) / FP8_MAX
    q = (blocks / scale[..., :, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q = q.reshape(*lead, nb * block, kb * block)[..., :n, :k].to(torch.float8_e4m3fn)
    return q, scale.to(torch.float32)


def quantize_fp8_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., N, K] float -> (float8_e4m3fn [..., N, K], fp32 scale [..., N, 1]), as compressed-tensors'
    per-channel (`strategy: channel`) weights: one scale per output row."""
    wf = w.float()
    scale = wf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    q = (wf / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale.to(torch.float32)


def quantize_fp8(w: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_layout(layout)
    return quantize_fp8_block(w) if layout == "block" else quantize_fp8_channel(w)


def dequantize_fp8(w: torch.Tensor, scale: torch.Tensor, layout: str) -> torch.Tensor:
    """FP8 [..., N, K] with its scale -> fp32 [..., N, K]."""
    check_layout(layout)
    wf = w.float()
    s = scale.float()
    if layout == "channel":
        return wf * s
    *lead, n, k = w.shape
    nb, kb = s.shape[-2:]
    padded = F.pad(wf, (0, kb * BLOCK - k, 0, nb * BLOCK - n))
    blocks = padded.reshape(*lead, nb, BLOCK, kb, BLOCK) * s[..., :, None, :, None]
    return blocks.reshape(*lead, nb * BLOCK, kb * BLOCK)[..., :n, :k]


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
               layout: str) -> torch.Tensor:
    """x [..., K] @ dequant(weight [N, K]).T (+ bias) in fp32, returned in x's dtype."""
    w = dequantize_fp8(weight, weight_scale, layout)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def glm_route(router_logits: torch.Tensor, correction_bias: torch.Tensor, top_k: int, n_group: int,
              topk_group: int, renormalize: bool, routed_scaling_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GLM-4.5 router from logits [T, E]: (topk_weights [T, k] fp32, topk_ids [T, k] int32).

    Sigmoid affinities; the correction bias only chooses experts (weights come from the unbiased scores); the
    score of a group is the sum of its two best biased scores; experts outside the `topk_group` best groups are
    excluded; weights are renormalised (with transformers' 1e-20 guard) and then multiplied by the routed scaling
    factor. ids are int32 as vLLM's `grouped_topk` returns them.
    """
    t, e = router_logits.shape
    scores = router_logits.float().sigmoid()
    choice = scores + correction_bias.float().unsqueeze(0)
    if n_group > 1:
        group_scores = choice.view(t, n_group, e // n_group).topk(2, dim=-1).values.sum(dim=-1)
        keep = group_scores.topk(topk_group, dim=-1).indices
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
        expert_mask = group_mask.unsqueeze(-1).expand(t, n_group, e // n_group).reshape(t, e)
        choice = choice.masked_fill(~expert_mask, float("-inf"))
    ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    weights = weights * routed_scaling_factor
    return weights.to(torch.float32), ids.to(torch.int32)


def fp8_moe_experts(hidden: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                    w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                    layout: str) -> torch.Tensor:
    """sum_k w[t,k] * down_e(silu(gate_e(x_t)) * up_e(x_t)), e = topk_ids[t,k], in hidden's dtype.

    w13 [E, 2I, H] holds the gate rows then the up rows (vLLM's w13); w2 is [E, H, I]. Pairs whose id lies
    outside [0, E) contribute nothing (vLLM's expert_map gives -1 to experts of other expert-parallel ranks).
    """
    check_layout(layout)
    num_experts = w13.shape[0]
    inter = w13.shape[1] // 2
    x = hidden.float()
    ids = topk_ids.long()
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for e in ids.unique().tolist():
        if not 0 <= e < num_experts:  # expert parallelism marks other ranks' experts -1: they add nothing
            continue
        tok, slot = (ids == e).nonzero(as_tuple=True)
        gate_up = x[tok] @ dequantize_fp8(w13[e], w13_scale[e], layout).t()
        act = (F.silu(gate_up[:, :inter]) * gate_up[:, inter:]).to(hidden.dtype).float()
        down = act @ dequantize_fp8(w2[e], w2_scale[e], layout).t()
        out.index_add_(0, tok, down * topk_weights[tok, slot].float().unsqueeze(1))
    return out.to(hidden.dtype)
