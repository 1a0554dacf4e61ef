"""The tiny model in our own compact module: the same parameters and arithmetic as transformers'
``Glm4MoeForCausalLM`` plus the MTP layer, written for speed on a 2-core CPU (a sorted-token expert loop)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


MODEL_CONFIG = dict(
    hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=64, partial_rotary_factor=0.5,
    rope_theta=1000000.0, use_qk_norm=True, attention_bias=True, first_k_dense_replace=1,
    n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
    norm_topk_prob=True, routed_scaling_factor=2.5, rms_norm_eps=1e-5, num_nextn_predict_layers=1,
    max_position_embeddings=4096, tie_word_embeddings=False, vocab_size=4096,
)


# --------------------------------------------------------------------------------------------------
# Model: same parameters and arithmetic as transformers' Glm4MoeForCausalLM, plus the MTP layer.
# --------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rope_cos_sin(positions, rot_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float) / rot_dim))
    f = positions[..., None].float() * inv
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):  # x [B, h, L, d]; rotate the first rot dims, NeoX style
    r = cos.shape[-1]
    xr, xp = x[..., :r], x[..., r:]
    x1, x2 = xr[..., : r // 2], xr[..., r // 2:]
    rot = torch.cat([-x2, x1], -1)
    return torch.cat([xr * cos + rot * sin, xp], -1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, nh, nkv, d = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.nh, self.nkv, self.d = nh, nkv, d
        self.q_proj = nn.Linear(H, nh * d, bias=True)
        self.k_proj = nn.Linear(H, nkv * d, bias=True)
        self.v_proj = nn.Linear(H, nkv * d, bias=True)
        self.o_proj = nn.Linear(nh * d, H, bias=False)
        self.q_norm = RMSNorm(d, c["rms_norm_eps"])
        self.k_norm = RMSNorm(d, c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        B, L, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, L, self.nh, self.d)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, L, self.nkv, self.d)).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.nkv, self.d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(o.transpose(1, 2).reshape(B, L, self.nh * self.d))


class MLP(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Sigmoid router with e_score_correction_bias (choice only), renormalised top-k, scaled; plus a
    shared expert. Experts run over tokens sorted by expert (one GEMM pair per expert)."""

    def __init__(self, c):
        super().__init__()
        H, I, E = c["hidden_size"], c["moe_intermediate_size"], c["n_routed_experts"]
        self.E, self.K, self.scale = E, c["num_experts_per_tok"], c["routed_scaling_factor"]
        self.gate = nn.Linear(H, E, bias=False)
        self.register_buffer("e_score_correction_bias", torch.zeros(E))
        self.w_gate = nn.Parameter(torch.empty(E, I, H))
        self.w_up = nn.Parameter(torch.empty(E, I, H))
        self.w_down = nn.Parameter(torch.empty(E, H, I))
        self.shared_experts = MLP(H, I * c["n_shared_experts"])
        self.last_load = None

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        probs = F.linear(x2.float(), self.gate.weight.float()).sigmoid()
        idx = torch.topk(probs.detach() + self.e_score_correction_bias, self.K, dim=-1).indices
        w = probs.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.scale
        flat = idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        tok = order // self.K
        counts = torch.bincount(flat, minlength=self.E)
        self.last_load = counts.detach()
        xs = x2[tok]
        outs = []
        for e, xe in enumerate(torch.split(xs, counts.tolist())):
            if xe.shape[0] == 0:
                continue
            h = F.silu(xe @ self.w_gate[e].t()) * (xe @ self.w_up[e].t())
            outs.append(h @ self.w_down[e].t())
        ys = torch.cat(outs) * w.reshape(-1)[order, None].to(x.dtype)
        routed = torch.zeros_like(x2).index_add_(0, tok, ys)
        return routed.view(shape) + self.shared_experts(x)


