"""Triton fused FP8 MoE experts (W8A16, block 128x128 or per-channel scales) for CUDA tensors.

Why: on a GPU without our compiled CUDA kernel (it needs sm_90a and a build) the
dispatcher in `glm_plugin.kernels` tries this module before falling back to the PyTorch reference. The maths is
the reference's (`reference.fp8_moe_experts`): FP8 weights widened exactly to the activation dtype inside the
GEMM loop (never a dequantised copy), fp32 accumulation, scales applied per 128-wide K block and per output row,
`silu(gate) * up` rounded to the activation dtype between the two GEMMs, routing weights applied in fp32.

Structure (the usual fused-MoE one):
1. `_align` (torch ops, no host sync): (token, slot) pairs are sorted by expert and each expert's run is padded
   to a multiple of BLOCK_M; every BLOCK_M-block of the sorted list belongs to one expert (`block_expert`, -1 for
   unused blocks). Pairs whose id is outside [0, E) go to no block and add nothing.
2. `_gate_up_kernel`: grouped GEMM per (block, tile of I) computing gate and up tiles together, then SiLU-and-mul,
   stored in the activation dtype at the sorted position.
3. `_down_kernel`: grouped GEMM per (block, tile of H) times the pair's routing weight, stored per pair in fp32.
4. Combine: a sum over the k slots of each token (deterministic, no atomics), cast to the activation dtype.

Checked on CPU under `TRITON_INTERPRET=1` with fp16/fp32 activations only: the interpreter computes bf16
`tl.dot` wrongly, so the bf16 path (the one engines use) is checked on a GPU only, by
tests/gpu/test_fp8_moe_triton.py; see docs/kernels.md, "Triton kernel".
"""

from __future__ import annotations

import triton
import triton.language as tl

from glm_plugin import settings

from . import reference

BLOCK_M = 16
"""Sorted (token, slot) pairs per program; also the per-expert padding unit."""
BLOCK_N = 64
"""Output columns per program; divides reference.BLOCK, so a tile never straddles two rows of block scales."""
BLOCK_K = reference.BLOCK
"""K step; equal to the scale block so a block scale is constant over one step."""


