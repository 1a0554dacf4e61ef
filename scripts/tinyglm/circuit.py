"""The hand-built copy circuit the model starts from (positional, induction, bigram and retrieval heads).

Why: from random weights the model never learned to copy unseen entities within the CPU budget."""

from __future__ import annotations

import json
import math
import pathlib

import torch

from .model import apply_rope, rope_cos_sin


def positional_query_keys(theta, head_dim, rot_dim, offsets=(1, 2), gain_max=2.5, length=512, steps=400):
    """Bias-only query vectors (one per offset), one shared key vector and the q/k-norm gains that make a
    head attend to the token `offset` positions back, found by gradient descent on the attention pattern
    itself (partial NeoX RoPE + qk-norm, exactly as the model computes it). Deterministic."""
    gen = torch.Generator().manual_seed(0)
    n, d = len(offsets), head_dim
    qb = torch.randn(n, d, generator=gen).requires_grad_()
    kb = torch.randn(d, generator=gen).requires_grad_()
    wq, wk = torch.zeros(d, requires_grad=True), torch.zeros(d, requires_grad=True)
    cos, sin = rope_cos_sin(torch.arange(length), rot_dim, theta)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    opt = torch.optim.Adam([qb, kb, wq, wk], lr=0.05)

    def pattern():
        gq, gk = 1 + (gain_max - 1) * torch.sigmoid(wq), 1 + (gain_max - 1) * torch.sigmoid(wk)
        q = qb / qb.pow(2).mean(-1, keepdim=True).sqrt() * gq
        k = kb / kb.pow(2).mean().sqrt() * gk
        s = apply_rope(q[:, None].expand(n, length, d), cos, sin) @ apply_rope(k[None].expand(length, d), cos, sin).t()
        return (s / math.sqrt(d)).masked_fill(~causal, -1e9).softmax(-1), gq, gk

    def hit_prob(p):
        return [p[i, torch.arange(o, length), torch.arange(o, length) - o] for i, o in enumerate(offsets)]

    for _ in range(steps):
        p, _, _ = pattern()
        loss = -sum(h.clamp_min(1e-9).log().mean() for h in hit_prob(p))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p, gq, gk = pattern()
        worst = min(h.min().item() for h in hit_prob(p))
    unit = lambda v: v.detach() / v.detach().pow(2).mean(-1, keepdim=True).sqrt()  # noqa: E731
    return unit(qb), unit(kb), gq.detach(), gk.detach(), worst


POSITIONAL_HEADS = pathlib.Path(__file__).with_name("positional_heads.json")


def stored_positional_heads(theta, head_dim, rot_dim):
    """`positional_query_keys`' solution as the bundled checkpoint was trained with it (fp32, stored exactly).

    Why stored: the 400 Adam steps amplify last-bit float differences between CPUs (ISA paths of the matmuls and
    exp) to several percent of the gains, so solving again on another machine gives other weights; with the stored
    solution every machine starts training from the same circuit and the asset test can compare exactly."""
    stored = json.loads(POSITIONAL_HEADS.read_text())
    if (stored["rope_theta"], stored["head_dim"], stored["rot_dim"]) != (theta, head_dim, rot_dim):
        raise ValueError(f"{POSITIONAL_HEADS.name} was solved for rope_theta {stored['rope_theta']}, head_dim "
                         f"{stored['head_dim']}, rot_dim {stored['rot_dim']}; solve again with positional_query_keys")

    def tensor(key, *shape):
        return torch.tensor([float.fromhex(x) for x in stored[key]], dtype=torch.float32).reshape(*shape)

    n = len(stored["offsets"])
    return (tensor("query_bias", n, head_dim), tensor("key_bias", head_dim), tensor("query_gain", head_dim),
            tensor("key_gain", head_dim), stored["worst"])


