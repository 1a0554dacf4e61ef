"""Write an EAGLE-3 head in SpecForge's layout, the layout the published GLM heads come in, from one of ours.

The published GLM heads (thoughtworks/GLM-4.7-FP8-Eagle3, thoughtworks/GLM-4.7-Flash-Eagle3, AQ-MedAI's GLM-5.1
head) are trained with SpecForge and saved by its `LlamaForCausalLMEagle3.save_pretrained`. What that differs in
from what scripts/train_eagle3.py writes, and what this script reproduces so both engines can be tested on it:
- `config.json` is a transformers `LlamaConfig` dump: `architectures: ["LlamaForCausalLMEagle3"]`, `model_type:
  llama`, `num_hidden_layers: 1`, `draft_vocab_size` (smaller than `vocab_size`), no `target_hidden_size` when the
  widths agree; `eagle_config.eagle_aux_hidden_state_layer_ids` only when the layers were named, and then in
  SpecForge's and SGLang's convention (id i = the output of decoder layer i);
- `model.safetensors` also holds `embed_tokens.weight` (the target's, frozen during training), `d2t` (int64,
  one per draft token: target id = draft id + d2t[draft id]) and `t2d` (bool, one per target token: in the draft
  vocabulary); `lm_head.weight` has `draft_vocab_size` rows;
- the draft vocabulary is the `draft_vocab_size` most frequent tokens of what the model says in the training
  data, sorted by target id (SpecForge's `generate_vocab_mapping_file`).

    python scripts/eagle3_specforge.py --head glm_plugin/assets/tiny-glm-eagle3 \\
        --target glm_plugin/assets/tiny-glm --out /tmp/tiny-glm-eagle3-specforge [--draft-vocab 1024]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DRAFT_VOCAB = 1024  # covers 99% of the tiny model's assistant tokens (1,394 distinct in 300 conversations)
COUNT_CONVS = 300


def vocab_maps(counts: collections.Counter, draft_size: int, vocab_size: int):
    """SpecForge's draft vocabulary: the most frequent target ids (topped up with the lowest unseen ids when the
    data has fewer), sorted; `d2t` holds offsets (target id - draft id), `t2d` marks the target ids kept."""
    import torch

    if not 0 < draft_size <= vocab_size:
        raise ValueError(f"--draft-vocab {draft_size} must be between 1 and the target's vocab_size {vocab_size}")
    counts = collections.Counter({t: c for t, c in counts.items() if 0 <= t < vocab_size})
    for token in range(vocab_size):
        if len(counts) >= draft_size:
            break
        counts.setdefault(token, 0)
    kept = sorted(t for t, _ in counts.most_common(draft_size))
    d2t = torch.tensor([t - i for i, t in enumerate(kept)], dtype=torch.int64)
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[kept] = True
    return d2t, t2d


def assistant_token_counts(target_dir: str, n_convs: int = COUNT_CONVS, seed: int = 0) -> collections.Counter:
    """Token frequencies of the assistant's side of the tiny model's training conversations (SpecForge counts the
    loss-masked tokens, i.e. what the model is trained to say)."""
    from transformers import AutoTokenizer

    sys.path.insert(0, HERE)
    from tinyglm.data import make_conversation
    from train_eagle3 import prompt_messages

    tok = AutoTokenizer.from_pretrained(target_dir)
    rng, counts = random.Random(seed), collections.Counter()
    for _ in range(n_convs):
        conv = make_conversation(rng, "train")
        render = lambda msgs, gen: tok(tok.apply_chat_template(  # noqa: E731
            msgs, tools=conv["tools"] or None, enable_thinking=conv["enable_thinking"], add_generation_prompt=gen,
            tokenize=False), add_special_tokens=False).input_ids
        prompt, full = render(prompt_messages(conv), True), render(conv["messages"], False)
        counts.update(full[len(prompt):] if full[:len(prompt)] == prompt else full)
    return counts


def specforge_config(ours: dict, draft_size: int) -> dict:
    """Our head's config.json rewritten as SpecForge's saved `LlamaConfig`."""
    config = {
        "architectures": ["LlamaForCausalLMEagle3"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "head_dim": ours["head_dim"],
        "hidden_act": ours["hidden_act"],
        "hidden_size": ours["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": ours["intermediate_size"],
        "max_position_embeddings": ours["max_position_embeddings"],
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": ours["num_attention_heads"],
        "num_hidden_layers": 1,
        "num_key_value_heads": ours["num_key_value_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": ours["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": ours["rope_theta"],
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": ours["vocab_size"],
        "draft_vocab_size": draft_size,
    }
    if ours.get("target_hidden_size", ours["hidden_size"]) != ours["hidden_size"]:
        config["target_hidden_size"] = ours["target_hidden_size"]
    layers = (ours.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if layers:
        config["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": list(layers)}
    return config


def convert(head_dir: str, target_dir: str, out_dir: str, draft_size: int = DRAFT_VOCAB,
            counts: collections.Counter | None = None) -> dict:
    """Write `out_dir` (config.json + model.safetensors) in SpecForge's layout; returns the config."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    ours = json.load(open(os.path.join(head_dir, "config.json")))
    with safe_open(os.path.join(head_dir, "model.safetensors"), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "d2t" in state or state["lm_head.weight"].shape[0] != ours["vocab_size"]:
        raise ValueError(f"{head_dir} already has a reduced draft vocabulary; convert a full-vocabulary head")
    with safe_open(os.path.join(target_dir, "model.safetensors"), "pt") as f:
        embed = f.get_tensor("model.embed_tokens.weight")
    if embed.shape[1] != ours.get("target_hidden_size", ours["hidden_size"]):
        raise ValueError(f"{target_dir} has hidden size {embed.shape[1]}; the head at {head_dir} was trained for "
                         f"{ours.get('target_hidden_size', ours['hidden_size'])}")
    if counts is None:
        counts = assistant_token_counts(target_dir)
    d2t, t2d = vocab_maps(counts, draft_size, ours["vocab_size"])
    kept = d2t + d2t.new_tensor(range(draft_size))
    dtype = state["lm_head.weight"].dtype
    state.update({"lm_head.weight": state["lm_head.weight"][kept].contiguous(),
                  "embed_tokens.weight": embed.to(dtype), "d2t": d2t, "t2d": t2d})
    config = specforge_config(ours, draft_size)
    os.makedirs(out_dir, exist_ok=True)
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head", required=True, help="a head written by scripts/train_eagle3.py")
    ap.add_argument("--target", required=True, help="the target checkpoint (embedding, tokenizer)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--draft-vocab", type=int, default=DRAFT_VOCAB)
    args = ap.parse_args()
    config = convert(args.head, args.target, args.out, args.draft_vocab)
    print(f"wrote {args.out}: SpecForge layout, draft vocabulary {config['draft_vocab_size']} of "
          f"{config['vocab_size']}")


if __name__ == "__main__":
    main()
