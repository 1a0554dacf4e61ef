"""Write a tiny random-weight GLM-4.7-Flash (`Glm4MoeLiteForCausalLM`, MLA attention) checkpoint for tests.

GLM-4.7-Flash shares GLM-4.5's MoE and router but replaces attention with DeepSeek-style multi-head latent
attention (q/kv LoRA ranks, split rope/nope head dims). No small trained Flash model exists, so tests that need
one get this: the real architecture at toy sizes, random weights from a seed, transformers' own `save_pretrained`
layout, and the bundled tiny GLM's tokenizer (same vocabulary size). It is generated at test time (seconds), not
committed:

    python scripts/make_tiny_glm_lite.py --out /tmp/tiny-glm-lite [--mtp]

With `--mtp` the checkpoint also carries one MTP (NextN) layer, `model.layers.{num_hidden_layers}.*`, as Flash
ships it. Transformers does not build that layer, so its tensors are added to the saved file: a copy of the last
decoder layer (MLA attention + MoE), the NextN projections (random `eh_proj`, unit norms) and the layer's own
`embed_tokens` / `shared_head.head` (copies of the target's). Random weights: the draft is wrong most of the time,
which is what a test of "speculation never changes the output" wants exercised.
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


def make(out: str, seed: int = 0, mtp: bool = False) -> str:
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
    if mtp:
        add_mtp_layer(out, seed)
    return out


def add_mtp_layer(out: str, seed: int) -> None:
    """Append a random MTP layer to the saved checkpoint and declare it in config.json."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    path = os.path.join(out, "model.safetensors")
    weights = load_file(path)
    last, mtp = TINY_LITE["num_hidden_layers"] - 1, TINY_LITE["num_hidden_layers"]
    hidden = TINY_LITE["hidden_size"]
    generator = torch.Generator().manual_seed(seed + 1)
    prefix = f"model.layers.{last}."
    for name in [n for n in weights if n.startswith(prefix)]:
        weights[f"model.layers.{mtp}." + name[len(prefix):]] = weights[name].clone()
    ones = torch.ones(hidden)
    weights.update({
        f"model.layers.{mtp}.enorm.weight": ones.clone(),
        f"model.layers.{mtp}.hnorm.weight": ones.clone(),
        f"model.layers.{mtp}.shared_head.norm.weight": ones.clone(),
        f"model.layers.{mtp}.eh_proj.weight": torch.randn(hidden, 2 * hidden, generator=generator) * 0.02,
        f"model.layers.{mtp}.embed_tokens.weight": weights["model.embed_tokens.weight"].clone(),
        f"model.layers.{mtp}.shared_head.head.weight": weights["lm_head.weight"].clone(),
    })
    save_file(weights, path, metadata={"format": "pt"})
    config_path = os.path.join(out, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["num_nextn_predict_layers"] = 1
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mtp", action="store_true", help="add one MTP (NextN) layer, as GLM-4.7-Flash ships")
    args = ap.parse_args(argv)
    print(make(args.out, args.seed, args.mtp))


if __name__ == "__main__":
    main()