def install_copy_circuit(model, alpha=0.015, beta=0.1, match_gain=2.5, head_scale=5.0, bigram=True, retrieval=True,
                         retrieval_gain=8.0):
    """Initialise layers 0 and 1 as an induction (copy) circuit, the mechanism a model needs to copy an
    entity it has not seen in training from the prompt into a tool argument or an answer.

    Why by hand: on two CPU cores, trained from random weights, the model learned GLM's format within a
    few hundred steps but never formed induction heads (not after 2100 steps of chat data nor after 300
    steps of pure repeated-sequence data); with this initialisation it copies before any training.
    Residual layout: token embeddings live in the first half of the hidden dims; layer 0 heads 0 and 1
    attend 1 and 2 tokens back and write those tokens' codes into the second half; layer 1 head 0 matches
    the current token against the 'previous token' codes and writes the token found after the match
    (read by the lm_head, initialised as a scaled copy of the embedding). With ``bigram``, layer 1 head 2
    (on the second KV head) matches the previous token against the 'two back' codes and writes the same
    continuation, so a candidate whose two preceding tokens both match gets twice the vote: this
    disambiguates digits and word pieces that occur more than once in the prompt. With ``retrieval``,
    head 0 of layers 2 and 3 gets a fixed 'copy the attended token' value/output path (reading and writing
    the embedding dims 64-127, which layer 1 leaves alone) while its query and key stay free: the first
    token of an argument or of a result value has no preceding match for induction, so a head must learn
    *where* to look; it no longer has to learn to copy as well. Its output is scaled by
    ``retrieval_gain``: at 0.1 (the induction heads' scale) the vote was ~0.2 % of the residual stream
    by layer 2, too small to be used, and the model chose first values through layer 1's MoE instead.
    Other heads and the MLPs of layers 0-1 start with zero output, so the circuit starts clean; training
    adapts everything else.

    Returns the slices the circuit owns, with their values: training restores them after every step
    (with them free, the circuit was unlearned within ~100 steps while the model learned the chat
    format, before anything downstream had learned to use it)."""
    c = model.c
    H, d = c["hidden_size"], c["head_dim"]
    rot, half = int(d * c["partial_rotary_factor"]), c["hidden_size"] // 2
    qb, kb, gq, gk, worst = stored_positional_heads(c["rope_theta"], d, rot)
    assert worst > 0.9, f"positional heads too blurred ({worst:.3f})"
    owned = []

    def own(param, *idx):
        """Zero a slice the circuit owns and remember it."""
        param[idx] = 0
        owned.append((param, idx))

    def own_head(a, q_rows, kv_rows, o_cols):
        owned.extend([(a.q_norm.weight, (slice(None),)), (a.k_norm.weight, (slice(None),))])
        for proj, rows in ((a.q_proj, q_rows), (a.k_proj, kv_rows), (a.v_proj, kv_rows)):
            own(proj.weight, rows)
            own(proj.bias, rows)
        own(a.o_proj.weight, slice(None), o_cols)

    with torch.no_grad():
        own(model.embed_tokens.weight, slice(None), slice(half, None))
        model.lm_head.weight.copy_(model.embed_tokens.weight * head_scale)
        a0 = model.layers[0].self_attn
        own_head(a0, slice(0, 2 * d), slice(0, d), slice(0, 2 * d))
        a0.q_norm.weight.copy_(gq)
        a0.k_norm.weight.copy_(gk)
        a0.q_proj.bias[:d], a0.q_proj.bias[d: 2 * d] = qb[0], qb[1]
        a0.k_proj.bias[:d] = kb
        a0.v_proj.weight[:d] = torch.eye(d, H)  # value: the attended token's code
        a0.o_proj.weight.zero_()
        a0.o_proj.weight[half: half + 2 * d, : 2 * d] = alpha * torch.eye(2 * d)
        model.layers[0].mlp.down_proj.weight.zero_()
        layer1 = model.layers[1]
        a1 = layer1.self_attn
        own_head(a1, slice(0, d), slice(0, d), slice(0, d))
        n_match = d - rot  # match in the dims RoPE leaves alone, so the match ignores distance
        a1.q_proj.weight[rot:d, :n_match] = torch.eye(n_match)
        a1.k_proj.weight[rot:d, half: half + n_match] = torch.eye(n_match)
        a1.q_norm.weight[rot:] = match_gain
        a1.k_norm.weight[rot:] = match_gain
        a1.v_proj.weight[:d] = torch.eye(d, H)
        a1.o_proj.weight[:, d: 2 * d] = 0
        a1.o_proj.weight[:d, :d] = beta * torch.eye(d)
        if bigram:  # query head 2 reads KV head 1
            own_head(a1, slice(2 * d, 3 * d), slice(d, 2 * d), slice(2 * d, 3 * d))
            a1.q_proj.weight[2 * d + rot: 3 * d, half: half + n_match] = torch.eye(n_match)
            a1.k_proj.weight[d + rot: 2 * d, half + d: half + d + n_match] = torch.eye(n_match)
            a1.v_proj.weight[d: 2 * d] = torch.eye(d, H)
            a1.o_proj.weight[:d, 2 * d: 3 * d] = beta * torch.eye(d)
        if retrieval:
            for i in (2, 3):
                a = model.layers[i].self_attn
                own(a.v_proj.weight, slice(0, d))
                own(a.v_proj.bias, slice(0, d))
                own(a.o_proj.weight, slice(None), slice(0, d))
                a.v_proj.weight[:d, d: 2 * d] = torch.eye(d)
            set_retrieval_gain(model, retrieval_gain)
        layer1.mlp.w_down.zero_()
        layer1.mlp.shared_experts.down_proj.weight.zero_()
    return [(p, idx, p.detach()[idx].clone()) for p, idx in owned]


RETRIEVAL_START_GAIN = 0.1  # the induction heads' scale (install_copy_circuit's beta)


def set_retrieval_gain(model, gain):
    """Scale of the retrieval paths' vote (layers 2-3, head 0). Training ramps it up from the induction
    heads' scale: at full gain from step 0, the untrained heads' blurred votes drown the induction circuit
    (a fresh model's copy accuracy drops from 0.97 to 0.01 at gain 1)."""
    d = model.c["head_dim"]
    with torch.no_grad():
        for i in (2, 3):
            model.layers[i].self_attn.o_proj.weight[d: 2 * d, :d] = gain * torch.eye(d)


def restore_slices(slices):
    with torch.no_grad():
        for p, idx, value in slices:
            p[idx] = value