class DecoderLayer(nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.mlp = MoE(c) if moe else MLP(c["hidden_size"], c["intermediate_size"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyGlm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, V = c["hidden_size"], c["vocab_size"]
        self.embed_tokens = nn.Embedding(V, H)
        self.layers = nn.ModuleList(DecoderLayer(c, i >= c["first_k_dense_replace"]) for i in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(H, c["rms_norm_eps"])
        self.lm_head = nn.Linear(H, V, bias=False)
        # MTP (NextN) layer; its embedding and head are the main model's (saved as copies).
        self.enorm = RMSNorm(H, c["rms_norm_eps"])
        self.hnorm = RMSNorm(H, c["rms_norm_eps"])
        self.eh_proj = nn.Linear(2 * H, H, bias=False)
        self.mtp_block = DecoderLayer(c, True)
        self.mtp_norm = RMSNorm(H, c["rms_norm_eps"])
        self.rot = int(c["head_dim"] * c["partial_rotary_factor"])

    def init_weights(self, gen):
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or name in ("enorm.weight", "hnorm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        n_layers = self.c["num_hidden_layers"] + 1
        with torch.no_grad():  # scale residual-branch outputs down (GPT-2 style)
            for layer in list(self.layers) + [self.mtp_block]:
                layer.self_attn.o_proj.weight.mul_(1 / math.sqrt(2 * n_layers))
                m = layer.mlp
                if isinstance(m, MoE):
                    m.w_down.mul_(1 / math.sqrt(2 * n_layers))
                    m.shared_experts.down_proj.weight.mul_(1 / math.sqrt(2 * n_layers))
                else:
                    m.down_proj.weight.mul_(1 / math.sqrt(2 * n_layers))

    def trunk(self, ids, pos, mask):
        cos, sin = rope_cos_sin(pos, self.rot, self.c["rope_theta"])
        cos, sin = cos[:, None], sin[:, None]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x), (cos, sin)

    def mtp(self, h, next_ids, pos, cs, mask):
        """MTP at position t: hidden h[t] and the embedding of token t+1 -> logits for token t+2."""
        e = self.embed_tokens(next_ids)
        e = torch.where((pos == 0)[..., None], torch.zeros_like(e), e)
        x = self.eh_proj(torch.cat([self.enorm(e), self.hnorm(h)], -1))
        return self.mtp_block(x, cs[0], cs[1], mask)

    def mtp_logits(self, x):
        return self.lm_head(self.mtp_norm(x))

    def moe_layers(self):
        return [l.mlp for l in list(self.layers) + [self.mtp_block] if isinstance(l.mlp, MoE)]

    # ---- conversion to the Hugging Face / GLM checkpoint layout ----
    def hf_state_dict(self, dtype=torch.bfloat16):
        out = {}
        N = self.c["num_hidden_layers"]

        def put(k, t, keep_fp32=False):
            out[k] = t.detach().to(torch.float32 if keep_fp32 else dtype).contiguous().clone()

        def layer(prefix, l):
            put(prefix + "input_layernorm.weight", l.input_layernorm.weight)
            put(prefix + "post_attention_layernorm.weight", l.post_attention_layernorm.weight)
            a = l.self_attn
            for n in ("q_proj", "k_proj", "v_proj"):
                put(f"{prefix}self_attn.{n}.weight", getattr(a, n).weight)
                put(f"{prefix}self_attn.{n}.bias", getattr(a, n).bias)
            put(prefix + "self_attn.o_proj.weight", a.o_proj.weight)
            put(prefix + "self_attn.q_norm.weight", a.q_norm.weight)
            put(prefix + "self_attn.k_norm.weight", a.k_norm.weight)
            m = l.mlp
            if isinstance(m, MoE):
                put(prefix + "mlp.gate.weight", m.gate.weight)
                put(prefix + "mlp.gate.e_score_correction_bias", m.e_score_correction_bias, keep_fp32=True)
                for e in range(m.E):
                    put(f"{prefix}mlp.experts.{e}.gate_proj.weight", m.w_gate[e])
                    put(f"{prefix}mlp.experts.{e}.up_proj.weight", m.w_up[e])
                    put(f"{prefix}mlp.experts.{e}.down_proj.weight", m.w_down[e])
                for n in ("gate_proj", "up_proj", "down_proj"):
                    put(f"{prefix}mlp.shared_experts.{n}.weight", getattr(m.shared_experts, n).weight)
            else:
                for n in ("gate_proj", "up_proj", "down_proj"):
                    put(f"{prefix}mlp.{n}.weight", getattr(m, n).weight)

        put("model.embed_tokens.weight", self.embed_tokens.weight)
        for i, l in enumerate(self.layers):
            layer(f"model.layers.{i}.", l)
        put("model.norm.weight", self.norm.weight)
        put("lm_head.weight", self.lm_head.weight)
        p = f"model.layers.{N}."
        layer(p, self.mtp_block)
        put(p + "embed_tokens.weight", self.embed_tokens.weight)
        put(p + "enorm.weight", self.enorm.weight)
        put(p + "hnorm.weight", self.hnorm.weight)
        put(p + "eh_proj.weight", self.eh_proj.weight)
        put(p + "shared_head.norm.weight", self.mtp_norm.weight)
        put(p + "shared_head.head.weight", self.lm_head.weight)
        return out

    def load_hf_state_dict(self, sd):
        """Inverse of hf_state_dict (used by eval to run the MTP layer)."""
        N = self.c["num_hidden_layers"]
        g = lambda k: sd[k].float()  # noqa: E731

        def layer(prefix, l):
            with torch.no_grad():
                l.input_layernorm.weight.copy_(g(prefix + "input_layernorm.weight"))
                l.post_attention_layernorm.weight.copy_(g(prefix + "post_attention_layernorm.weight"))
                a = l.self_attn
                for n in ("q_proj", "k_proj", "v_proj"):
                    getattr(a, n).weight.copy_(g(f"{prefix}self_attn.{n}.weight"))
                    getattr(a, n).bias.copy_(g(f"{prefix}self_attn.{n}.bias"))
                a.o_proj.weight.copy_(g(prefix + "self_attn.o_proj.weight"))
                a.q_norm.weight.copy_(g(prefix + "self_attn.q_norm.weight"))
                a.k_norm.weight.copy_(g(prefix + "self_attn.k_norm.weight"))
                m = l.mlp
                if isinstance(m, MoE):
                    m.gate.weight.copy_(g(prefix + "mlp.gate.weight"))
                    m.e_score_correction_bias.copy_(g(prefix + "mlp.gate.e_score_correction_bias"))
                    for e in range(m.E):
                        m.w_gate[e].copy_(g(f"{prefix}mlp.experts.{e}.gate_proj.weight"))
                        m.w_up[e].copy_(g(f"{prefix}mlp.experts.{e}.up_proj.weight"))
                        m.w_down[e].copy_(g(f"{prefix}mlp.experts.{e}.down_proj.weight"))
                    for n in ("gate_proj", "up_proj", "down_proj"):
                        getattr(m.shared_experts, n).weight.copy_(g(f"{prefix}mlp.shared_experts.{n}.weight"))
                else:
                    for n in ("gate_proj", "up_proj", "down_proj"):
                        getattr(m, n).weight.copy_(g(f"{prefix}mlp.{n}.weight"))

        with torch.no_grad():
            self.embed_tokens.weight.copy_(g("model.embed_tokens.weight"))
            for i, l in enumerate(self.layers):
                layer(f"model.layers.{i}.", l)
            self.norm.weight.copy_(g("model.norm.weight"))
            self.lm_head.weight.copy_(g("lm_head.weight"))
            p = f"model.layers.{N}."
            layer(p, self.mtp_block)
            self.enorm.weight.copy_(g(p + "enorm.weight"))
            self.hnorm.weight.copy_(g(p + "hnorm.weight"))
            self.eh_proj.weight.copy_(g(p + "eh_proj.weight"))
            self.mtp_norm.weight.copy_(g(p + "shared_head.norm.weight"))


def causal_doc_mask(doc):
    """doc [B, L] document ids (-1 = padding) -> boolean mask [B, 1, L, L], causal within a document."""
    L = doc.shape[1]
    same = doc[:, :, None] == doc[:, None, :]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    m = same & causal
    m |= torch.eye(L, dtype=torch.bool)  # padding rows attend to themselves (no NaNs)
    return m[:, None]
