"""Write a tiny random-weight GLM-4.7-Flash (`Glm4MoeLiteForCausalLM`, MLA attention) checkpoint for tests.

GLM-4.7-Flash shares GLM-4.5's MoE and router but replaces attention with DeepSeek-style multi-head latent
attention (q/kv LoRA ranks, split rope/nope head dims). No small trained Flash model exists, so tests that need
one get this: the real architecture at toy sizes, random weights from a seed, transformers' own `save_pretrained`
layout, and the bundled tiny GLM's tokenizer (same vocabulary size). It is generated at test time (seconds), not
committed:

    python scripts/make_tiny_glm_lite.py --out /tmp/tiny-glm-lite
"""

from __future__ import annotations

import argparse
import os
import shutil

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "glm_plugin", "assets", "tiny-glm")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")

# Flash's shape (glm-model.md: 47 layers, 1 dense first, 64 experts top-4, MLA ranks 768/512, rope 64, nope 192,
# v 256), shrunk so a forward pass on CPU takes milliseconds. The latent width kv_lora_rank + qk_rope_head_dim stays
# Flash's 512 + 64 = 576: vLLM's CPU MLA decode kernel is compiled for that size only ("Head dimension 96 is not
# supported by MLA" otherwise).
TINY_LITE = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2,
    routed_scaling_factor=1.8, kv_lora_rank=512, q_lora_rank=96, qk_rope_head_dim=64, qk_nope_head_dim=64,
    v_head_dim=64, n_group=1, topk_group=1, norm_topk_prob=True, first_k_dense_replace=1,
    max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False, num_nextn_predict_layers=0,
    eos_token_id=[0, 4, 6], pad_token_id=0, bos_token_id=None,
)


def make(out: str, seed: int = 0) -> str:
    import torch
    from transformers import AutoModelForCausalLM, Glm4MoeLiteConfig

    torch.manual_seed(seed)
    layer_types = ["dense"] + ["sparse"] * (TINY_LITE["num_hidden_layers"] - 1)  # first_k_dense_replace = 1
    config = Glm4MoeLiteConfig(**TINY_LITE, mlp_layer_types=layer_types)
    config.architectures = ["Glm4MoeLiteForCausalLM"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # a non-zero router bias, as in real checkpoints, so grouped top-k selection is exercised
        for name, tensor in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                tensor.normal_(0, 0.1)
        for name, param in model.named_parameters():
            if name.endswith("e_score_correction_bias"):
                param.normal_(0, 0.1)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(ASSET, name), os.path.join(out, name))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(make(args.out, args.seed))


if __name__ == "__main__":
    main()