def available() -> bool:
    """True with a CUDA device, or under TRITON_INTERPRET=1 (the tests run the kernels on CPU tensors then)."""
    if settings.value("TRITON_INTERPRET") == "1":
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@triton.jit
def _gate_up_kernel(x_ptr, w_ptr, s_ptr, act_ptr, sorted_ptr, block_expert_ptr,
                    num_pairs, H, I,
                    stride_xt, stride_we, stride_wn, stride_wk, stride_se, stride_sn, stride_sk, stride_am,
                    TOP_K: tl.constexpr, BLOCK_SCALES: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert < 0:  # a block past the end of the padded sorted list: nothing to do
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + rows)
    pair_ok = pair < num_pairs  # padding slots hold num_pairs
    token = pair // TOP_K
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    offs_k = tl.arange(0, BLOCK_K)
    w_e = w_ptr + expert.to(tl.int64) * stride_we
    s_e = s_ptr + expert.to(tl.int64) * stride_se
    gate_rows = offs_n
    up_rows = offs_n + I
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + offs_k
        k_ok = k < H
        a = tl.load(x_ptr + token.to(tl.int64)[:, None] * stride_xt + k[None, :],
                    mask=pair_ok[:, None] & k_ok[None, :], other=0.0)
        wmask = k_ok[:, None] & n_ok[None, :]
        wg = tl.load(w_e + gate_rows[None, :] * stride_wn + k[:, None] * stride_wk, mask=wmask, other=0.0)
        wu = tl.load(w_e + up_rows[None, :] * stride_wn + k[:, None] * stride_wk, mask=wmask, other=0.0)
        # e4m3 -> activation dtype is exact (bf16 and fp16 hold every finite e4m3 value)
        wg = wg.to(tl.float32).to(a.dtype)
        wu = wu.to(tl.float32).to(a.dtype)
        pg = tl.dot(a, wg)
        pu = tl.dot(a, wu)
        if BLOCK_SCALES:
            kb = k0 // BLOCK_K
            sg = tl.load(s_e + (gate_rows // BLOCK_K) * stride_sn + kb * stride_sk, mask=n_ok, other=0.0)
            su = tl.load(s_e + (up_rows // BLOCK_K) * stride_sn + kb * stride_sk, mask=n_ok, other=0.0)
            acc_g += pg * sg[None, :]
            acc_u += pu * su[None, :]
        else:
            acc_g += pg
            acc_u += pu
    if not BLOCK_SCALES:
        acc_g = acc_g * tl.load(s_e + gate_rows * stride_sn, mask=n_ok, other=0.0)[None, :]
        acc_u = acc_u * tl.load(s_e + up_rows * stride_sn, mask=n_ok, other=0.0)[None, :]
    act = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(act_ptr + rows.to(tl.int64)[:, None] * stride_am + offs_n[None, :],
             act.to(act_ptr.dtype.element_ty), mask=n_ok[None, :])


@triton.jit
def _down_kernel(act_ptr, w_ptr, s_ptr, out_ptr, topk_w_ptr, sorted_ptr, block_expert_ptr,
                 num_pairs, H, I,
                 stride_am, stride_we, stride_wn, stride_wk, stride_se, stride_sn, stride_sk, stride_op,
                 BLOCK_SCALES: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert < 0:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + rows)
    pair_ok = pair < num_pairs
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < H
    offs_k = tl.arange(0, BLOCK_K)
    w_e = w_ptr + expert.to(tl.int64) * stride_we
    s_e = s_ptr + expert.to(tl.int64) * stride_se
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        k = k0 + offs_k
        k_ok = k < I
        a = tl.load(act_ptr + rows.to(tl.int64)[:, None] * stride_am + k[None, :],
                    mask=pair_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_e + offs_n[None, :] * stride_wn + k[:, None] * stride_wk,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        p = tl.dot(a, w.to(tl.float32).to(a.dtype))
        if BLOCK_SCALES:
            s = tl.load(s_e + (offs_n // BLOCK_K) * stride_sn + (k0 // BLOCK_K) * stride_sk, mask=n_ok, other=0.0)
            acc += p * s[None, :]
        else:
            acc += p
    if not BLOCK_SCALES:
        acc = acc * tl.load(s_e + offs_n * stride_sn, mask=n_ok, other=0.0)[None, :]
    route_w = tl.load(topk_w_ptr + pair, mask=pair_ok, other=0.0).to(tl.float32)
    acc = acc * route_w[:, None]
    tl.store(out_ptr + pair.to(tl.int64)[:, None] * stride_op + offs_n[None, :], acc,
             mask=pair_ok[:, None] & n_ok[None, :])


def _align(topk_ids, num_experts: int, block_m: int):
    """Sort (token, slot) pairs by expert, padding each expert's run to a multiple of block_m.

    Returns (sorted_pairs [P] int32 with padding = T*k, block_expert [P // block_m] int32 with -1 for unused
    blocks). P is the worst case T*k + E*(block_m - 1), rounded up to block_m, so no host sync is needed.
    """
    import torch

    dev = topk_ids.device
    flat = topk_ids.reshape(-1).long()
    num_pairs = flat.numel()
    valid = (flat >= 0) & (flat < num_experts)
    key = torch.where(valid, flat, torch.full_like(flat, num_experts))  # invalid pairs sort last
    order = torch.argsort(key, stable=True)
    # not torch.bincount: it reads the ids' maximum back to the host, which CUDA-graph capture refuses
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=dev).index_add_(
        0, key, torch.ones_like(key))[:num_experts]
    padded = (counts + block_m - 1) // block_m * block_m
    start = torch.cumsum(counts, 0) - counts
    padded_end = torch.cumsum(padded, 0)
    padded_start = padded_end - padded
    sorted_key = key[order]
    capacity = -(-(num_pairs + num_experts * (block_m - 1)) // block_m) * block_m
    rank = torch.arange(num_pairs, device=dev)
    e_clamped = sorted_key.clamp(max=num_experts - 1)
    pos = padded_start[e_clamped] + rank - start[e_clamped]
    pos = torch.where(sorted_key < num_experts, pos, torch.full_like(pos, capacity))  # dump slot for invalid ids
    sorted_pairs = torch.full((capacity + 1,), num_pairs, dtype=torch.int32, device=dev)
    sorted_pairs[pos] = order.to(torch.int32)
    block_start = torch.arange(0, capacity, block_m, device=dev)
    block_expert = torch.searchsorted(padded_end, block_start, right=True)
    block_expert = torch.where(block_start < padded_end[-1], block_expert, torch.full_like(block_expert, -1))
    return sorted_pairs[:capacity].contiguous(), block_expert.to(torch.int32)


def fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, layout: str):
    """Same contract as `reference.fp8_moe_experts` (see docs/kernels.md); returns [T, H] in hidden's dtype."""
    import torch

    reference.check_layout(layout)
    block_scales = layout == "block"
    t, h = hidden.shape
    num_experts, two_i, h_w = w13.shape
    inter = two_i // 2
    top_k = topk_ids.shape[1]
    if h_w != h or tuple(w2.shape) != (num_experts, h, inter):
        raise ValueError(f"fp8_moe_experts: w13 {tuple(w13.shape)} / w2 {tuple(w2.shape)} do not match hidden "
                         f"{tuple(hidden.shape)}; expected w13 [E, 2I, {h}] and w2 [E, {h}, I]")
    out = torch.empty_like(hidden)
    if t == 0:
        return out
    x = hidden.contiguous()
    w13 = w13.contiguous()
    w2 = w2.contiguous()
    s13 = w13_scale.float().contiguous()
    s2 = w2_scale.float().contiguous()
    route_w = topk_weights.float().contiguous()
    num_pairs = t * top_k
    sorted_pairs, block_expert = _align(topk_ids, num_experts, BLOCK_M)
    capacity = sorted_pairs.numel()
    num_blocks = block_expert.numel()
    act = torch.empty((capacity, inter), dtype=hidden.dtype, device=hidden.device)
    # pairs with an id outside [0, E) are in no block: their rows stay zero
    pair_out = torch.zeros((num_pairs, h), dtype=torch.float32, device=hidden.device)
    # channel scales are [E, N, 1]: the K stride is never used
    s13_k = s13.stride(2)
    s2_k = s2.stride(2)
    _gate_up_kernel[(num_blocks, triton.cdiv(inter, BLOCK_N))](
        x, w13, s13, act, sorted_pairs, block_expert, num_pairs, h, inter,
        x.stride(0), w13.stride(0), w13.stride(1), w13.stride(2), s13.stride(0), s13.stride(1), s13_k,
        act.stride(0),
        TOP_K=top_k, BLOCK_SCALES=block_scales, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    _down_kernel[(num_blocks, triton.cdiv(h, BLOCK_N))](
        act, w2, s2, pair_out, route_w, sorted_pairs, block_expert, num_pairs, h, inter,
        act.stride(0), w2.stride(0), w2.stride(1), w2.stride(2), s2.stride(0), s2.stride(1), s2_k,
        pair_out.stride(0),
        BLOCK_SCALES=block_scales, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    out.copy_(pair_out.view(t, top_k, h).sum(dim=1))
    return out
