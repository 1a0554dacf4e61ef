"""The C++ CPU kernels agree with the reference: both FP8 layouts, 8 and 128 experts, top-2 and top-8, 1/7/64
tokens (most experts get no token with 128 experts), every microkernel this CPU can run (AVX-512 when present,
AVX2 forced with the kernel's own switch, the portable scalar loop), outputs and scratch poisoned with NaN so an
element the kernel forgot to write cannot pass."""

from __future__ import annotations

import pytest
import torch

from glm_plugin import kernels
from glm_plugin.kernels import reference
from moe_inputs import assert_close_bf16, make_moe


def _use_isa(name, monkeypatch):
    """Runs the rest of the test under one microkernel: native (the best this CPU has), avx2 (AVX-512 disabled
    by the kernel's own switch), scalar (the portable loop); poisoning on. Returns the ISA the kernel reports."""
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "cpp")
    monkeypatch.setenv("GLM_PLUGIN_KERNEL_POISON", "1")
    if name != "native":
        monkeypatch.setenv("GLM_PLUGIN_CPU_ISA", name)
    chosen = torch.ops.glm_plugin.cpu_kernel_isa()
    if name == "avx2" and chosen != "avx2":
        pytest.skip(f"this CPU has no AVX2+FMA+F16C (kernel chose {chosen})")
    if name == "scalar":
        assert chosen == "scalar"
    return chosen


@pytest.fixture(params=["native", "avx2"])
def isa(request, cpu_kernels, monkeypatch):
    return _use_isa(request.param, monkeypatch)


@pytest.fixture(params=["native", "avx2", "scalar"])
def any_isa(request, cpu_kernels, monkeypatch):
    """Also the scalar loop (CPUs without AVX2), on the smaller tests only: it is slow by design."""
    return _use_isa(request.param, monkeypatch)


# GLM shapes are multiples of 128; these keep H=256 and use I=384 (whole blocks) with 8 experts and I=192 with
# 128 experts, where a 128-row scale block of w13 spans the last gate rows and the first up rows.
SHAPES = {8: (256, 384), 128: (256, 192)}


@pytest.mark.parametrize("layout", ["block", "channel"])
@pytest.mark.parametrize("experts", [8, 128])
@pytest.mark.parametrize("top_k", [2, 8])
@pytest.mark.parametrize("tokens", [1, 7, 64])
def test_moe_matches_reference(layout, experts, top_k, tokens, isa):
    hidden, inter = SHAPES[experts]
    p = make_moe(tokens, hidden, inter, experts, top_k, layout)
    got = kernels.fp8_moe_experts(*p.args())
    want = reference.fp8_moe_experts(*p.args())
    assert_close_bf16(got, want, f"{isa} {layout} E={experts} k={top_k} T={tokens} seed={p.seed}")


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_moe_one_crowded_expert(layout, isa):
    """64 tokens on the same 8 experts: several 16-token blocks per expert, 120 idle experts, int64 ids."""
    p = make_moe(64, 256, 192, 128, 8, layout, ids_dtype=torch.int64, crowd=True)
    assert_close_bf16(kernels.fp8_moe_experts(*p.args()), reference.fp8_moe_experts(*p.args()),
                      f"{isa} crowded seed={p.seed}")


