"""The Triton fused FP8 MoE kernel (`glm_plugin.kernels.triton_fp8_moe`) against the PyTorch reference, run on CPU
tensors under Triton's interpreter (`TRITON_INTERPRET=1`).

Triton picks interpreter or compiler when a `@triton.jit` function is defined, so the kernel runs in a child
process whose environment has TRITON_INTERPRET=1 before triton is imported; this process draws the inputs, saves
them, and compares the child's outputs with `reference.fp8_moe_experts`.

NOT checked here: bf16 activations (the dtype engines use). The interpreter computes `tl.dot` on bf16 operands
wrongly, so the cases use fp16 and fp32 activations; the kernel's code is the same for bf16 (the FP8 weights are
widened to the activation dtype, exactly in both), but bf16 results are only checkable on a GPU. Also unchecked:
GPU-only behaviour (TF32 rounding of fp32 `tl.dot`, compiled-code races, performance).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from glm_plugin.kernels import reference

from moe_inputs import make_moe

pytest.importorskip("triton", reason="triton is not installed: the Triton MoE kernel cannot be tested")

H, I, E, K = 256, 128, 8, 2

# name -> (tokens, intermediate, layout, dtype, kind). I=160 is not a multiple of 128: partial K block in the down
# GEMM, up rows (160..319) whose 64-row tiles straddle a scale-block boundary, and two K steps of block scales.
CASES = {
    "block-t1-fp16": (1, I, "block", torch.float16, "plain"),
    "block-t7-fp32": (7, I, "block", torch.float32, "no-expert-7"),
    "channel-t1-fp32": (1, I, "channel", torch.float32, "plain"),
    "channel-t7-fp16": (7, I, "channel", torch.float16, "no-expert-7"),
    "block-t20-crowd-fp16": (20, I, "block", torch.float16, "crowd"),
    "block-t7-i160-fp16": (7, 160, "block", torch.float16, "plain"),
}

CHILD = r"""
import os, sys
assert os.environ.get("TRITON_INTERPRET") == "1"
import torch
from glm_plugin.kernels import triton_fp8_moe as tm
assert tm.available()
_empty, _empty_like = torch.empty, torch.empty_like
def poisoned(*a, **kw):  # every buffer the kernel leaves to be written starts as NaN
    t = _empty(*a, **kw)
    return t.fill_(float("nan")) if t.is_floating_point() else t
def poisoned_like(*a, **kw):
    t = _empty_like(*a, **kw)
    return t.fill_(float("nan")) if t.is_floating_point() else t
torch.empty, torch.empty_like = poisoned, poisoned_like
cases = torch.load(sys.argv[1])
torch.save({name: tm.fp8_moe_experts(*args) for name, args in cases.items()}, sys.argv[2])
"""


def _problem(tokens: int, inter: int, layout: str, dtype, kind: str):
    p = make_moe(tokens, H, inter, E, K, layout, dtype=dtype, crowd=(kind == "crowd"))
    if kind == "no-expert-7":
        # routes over experts 0..6 only (expert 7 gets no token), and one pair is another EP rank's (-1)
        ids = torch.rand(tokens, E - 1).topk(K, dim=-1).indices.to(torch.int32)
        ids[tokens // 2, 1] = -1
        p.topk_ids = ids
    return p


def _tolerance(dtype, expected: torch.Tensor) -> tuple[float, float]:
    """fp16: the SiLU-and-mul intermediate is rounded to fp16 (11 significant bits) on both sides from fp32 sums
    taken in different orders, so elements can land one fp16 ulp (2^-11) apart before the down projection, plus
    one ulp in the final cast: rtol 4 ulps = 2e-3. fp32: only summation order differs (K <= 256 terms, ~2^-24
    each): rtol 1e-5. atol for outputs that are sums with cancellation: a fraction of the largest magnitude.
    Observed max errors: <= 1.5e-4 (fp16) and <= 1e-6 (fp32) of the largest magnitude."""
    scale = float(expected.float().abs().max().clamp(min=1e-6))
    if dtype == torch.float16:
        return 2e-3, 1e-3 * scale
    return 1e-5, 1e-5 * scale


@pytest.fixture(scope="module")
def triton_results(tmp_path_factory):
    """Runs every case in one interpreter child (one torch/triton import, which dominates the time)."""
    tmp = tmp_path_factory.mktemp("triton_moe")
    problems = {name: _problem(*spec) for name, spec in CASES.items()}
    torch.save({name: p.args() for name, p in problems.items()}, tmp / "in.pt")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "in.pt"), str(tmp / "out.pt")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"Triton interpreter run failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return problems, torch.load(tmp / "out.pt")


@pytest.mark.parametrize("name", list(CASES))
def test_triton_moe_matches_reference(triton_results, name):
    problems, outputs = triton_results
    p = problems[name]
    actual = outputs[name]
    expected = reference.fp8_moe_experts(*p.args())
    what = f"{name} (seed {p.seed})"
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (what, actual.shape, actual.dtype)
    assert torch.isfinite(actual).all(), f"{what}: NaN in the output (a poisoned buffer was read unwritten)"
    assert expected.abs().max() > 0, what
    rtol, atol = _tolerance(actual.dtype, expected)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def test_align_groups_pairs_by_expert():
    """The sort/align step: each block holds one expert's pairs, padding and ids outside [0, E) go nowhere."""
    from glm_plugin.kernels import triton_fp8_moe as tm

    ids = torch.tensor([[3, 0], [3, -1], [0, 8], [5, 3]], dtype=torch.int32)
    sorted_pairs, block_expert = tm._align(ids, 8, 4)
    num_pairs = ids.numel()
    assert sorted_pairs.numel() == block_expert.numel() * 4
    flat = ids.reshape(-1)
    seen = []
    for b, e in enumerate(block_expert.tolist()):
        block = sorted_pairs[4 * b: 4 * b + 4].tolist()
        if e < 0:
            assert all(p == num_pairs for p in block), (b, block)
            continue
        real = [p for p in block if p < num_pairs]
        assert real and all(int(flat[p]) == e for p in real), (b, e, block)
        seen += real
    assert sorted(seen) == [0, 1, 2, 4, 6, 7]  # every valid pair exactly once; pairs 3 (-1) and 5 (8) dropped
    assert block_expert.tolist()[:3] == [0, 3, 5]


def test_dispatch_never_picks_triton_on_cpu(monkeypatch):
    """Even with TRITON_INTERPRET=1 (which makes `available()` True), CPU tensors never go to Triton."""
    from glm_plugin import kernels

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = kernels.why_unavailable("triton", "fp8_moe_experts", "cpu")
    assert reason is not None and "CUDA tensors only" in reason
    assert type(reason).__name__ == "_NotApplicable"
