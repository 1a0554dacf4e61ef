"""The sm_90a FP8 MoE CUDA kernel (csrc/cuda) against the PyTorch reference, on an H100/H200/H800, for both weight
scale layouts: 128x128 blocks and one scale per output row (`channel`, applied after each GEMM).

Skipped without a CUDA device or on a GPU other than sm_90 (with the reason). On a Hopper GPU a failure to build
the extension is a failure, not a skip: that is what these tests are for.

Tolerances. The kernel quantises activations to e4m3 per 1 x 128 token group before each GEMM (DeepGEMM's
recipe); the reference is W8A16. Against the reference *with that quantisation added* (`_w8a8`) only the
tensor-core accumulation order and rare one-ulp flips of the intermediate's rounding differ: 1% relative
(Frobenius). The channel layout quantises activations the same way, so the same bounds hold. Against the W8A16 oracle the activation quantisation itself shows: ~sqrt(2) x 3% for two quantised
GEMM inputs, measured 4.3-4.9% by the host emulation in tests/cuda_build; we allow 8%.
"""

from __future__ import annotations

import random

import pytest
import torch
from dispatch_state import reset_choices

from glm_plugin.kernels import reference

pytestmark = pytest.mark.gpu

AIR = dict(H=4096, I=1408, E=128, topk=8)     # GLM-4.5-Air
FULL = dict(H=5120, I=1536, E=160, topk=8)    # GLM-4.5 / 4.6 / 4.7


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        why = "is a CPU-only build" if torch.version.cuda is None else "sees no CUDA device"
        return f"needs a CUDA GPU (sm_90: H100/H200/H800); torch {torch.__version__} {why}"
    if torch.cuda.get_device_capability() != (9, 0):
        return f"the FP8 MoE CUDA kernel targets sm_90a; this GPU is {torch.cuda.get_device_name()}"
    return None


@pytest.fixture(scope="module")
def cuda_op():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from glm_plugin.kernels import build_cuda

    assert build_cuda.load_cuda_extension(build=True), build_cuda.unavailable_reason()
    return torch.ops.glm_plugin.fp8_moe_experts_cuda


def _weights(E: int, H: int, I: int, seed: int, layout: str = "block"):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w13, s13, w2, s2 = [], [], [], []
    for start in range(0, E, 16):  # a few experts at a time: the float copies of GLM-4.5's are 12 GB
        n = min(16, E - start)
        q, s = reference.quantize_fp8(torch.randn(n, 2 * I, H, generator=g, device="cuda") * 0.05, layout)
        w13.append(q), s13.append(s)
        q, s = reference.quantize_fp8(torch.randn(n, H, I, generator=g, device="cuda") * 0.05, layout)
        w2.append(q), s2.append(s)
    return torch.cat(w13), torch.cat(s13), torch.cat(w2), torch.cat(s2)


@pytest.fixture(scope="module")
def air_weights(cuda_op):
    return _weights(AIR["E"], AIR["H"], AIR["I"], 0)


def _routing(T: int, E: int, topk: int, seed: int, empty: tuple[int, ...] = ()):
    g = torch.Generator(device="cuda").manual_seed(seed)
    scores = torch.rand(T, E, generator=g, device="cuda")
    if empty:
        scores[:, list(empty)] = -1.0
    ids = scores.topk(topk, dim=-1).indices.to(torch.int32)
    weights = torch.rand(T, topk, generator=g, device="cuda")
    return weights / weights.sum(-1, keepdim=True), ids


