"""The PyTorch oracle itself: FP8 (de)quantisation bounds, and routing and experts against transformers' GLM MoE
(Glm4MoeTopkRouter / Glm4MoeExperts / Glm4MoeMoE), which is what the checkpoints were trained with."""

from __future__ import annotations

import pytest
import torch

from glm_plugin.kernels import reference
from moe_inputs import make_moe

# e4m3 keeps 3 mantissa bits: round-to-nearest is off by at most 2^-4 of the value for normal codes; values below
# the smallest normal (2^-6 of 448-scaled units) are off by at most half a subnormal step, 2^-10 units.
E4M3_REL = 2.0**-4


@pytest.mark.parametrize("layout", ["block", "channel"])
@pytest.mark.parametrize("shape", [(256, 384), (200, 100), (3, 130, 260)])
def test_quantize_round_trip_within_e4m3_precision(layout, shape):
    w = torch.randn(shape) * 0.02
    q, s = reference.quantize_fp8(w, layout)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32
    n, k = shape[-2:]
    assert s.shape == (*shape[:-2], *reference.scale_shape(n, k, layout))
    back = reference.dequantize_fp8(q, s, layout)
    unit = s.repeat_interleave(128, -2).repeat_interleave(128, -1)[..., :n, :k] if layout == "block" else s
    bound = E4M3_REL * w.abs() + unit * 2.0**-10
    assert ((back - w).abs() <= bound + 1e-12).all()
    # the largest magnitude of each scale group maps to the largest code exactly
    assert q.float().abs().max() == reference.FP8_MAX


def test_block_scale_multiplies_per_128_block():
    """`weight_scale_inv` multiplies despite its name (zai-org / DeepSeek-V3 convention)."""
    q = torch.ones(256, 256).to(torch.float8_e4m3fn)
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = reference.dequantize_fp8(q, s, "block")
    assert w[0, 0] == 1 and w[0, 128] == 2 and w[128, 0] == 3 and w[255, 255] == 4


def _glm_config(experts=16, n_group=4, topk_group=2, top_k=4, hidden=64, inter=32, scaling=2.5, norm=True):
    from transformers import Glm4MoeConfig

    return Glm4MoeConfig(hidden_size=hidden, moe_intermediate_size=inter, n_routed_experts=experts,
                         num_experts_per_tok=top_k, n_group=n_group, topk_group=topk_group, n_shared_experts=1,
                         routed_scaling_factor=scaling, norm_topk_prob=norm, hidden_act="silu")


def _sorted_by_id(weights, ids):
    order = ids.long().argsort(dim=-1)
    return weights.gather(1, order), ids.long().gather(1, order)


@pytest.mark.parametrize("groups", [(1, 1), (4, 2), (8, 3)])
@pytest.mark.parametrize("norm", [True, False])
def test_route_matches_transformers_router(groups, norm):
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeTopkRouter

    n_group, topk_group = groups
    cfg = _glm_config(experts=32, n_group=n_group, topk_group=topk_group, top_k=6, norm=norm)
    router = Glm4MoeTopkRouter(cfg)
    with torch.no_grad():
        router.weight.normal_(0, 0.3)
        router.e_score_correction_bias.normal_(0, 0.5)  # large enough to change which experts win
    x = torch.randn(50, cfg.hidden_size)
    logits, want_w, want_ids = router(x)
    got_w, got_ids = reference.glm_route(logits, router.e_score_correction_bias, cfg.num_experts_per_tok, n_group,
                                       topk_group, norm, cfg.routed_scaling_factor)
    assert got_w.dtype == torch.float32 and got_ids.dtype == torch.int32 and got_ids.shape == (50, 6)
    gw, gi = _sorted_by_id(got_w, got_ids)
    ww, wi = _sorted_by_id(want_w.detach(), want_ids)
    assert torch.equal(gi, wi)
    torch.testing.assert_close(gw, ww.float(), rtol=1e-6, atol=1e-7)  # same fp32 ops, same order


def test_bias_selects_but_does_not_weigh():
    logits = torch.zeros(1, 8)
    bias = torch.tensor([0, 0, 0, 0, 0, 0, 5.0, 5.0])
    w, ids = reference.glm_route(logits, bias, 2, 1, 1, False, 1.0)
    assert sorted(ids[0].tolist()) == [6, 7]
    torch.testing.assert_close(w, torch.full((1, 2), 0.5))  # sigmoid(0), the unbiased score


def test_experts_and_routing_match_transformers_moe():
    """glm_route + fp8_moe_experts(reference) == Glm4MoeMoE (minus its shared expert) on the dequantised weights,
    in fp32 where no intermediate rounding happens: checks w13's gate-then-up order and w2's [E, H, I] layout."""
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeMoE

    cfg = _glm_config()
    moe = Glm4MoeMoE(cfg).eval()
    p = make_moe(9, cfg.hidden_size, cfg.moe_intermediate_size, cfg.n_routed_experts, 4, "block",
                 dtype=torch.float32)
    with torch.no_grad():
        moe.gate.weight.normal_(0, 0.3)
        moe.gate.e_score_correction_bias.normal_(0, 0.1)
        moe.experts.gate_up_proj.copy_(reference.dequantize_fp8(p.w13, p.w13_scale, "block"))
        moe.experts.down_proj.copy_(reference.dequantize_fp8(p.w2, p.w2_scale, "block"))
        for lin in (moe.shared_experts.gate_proj, moe.shared_experts.up_proj, moe.shared_experts.down_proj):
            lin.weight.normal_(0, 0.1)
        x = p.hidden
        want = moe(x.unsqueeze(0)).squeeze(0) - moe.shared_experts(x)
        logits = x @ moe.gate.weight.t()
        tw, ids = reference.glm_route(logits, moe.gate.e_score_correction_bias, 4, cfg.n_group, cfg.topk_group, True,
                                    cfg.routed_scaling_factor)
        got = reference.fp8_moe_experts(x, p.w13, p.w13_scale, p.w2, p.w2_scale, tw, ids, "block")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # fp32, different summation order only


def test_reference_skips_ids_outside_the_experts():
    p = make_moe(3, 64, 32, 4, 2, "channel")
    kept = reference.fp8_moe_experts(p.hidden, p.w13, p.w13_scale, p.w2, p.w2_scale, p.topk_weights[:, :1],
                                     p.topk_ids[:, :1], "channel")
    p.topk_ids[:, 1] = torch.tensor([-1, 4, -7], dtype=p.topk_ids.dtype)
    assert torch.equal(reference.fp8_moe_experts(*p.args()), kept)
