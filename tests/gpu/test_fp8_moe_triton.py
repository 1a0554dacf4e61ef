"""The Triton FP8 MoE kernel (glm_plugin.kernels.triton_fp8_moe) compiled for a CUDA GPU, against the PyTorch
reference: what tests/kernels cannot check under Triton's CPU interpreter, namely bf16 activations (the dtype the
engines use), compiled code at GLM sizes, 1 to 4,096 tokens, and CUDA-graph capture.

Shapes are drawn from fixed seeds (the test id names them), so a failure replays exactly. Skipped without a CUDA
device or without triton.

Tolerances: the kernel computes the reference's maths (FP8 weights widened exactly, fp32 accumulation, the
SiLU-and-mul intermediate rounded to the activation dtype), so only the order of fp32 sums differs, which can move
a rounded intermediate or output element by one unit in the last place: rtol is four such units (bf16 2^-8 x 4;
fp16 2^-11 x 4), atol a fraction of the largest output for sums with cancellation. fp32 activations go through
the tensor cores as TF32 (Triton's default on a GPU; 10-bit mantissa, an fp16-class rounding of both operands),
so they get fp16's tolerance.
"""

from __future__ import annotations

import random

import pytest
import torch

from glm_plugin.kernels import reference

pytestmark = pytest.mark.gpu
pytest.importorskip("triton", reason="triton is not installed: the Triton MoE kernel cannot be tested")

# dtype -> (rtol, atol as a fraction of the largest expected magnitude)
TOLERANCE = {torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 1e-3), torch.float32: (2e-3, 1e-3)}
DTYPES = (torch.bfloat16, torch.bfloat16, torch.float16, torch.float32)  # bf16 twice as often: the engines' dtype
TOKENS = (1, 2, 7, 33, 256, 1000, 4096)


@pytest.fixture(scope="module")
def triton_moe():
    if not torch.cuda.is_available():
        why = "is a CPU-only build" if torch.version.cuda is None else "sees no CUDA device"
        pytest.skip(f"needs a CUDA GPU; torch {torch.__version__} {why}")
    from glm_plugin.kernels import triton_fp8_moe

    assert triton_fp8_moe.available()
    return triton_fp8_moe


def _case(seed: int) -> dict:
    """A random problem: hidden and intermediate sizes that 128 need not divide (partial K and scale blocks),
    1-64 experts of which some get no token, top-k 1-8, one pair routed to another expert-parallel rank (-1)."""
    rng = random.Random(seed)
    experts = rng.choice((1, 3, 8, 16, 64))
    return dict(seed=seed, tokens=TOKENS[seed % len(TOKENS)], hidden=rng.choice((256, 384, 1024, 2048, 4096)),
                inter=rng.choice((128, 160, 704, 1408, 1536)), experts=experts,
                top_k=min(experts, rng.choice((1, 2, 4, 8))), layout=("block", "channel")[seed % 2],
                dtype=DTYPES[seed % len(DTYPES)], empty=rng.sample(range(experts), experts // 4))


def _weights(case: dict):
    g = torch.Generator(device="cuda").manual_seed(case["seed"])
    E, H, I, layout = case["experts"], case["hidden"], case["inter"], case["layout"]
    w13, s13 = reference.quantize_fp8(torch.randn(E, 2 * I, H, generator=g, device="cuda") / H**0.5, layout)
    w2, s2 = reference.quantize_fp8(torch.randn(E, H, I, generator=g, device="cuda") / I**0.5, layout)
    return w13, s13, w2, s2


def _routing(case: dict, seed: int):
    """(hidden, topk_weights, topk_ids): distinct experts per token, never an empty one unless top-k needs it."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    T, E, k = case["tokens"], case["experts"], case["top_k"]
    hidden = torch.randn(T, case["hidden"], generator=g, device="cuda").to(case["dtype"])
    scores = torch.rand(T, E, generator=g, device="cuda")
    scores[:, case["empty"]] = -1.0
    ids = scores.topk(k, dim=-1).indices.to(torch.int32)
    if T > 1:
        ids[T // 2, k - 1] = -1
    return hidden, torch.rand(T, k, generator=g, device="cuda") + 0.1, ids


def _run(moe, case: dict, weights, routing):
    hidden, topk_weights, ids = routing
    args = (hidden, *weights, topk_weights, ids, case["layout"])
    return moe.fp8_moe_experts(*args), reference.fp8_moe_experts(*args)


def _assert_close(actual, expected, what: str) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (what, actual.shape, actual.dtype)
    assert torch.isfinite(actual).all(), f"{what}: NaN/Inf in the output"
    rtol, atol = TOLERANCE[expected.dtype]
    atol *= float(expected.float().abs().max().clamp(min=1e-6))
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


CASES = [_case(seed) for seed in range(12)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: (f"T{c['tokens']}-H{c['hidden']}-I{c['inter']}-E{c['experts']}"
                                                       f"-k{c['top_k']}-{c['layout']}-{str(c['dtype'])[6:]}"))
def test_triton_matches_reference(triton_moe, case):
    actual, expected = _run(triton_moe, case, _weights(case), _routing(case, case["seed"]))
    _assert_close(actual, expected, f"seed {case['seed']}")


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_glm_shapes_bf16(triton_moe, layout):
    """GLM-4.5-Air's expert shape (H 4096, I 1408, 128 experts, top-8) at decode and prefill sizes."""
    case = dict(seed=0, hidden=4096, inter=1408, experts=128, top_k=8, layout=layout, dtype=torch.bfloat16,
                empty=[5, 77])
    weights = _weights(case)
    for tokens in (1, 64, 4096):
        actual, expected = _run(triton_moe, dict(case, tokens=tokens), weights, _routing(dict(case, tokens=tokens),
                                                                                          tokens))
        _assert_close(actual, expected, f"GLM-4.5-Air {layout} T={tokens}")


def test_cuda_graph_capture_replays(triton_moe):
    """Engines capture decode steps in CUDA graphs: the op (its sort-and-align step too) must capture without a
    host synchronisation and replay on new inputs written into the captured buffers."""
    case = dict(seed=99, tokens=4, hidden=1024, inter=704, experts=16, top_k=4, layout="block",
                dtype=torch.bfloat16, empty=[])
    w13, s13, w2, s2 = _weights(case)
    hidden, topk_weights, ids = _routing(case, 1)
    triton_moe.fp8_moe_experts(hidden, w13, s13, w2, s2, topk_weights, ids, "block")  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = triton_moe.fp8_moe_experts(hidden, w13, s13, w2, s2, topk_weights, ids, "block")
    for buffer, value in zip((hidden, topk_weights, ids), _routing(case, 2)):
        buffer.copy_(value)
    graph.replay()
    torch.cuda.synchronize()
    _assert_close(out, reference.fp8_moe_experts(hidden, w13, s13, w2, s2, topk_weights, ids, "block"),
                  "graph replay")