def _quant_act(x: torch.Tensor) -> torch.Tensor:
    rows, k = x.shape
    g = x.float().reshape(rows, k // 128, 128)
    s = g.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 448.0
    return ((g / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s).reshape(rows, k)


def _w8a8(hidden, w13, s13, w2, s2, weights, ids, layout: str = "block") -> torch.Tensor:
    """reference.fp8_moe_experts with the kernel's 1x128 activation quantisation added."""
    inter = w13.shape[1] // 2
    x = _quant_act(hidden)
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    idl = ids.long()
    for e in idl.unique().tolist():
        if not 0 <= e < w13.shape[0]:
            continue
        tok, slot = (idl == e).nonzero(as_tuple=True)
        gu = x[tok] @ reference.dequantize_fp8(w13[e], s13[e], layout).t()
        act = (torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]).to(hidden.dtype).float()
        down = _quant_act(act) @ reference.dequantize_fp8(w2[e], s2[e], layout).t()
        out.index_add_(0, tok, down * weights[tok, slot].float().unsqueeze(1))
    return out


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


# T = 1, 7, 64 pick the 16-row tiles, 256 the 64-row tiles, 1024 and 4096 the 128-row tiles (moe_plan.h
# choose_config).
@pytest.mark.parametrize("T", [1, 7, 64, 256, 1024, 4096])
def test_glm45_air_shapes_match_reference(cuda_op, air_weights, T):
    w13, s13, w2, s2 = air_weights
    hidden = torch.randn(T, AIR["H"], device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, AIR["E"], AIR["topk"], seed=T, empty=(3, 100))
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "block")
    torch.cuda.synchronize()
    assert out.shape == hidden.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids)) < 1e-2
    if T <= 64:  # the W8A16 oracle is slow at large T; the W8A8 check above covers those
        oracle = reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "block")
        assert _rel(out, oracle) < 0.08


def _random_case(seed: int) -> dict:
    """Sizes the kernel takes (hidden and intermediate multiples of 128), 1-64 experts with a quarter of them
    left without tokens, top-k 1-8, 1 to 4,096 tokens, bf16 activations twice as often as fp16 or fp32."""
    rng = random.Random(seed)
    E = rng.choice((1, 4, 16, 64))
    return dict(T=(1, 3, 16, 100, 640, 4096)[seed % 6], H=128 * rng.randint(1, 24), I=128 * rng.randint(1, 12), E=E,
                topk=min(E, rng.choice((1, 2, 4, 8))), empty=tuple(rng.sample(range(E), E // 4)),
                dtype=(torch.bfloat16, torch.float16, torch.bfloat16, torch.float32)[seed % 4])


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_match_reference(cuda_op, seed):
    c = _random_case(seed)
    w13, s13, w2, s2 = _weights(c["E"], c["H"], c["I"], seed)
    hidden = torch.randn(c["T"], c["H"], device="cuda").to(c["dtype"])
    weights, ids = _routing(c["T"], c["E"], c["topk"], seed=seed, empty=c["empty"])
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "block")
    assert out.dtype == c["dtype"] and torch.isfinite(out).all(), c
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids)) < 1e-2, c
    assert _rel(out, reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "block")) < 0.08, c


def test_glm45_full_shape_matches_reference(cuda_op):
    w13, s13, w2, s2 = _weights(FULL["E"], FULL["H"], FULL["I"], 1)
    hidden = torch.randn(5, FULL["H"], device="cuda").to(torch.bfloat16)
    weights, ids = _routing(5, FULL["E"], FULL["topk"], seed=5)
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "block")
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids)) < 1e-2
    assert _rel(out, reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "block")) < 0.08


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_other_activation_dtypes(cuda_op, dtype):
    H, I, E, topk, T = 512, 256, 8, 2, 33
    w13, s13, w2, s2 = _weights(E, H, I, 2)
    hidden = torch.randn(T, H, device="cuda").to(dtype)
    weights, ids = _routing(T, E, topk, seed=7, empty=(0,))
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids.long(), "block")
    assert out.dtype == dtype
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids)) < 1e-2


def test_every_token_on_one_expert_spans_many_tiles(cuda_op):
    """300 rows on one expert (several N tiles, last one partial), every other expert empty."""
    H, I, E, T = 512, 256, 8, 300
    w13, s13, w2, s2 = _weights(E, H, I, 3)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    ids = torch.full((T, 1), 6, dtype=torch.int32, device="cuda")
    weights = torch.ones(T, 1, device="cuda")
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "block")
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids)) < 1e-2


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_prepared_weight_scales_follow_in_place_updates(cuda_op, layout):
    """The weight-scale operand is prepared once per scale tensor and reused; an in-place update of the scales (a
    weight reload) bumps the tensor's version and is prepared again, so the result follows it."""
    H, I, E, topk, T = 256, 256, 4, 2, 9
    w13, s13, w2, s2 = _weights(E, H, I, 11, layout)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, E, topk, seed=11)
    first = cuda_op(hidden, w13, s13, w2, s2, weights, ids, layout)
    again = cuda_op(hidden, w13, s13, w2, s2, weights, ids, layout)
    assert torch.equal(first, again)  # deterministic, prepared scales reused
    s2.mul_(2.0)
    s13.mul_(0.5)
    changed = cuda_op(hidden, w13, s13, w2, s2, weights, ids, layout)
    assert _rel(changed, _w8a8(hidden, w13, s13, w2, s2, weights, ids, layout)) < 1e-2
    assert _rel(changed, first) > 0.1