@pytest.mark.parametrize("layout", ["block", "channel"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_moe_odd_shapes_and_dtypes(layout, dtype, any_isa):
    """H and I that are multiples of neither 128 nor the SIMD width (vector tails, partial scale blocks)."""
    p = make_moe(7, 200, 100, 8, 2, layout, dtype=dtype)
    got, want = kernels.fp8_moe_experts(*p.args()), reference.fp8_moe_experts(*p.args())
    # fp16 keeps 11 significant bits (rtol 4 ulps = 2e-3) and fp32 only differs by summation order.
    rtol = 2e-3 if dtype == torch.float16 else 1e-5
    atol = rtol * float(want.abs().max())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{any_isa} seed={p.seed}: {m}")


def test_moe_no_tokens(cpu_kernels, monkeypatch):
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "cpp")
    p = make_moe(0, 256, 128, 8, 2, "block")
    assert kernels.fp8_moe_experts(*p.args()).shape == (0, 256)


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_moe_ids_outside_the_experts_contribute_nothing(layout, isa):
    """Expert parallelism marks other ranks' experts -1 (vLLM's expert_map); ids >= E are treated the same."""
    p = make_moe(7, 256, 128, 8, 4, layout)
    want = reference.fp8_moe_experts(p.hidden, p.w13, p.w13_scale, p.w2, p.w2_scale, p.topk_weights[:, :2],
                                     p.topk_ids[:, :2], layout)
    p.topk_ids[:, 2] = -1
    p.topk_ids[:, 3] = 8
    p.topk_ids[0, :] = -1  # a token with no local expert at all: exact zeros
    want[0] = 0
    got = kernels.fp8_moe_experts(*p.args())
    assert_close_bf16(got, want, f"{isa} masked ids seed={p.seed}")
    assert torch.equal(got[0], torch.zeros_like(got[0]))
    # token 0's rows leave the reference's per-expert matmuls, which may change their blocking: not bitwise
    assert_close_bf16(reference.fp8_moe_experts(*p.args()), want, f"reference masked ids seed={p.seed}")


@pytest.mark.parametrize("layout", ["block", "channel"])
@pytest.mark.parametrize("shape", [(1, 256, 384), (7, 200, 100), (130, 512, 256)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(layout, shape, bias, any_isa):
    m, k, n = shape
    w, s = reference.quantize_fp8(torch.randn(n, k) / k**0.5, layout)
    x = torch.randn(m, k, dtype=torch.bfloat16)
    b = torch.randn(n) if bias else None
    assert_close_bf16(kernels.fp8_linear(x, w, s, b, layout), reference.fp8_linear(x, w, s, b, layout),
                      f"{any_isa} linear {layout} {shape}")


def test_linear_keeps_leading_dims(cpu_kernels, monkeypatch):
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "cpp")
    w, s = reference.quantize_fp8(torch.randn(64, 128), "block")
    x = torch.randn(2, 3, 128, dtype=torch.bfloat16)
    out = kernels.fp8_linear(x, w, s, None, "block")
    assert out.shape == (2, 3, 64)
    assert_close_bf16(out, reference.fp8_linear(x, w, s, None, "block"), "leading dims")


def test_every_e4m3_code_decodes_exactly(cpu_kernels, monkeypatch):
    """All 254 finite codes through each microkernel: a [256, 64] weight whose row r is code r, dotted with a
    one-hot x, must return exactly the code's value (channel scale 1)."""
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "cpp")
    codes = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    finite = torch.isfinite(codes.float())
    w = codes.view(256, 1).expand(256, 64).contiguous()
    x = torch.zeros(1, 64)
    x[0, 37] = 1.0
    for isa in ("native", "avx2", "scalar"):
        if isa != "native":
            monkeypatch.setenv("GLM_PLUGIN_CPU_ISA", isa)
        out = kernels.fp8_linear(x, w, torch.ones(256, 1), None, "channel")[0]
        assert torch.equal(out[finite], codes.float()[finite]), isa


def test_moe_long_prefill_spans_token_chunks(isa):
    """More than 512 tokens: the driver works in 512-token chunks (bounded scratch); the seams must not show."""
    p = make_moe(1100, 64, 64, 8, 2, "block")
    assert_close_bf16(kernels.fp8_moe_experts(*p.args()), reference.fp8_moe_experts(*p.args()),
                      f"{isa} 1100 tokens seed={p.seed}")


def test_moe_accepts_strided_inputs_and_bf16_weights(cpu_kernels, monkeypatch):
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "cpp")
    p = make_moe(9, 256, 128, 8, 2, "channel")
    wide = torch.randn(9, 512, dtype=torch.bfloat16)
    wide[:, ::2] = p.hidden
    p.hidden = wide[:, ::2]  # non-contiguous view
    p.topk_weights = p.topk_weights.to(torch.bfloat16)
    assert_close_bf16(kernels.fp8_moe_experts(*p.args()), reference.fp8_moe_experts(*p.args()), "strided")
