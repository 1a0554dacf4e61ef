"""Random FP8 MoE problems for the kernel tests, drawn fresh on every call (no fixed seed: each run tests new
inputs; a failure prints the shapes and the seed to replay it)."""

from __future__ import annotations

import dataclasses

import torch

from glm_plugin.kernels import reference


@dataclasses.dataclass
class MoeProblem:
    hidden: torch.Tensor
    w13: torch.Tensor
    w13_scale: torch.Tensor
    w2: torch.Tensor
    w2_scale: torch.Tensor
    topk_weights: torch.Tensor
    topk_ids: torch.Tensor
    layout: str
    seed: int

    def args(self):
        return (self.hidden, self.w13, self.w13_scale, self.w2, self.w2_scale, self.topk_weights, self.topk_ids,
                self.layout)


def make_moe(tokens: int, hidden: int, inter: int, experts: int, top_k: int, layout: str,
             dtype=torch.bfloat16, ids_dtype=torch.int32, crowd: bool = False) -> MoeProblem:
    """Weights scaled like a trained layer (outputs of order 1). `crowd` sends every token to the same top_k
    experts, so one expert gets many tokens (several token blocks) and all others get none."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    w13, s13 = reference.quantize_fp8(torch.randn(experts, 2 * inter, hidden, generator=g) / hidden**0.5, layout)
    w2, s2 = reference.quantize_fp8(torch.randn(experts, hidden, inter, generator=g) / inter**0.5, layout)
    if crowd:
        ids = torch.arange(top_k).repeat(tokens, 1)
    else:  # distinct experts per token, as a router picks them
        ids = torch.rand(tokens, experts, generator=g).topk(top_k, dim=-1).indices
    weights = torch.rand(tokens, top_k, generator=g) + 0.1
    return MoeProblem(x, w13, s13, w2, s2, weights, ids.to(ids_dtype), layout, seed)


def assert_close_bf16(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Agreement for results rounded to bfloat16 (8 significant bits).

    Both sides accumulate in fp32 in different orders, so the bf16-rounded SiLU-and-mul intermediate can land one
    bf16 ulp apart (2^-8 relative) on a few elements, and the final cast can differ by one ulp: rtol 1.6e-2 is
    four bf16 ulps. Outputs near zero are sums with cancellation, where the error is bounded by the magnitude of
    the terms, not of the result: hence an atol of 1% of the largest expected magnitude.
    """
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual.shape, actual.dtype)
    assert torch.isfinite(actual).all(), f"{what}: output has NaN/Inf (unwritten elements?)"
    atol = 1e-2 * float(expected.float().abs().max().clamp(min=1e-6))
    torch.testing.assert_close(actual.float(), expected.float(), rtol=1.6e-2, atol=atol, msg=lambda m: f"{what}: {m}")