def test_a_batch_past_one_chunk_matches_reference(cuda_op):
    """More tokens than one enqueue takes (moe_cuda.h: kMaxTokensPerCall = 4,096): chunks share one workspace."""
    H, I, E, topk, T = 256, 128, 8, 2, 4096 + 37
    w13, s13, w2, s2 = _weights(E, H, I, 12)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, E, topk, seed=12)
    ids[4090:4100, 1] = -1  # across the chunk border too
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "block")
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids)) < 1e-2


def test_public_op_dispatches_to_cuda(cuda_op, monkeypatch):
    from glm_plugin import kernels

    monkeypatch.delenv("GLM_PLUGIN_KERNEL", raising=False)
    reset_choices()
    H, I, E, T = 256, 128, 4, 3
    w13, s13, w2, s2 = _weights(E, H, I, 4)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, E, 2, seed=1)
    out = kernels.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "block")
    assert kernels.implementation("fp8_moe_experts", hidden.device) == "cuda"
    assert torch.equal(out, cuda_op(hidden, w13, s13, w2, s2, weights, ids, "block"))  # deterministic
    reset_choices()


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_empty_batch(cuda_op, layout):
    H, I, E = 256, 128, 4
    w13, s13, w2, s2 = _weights(E, H, I, 5, layout)
    hidden = torch.zeros(0, H, device="cuda", dtype=torch.bfloat16)
    ids = torch.zeros(0, 2, dtype=torch.int32, device="cuda")
    assert cuda_op(hidden, w13, s13, w2, s2, ids.float(), ids, layout).shape == (0, H)


def test_scales_of_the_other_layout_are_refused(cuda_op):
    H, I, E = 256, 128, 4
    w13, s13, w2, s2 = _weights(E, H, I, 5, "block")
    hidden = torch.zeros(1, H, device="cuda", dtype=torch.bfloat16)
    ids = torch.zeros(1, 2, dtype=torch.int32, device="cuda")
    with pytest.raises(RuntimeError, match="w13_scale has shape"):
        cuda_op(hidden, w13, s13, w2, s2, ids.float(), ids, "channel")


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_cuda_graph_capture_replays(cuda_op, layout):
    """Engines capture decode steps in CUDA graphs: the op must be capturable and replay with new inputs."""
    w13, s13, w2, s2 = _weights(AIR["E"], AIR["H"], AIR["I"], 0, layout)
    T = 4
    hidden = torch.randn(T, AIR["H"], device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, AIR["E"], AIR["topk"], seed=11)
    cuda_op(hidden, w13, s13, w2, s2, weights, ids, layout)  # warm-up outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, layout)
    new_weights, new_ids = _routing(T, AIR["E"], AIR["topk"], seed=12)
    hidden.copy_(torch.randn_like(hidden))
    weights.copy_(new_weights), ids.copy_(new_ids)
    graph.replay()
    torch.cuda.synchronize()
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids, layout)) < 1e-2


def test_ids_outside_the_experts_contribute_nothing(cuda_op):
    """Expert parallelism marks experts of other ranks as -1 (vLLM's expert_map): those pairs add nothing."""
    H, I, E, T = 256, 128, 8, 17
    w13, s13, w2, s2 = _weights(E, H, I, 6)
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, E, 3, seed=2)
    masked = ids.clone()
    masked[:, -1] = -1
    out = cuda_op(hidden, w13, s13, w2, s2, weights, masked, "block")
    expect = _w8a8(hidden, w13, s13, w2, s2, weights[:, :-1].contiguous(), ids[:, :-1].contiguous())
    assert _rel(out, expect) < 1e-2
    assert _rel(out, reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, masked, "block")) < 0.08


# ---- the channel layout (per-output-row weight scales, GLM's compressed-tensors FP8 checkpoints) ------------------

@pytest.fixture(scope="module")
def air_channel_weights(cuda_op):
    return _weights(AIR["E"], AIR["H"], AIR["I"], 0, "channel")


@pytest.mark.parametrize("T", [1, 7, 64, 256, 1024, 4096])
def test_channel_glm45_air_shapes_match_reference(cuda_op, air_channel_weights, T):
    w13, s13, w2, s2 = air_channel_weights
    assert s13.shape == (AIR["E"], 2 * AIR["I"], 1) and s2.shape == (AIR["E"], AIR["H"], 1)
    hidden = torch.randn(T, AIR["H"], device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, AIR["E"], AIR["topk"], seed=T, empty=(3, 100))
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "channel")
    torch.cuda.synchronize()
    assert out.shape == hidden.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids, "channel")) < 1e-2
    if T <= 64:
        oracle = reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "channel")
        assert _rel(out, oracle) < 0.08


@pytest.mark.parametrize("seed", range(6))
def test_channel_random_shapes_match_reference(cuda_op, seed):
    c = _random_case(100 + seed)
    w13, s13, w2, s2 = _weights(c["E"], c["H"], c["I"], seed, "channel")
    hidden = torch.randn(c["T"], c["H"], device="cuda").to(c["dtype"])
    weights, ids = _routing(c["T"], c["E"], c["topk"], seed=seed, empty=c["empty"])
    out = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "channel")
    assert out.dtype == c["dtype"] and torch.isfinite(out).all(), c
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, ids, "channel")) < 1e-2, c
    assert _rel(out, reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "channel")) < 0.08, c


def test_channel_row_scales_reach_their_rows(cuda_op):
    """Quadrupling the scale of one w2 row (same FP8 bytes) quadruples that output column and nothing else: a
    scale applied to the wrong row or expert would move other columns."""
    H, I, E, T = 256, 128, 8, 9
    w13, s13, w2, s2 = _weights(E, H, I, 8, "channel")
    hidden = torch.randn(T, H, device="cuda").to(torch.float32)
    weights, ids = _routing(T, E, 2, seed=3)
    base = cuda_op(hidden, w13, s13, w2, s2, weights, ids, "channel")
    s2x = s2.clone()
    s2x[:, 37] *= 4.0
    scaled = cuda_op(hidden, w13, s13, w2, s2x, weights, ids, "channel")
    others = [h for h in range(H) if h != 37]
    assert torch.equal(scaled[:, others], base[:, others])
    assert torch.equal(scaled[:, 37], base[:, 37] * 4.0)


def test_channel_ids_outside_the_experts_contribute_nothing(cuda_op):
    H, I, E, T = 256, 128, 8, 17
    w13, s13, w2, s2 = _weights(E, H, I, 6, "channel")
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, E, 3, seed=2)
    masked = ids.clone()
    masked[:, -1] = -1
    out = cuda_op(hidden, w13, s13, w2, s2, weights, masked, "channel")
    assert _rel(out, _w8a8(hidden, w13, s13, w2, s2, weights, masked, "channel")) < 1e-2


def test_public_op_dispatches_channel_to_cuda(cuda_op, monkeypatch):
    from glm_plugin import kernels

    monkeypatch.delenv("GLM_PLUGIN_KERNEL", raising=False)
    reset_choices()
    H, I, E, T = 256, 128, 4, 3
    w13, s13, w2, s2 = _weights(E, H, I, 4, "channel")
    hidden = torch.randn(T, H, device="cuda").to(torch.bfloat16)
    weights, ids = _routing(T, E, 2, seed=1)
    out = kernels.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "channel")
    assert kernels.implementation("fp8_moe_experts", hidden.device, "channel") == "cuda"
    assert torch.equal(out, cuda_op(hidden, w13, s13, w2, s2, weights, ids, "channel"))
    reset_choices()
