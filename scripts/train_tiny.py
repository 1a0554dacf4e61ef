"""Train the bundled tiny GLM checkpoint (``glm_plugin/assets/tiny-glm``) from a fixed seed on a CPU.

Why this exists: without a GPU, every end-to-end claim of the project (parsers, MTP speculative
decoding, engine model classes) needs a checkpoint that a CPU engine can serve and whose output has
GLM-4.7's exact wire format. This script makes one: a ``Glm4MoeForCausalLM`` (model_type ``glm4_moe``)
with partial RoPE, qk-norm, a dense first layer, sigmoid-routed experts with ``e_score_correction_bias``,
``routed_scaling_factor`` != 1, and one MTP (NextN) layer stored under GLM's real weight names.

Design choices (see docs/tiny-model.md for measurements):
* Data is generated here: agentic conversations over ten small tools, rendered by our own chat
  template (``chat_template.jinja``, byte-equal to GLM-4.7's), plus plain chat and copy drills (echo,
  key-value lookup, and repeated token sequences on a fifth of the steps).
* Layers 0-1 start as a hand-built induction (copy) circuit whose weights stay fixed during training:
  from random weights the model never learned to copy unseen entities within the CPU budget.
* Tokenisation makes a copied value token-identical in the prompt and in the answer: digits are split,
  capitalised words and symbols never carry a leading space, every GLM tag is one special token.
* Training uses our own compact module (a sorted-token expert loop) whose weights are exactly the
  parameters of transformers' ``Glm4MoeForCausalLM``; ``--check`` verifies logits against transformers.
* Loss is computed only on assistant text; the MTP loss trains layer ``num_hidden_layers`` to predict the
  token after next from the main model's final hidden state and the next token's embedding, exactly as
  vLLM's ``Glm4MoeMultiTokenPredictorLayer`` uses it.

Usage:  python scripts/train_tiny.py [--out DIR] [--check]   (about 45 minutes on 2 free cores)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

from tinyglm import ASSET_DIR, TEMPLATE_PATH
from tinyglm.circuit import RETRIEVAL_START_GAIN, install_copy_circuit, restore_slices, set_retrieval_gain
from tinyglm.data import Entities, make_conversation
from tinyglm.model import MODEL_CONFIG, TinyGlm, causal_doc_mask
from tinyglm.text import SPECIAL_TOKENS, STOP_TOKENS, build_tokenizer, conversation_text, loss_spans, make_renderer


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------
def induction_rows(tok, rng, batch, seq_len):
    """Rows of packed copy drills, `[gMASK]<sop> X <|assistant|> X`, loss on the repeat only; X is random
    tokens or random entities. Mixed into training so that the copy circuit stays in use."""
    ids = torch.full((batch, seq_len), tok.token_to_id("<|endoftext|>"), dtype=torch.long)
    lm = torch.zeros((batch, seq_len), dtype=torch.bool)
    doc = torch.full((batch, seq_len), -1, dtype=torch.long)
    pos = torch.zeros((batch, seq_len), dtype=torch.long)
    head = [tok.token_to_id("[gMASK]"), tok.token_to_id("<sop>")]
    sep = tok.token_to_id("<|assistant|>")
    first_plain = len(SPECIAL_TOKENS)
    for b in range(batch):
        fill, d = 0, 0
        while True:
            if rng.random() < 0.5:
                x = [rng.randrange(first_plain, tok.get_vocab_size()) for _ in range(rng.randint(8, 40))]
            else:
                ent = Entities(rng, "train")
                text = " ".join(rng.choice([ent.word(), ent.place(), ent.symbol(), str(ent.integer()), ent.title(),
                                            str(ent.decimal())]) for _ in range(rng.randint(3, 12)))
                x = tok.encode(text, add_special_tokens=False).ids
            t = head + x + [sep] + x
            if fill + len(t) > seq_len:
                break
            n = len(t)
            ids[b, fill: fill + n] = torch.tensor(t)
            doc[b, fill: fill + n] = d
            pos[b, fill: fill + n] = torch.arange(n)
            lm[b, fill + len(head) + len(x) + 1: fill + n] = True
            fill, d = fill + n, d + 1
    return ids, lm, doc, pos


class Packer:
    """Packs rendered conversations into rows of `seq_len` tokens with per-document masks."""

    def __init__(self, tok, render, rng, seq_len, batch):
        self.tok, self.render, self.rng, self.L, self.B = tok, render, rng, seq_len, batch
        self.pending = None
        self.pad = tok.token_to_id("<|endoftext|>")

    def encode(self, conv):
        text = conversation_text(conv, self.render)
        enc = self.tok.encode(text, add_special_tokens=False)
        spans = loss_spans(text)
        mask = []
        for (s, e) in enc.offsets:
            mask.append(any(s >= a and e <= b for a, b in spans))
        return enc.ids, mask

    def next(self, copy_weight):
        ids = torch.full((self.B, self.L), self.pad, dtype=torch.long)
        lm = torch.zeros((self.B, self.L), dtype=torch.bool)
        doc = torch.full((self.B, self.L), -1, dtype=torch.long)
        pos = torch.zeros((self.B, self.L), dtype=torch.long)
        for b in range(self.B):
            fill, d = 0, 0
            while True:
                if self.pending is None:
                    conv = make_conversation(self.rng, "train", copy_weight)
                    self.pending = self.encode(conv)
                t, m = self.pending
                if len(t) > self.L:  # too long: drop
                    self.pending = None
                    continue
                if fill + len(t) > self.L:
                    break
                n = len(t)
                ids[b, fill:fill + n] = torch.tensor(t)
                lm[b, fill:fill + n] = torch.tensor(m)
                doc[b, fill:fill + n] = d
                pos[b, fill:fill + n] = torch.arange(n)
                fill += n
                d += 1
                self.pending = None
        return ids, lm, doc, pos


def compute_losses(model, ids, lm, doc, pos, mtp_detach=True):
    mask = causal_doc_mask(doc)
    h, cs = model.trunk(ids, pos, mask)
    # main: position t predicts t+1 when t+1 is an assistant token of the same document
    tgt = ids[:, 1:]
    valid = lm[:, 1:] & (doc[:, 1:] == doc[:, :-1])
    logits = model.lm_head(h[:, :-1][valid])
    loss = F.cross_entropy(logits.float(), tgt[valid])
    acc = (logits.argmax(-1) == tgt[valid]).float().mean()
    # MTP: position t (hidden h[t], token t+1) predicts t+2
    hm = h.detach() if mtp_detach else h
    next_ids = torch.cat([ids[:, 1:], ids[:, -1:]], 1)
    mh = model.mtp(hm, next_ids, pos, cs, mask)
    mvalid = lm[:, 2:] & (doc[:, 2:] == doc[:, :-2])
    ml = model.mtp_logits(mh[:, :-2][mvalid])
    mloss = F.cross_entropy(ml.float(), ids[:, 2:][mvalid])
    macc = (ml.argmax(-1) == ids[:, 2:][mvalid]).float().mean()
    return loss, mloss, acc, macc


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def hf_config_dict(c, tok):
    from transformers import Glm4MoeConfig

    eos = [tok.token_to_id(s) for s in STOP_TOKENS]
    cfg = Glm4MoeConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        moe_intermediate_size=c["moe_intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
        head_dim=c["head_dim"], partial_rotary_factor=c["partial_rotary_factor"],
        rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"],
                         "partial_rotary_factor": c["partial_rotary_factor"]},
        use_qk_norm=c["use_qk_norm"], attention_bias=c["attention_bias"],
        first_k_dense_replace=c["first_k_dense_replace"], n_routed_experts=c["n_routed_experts"],
        num_experts_per_tok=c["num_experts_per_tok"], n_shared_experts=c["n_shared_experts"],
        n_group=c["n_group"], topk_group=c["topk_group"], norm_topk_prob=c["norm_topk_prob"],
        routed_scaling_factor=c["routed_scaling_factor"], rms_norm_eps=c["rms_norm_eps"],
        num_nextn_predict_layers=c["num_nextn_predict_layers"],
        max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=False,
        eos_token_id=eos, pad_token_id=eos[0], bos_token_id=None,
    )
    d = cfg.to_dict()
    d["architectures"] = ["Glm4MoeForCausalLM"]
    d["dtype"] = "bfloat16"
    d["rope_theta"] = c["rope_theta"]
    d["head_dim"] = c["head_dim"]
    return d


def save_asset(model, tok, out_dir, template_text, meta):
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    c = model.c
    tmp = os.path.join(out_dir, "model.safetensors.tmp")
    save_file(model.hf_state_dict(), tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    cfg = hf_config_dict(c, tok)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    eos = [tok.token_to_id(s) for s in STOP_TOKENS]
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos, "pad_token_id": eos[0], "do_sample": False,
                   "transformers_version": "5.19.0"}, f, indent=2)
        f.write("\n")
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    if os.path.abspath(out_dir) != os.path.dirname(os.path.abspath(TEMPLATE_PATH)):
        with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
            f.write(template_text)
    added = {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                        "single_word": False, "special": True} for s in SPECIAL_TOKENS}
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": c["max_position_embeddings"],
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": None, "unk_token": None,
        "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False,
        "extra_special_tokens": [s for s in SPECIAL_TOKENS if s != "<|endoftext|>"],
        "added_tokens_decoder": added, "chat_template": template_text,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(out_dir, "training_meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")


def check_against_transformers(model, out_dir, ids):
    """Load the saved asset with transformers and compare logits with our module (fp32)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    hf.eval()
    ours = TinyGlm(model.c)
    from safetensors.torch import load_file
    ours.load_hf_state_dict(load_file(os.path.join(out_dir, "model.safetensors")))
    ours.eval()
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        L = ids.shape[1]
        doc = torch.zeros_like(ids)
        pos = torch.arange(L)[None].expand_as(ids)
        h, _ = ours.trunk(ids, pos, causal_doc_mask(doc))
        mine = ours.lm_head(h)
    diff = (ref - mine).abs().max().item()
    same = (ref.argmax(-1) == mine.argmax(-1)).float().mean().item()
    return diff, same


def train(model, frozen, tok, render, args, meta, template_text):
    """One cosine schedule over --steps; a fraction --induction of the steps trains on copy drills
    (induction_rows) instead of conversations; the copy circuit's slices are restored after every step.
    Saves every --save-every steps and at the end (a cut-off run still leaves a usable asset)."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in named if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    packer = Packer(tok, render, random.Random(args.seed + 1), args.seq_len, args.batch)
    drill_rng = random.Random(args.seed + 2)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        p = (s - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    tstart = time.time()
    ema = None
    for step in range(args.steps):
        if args.retrieval and step < args.retrieval_ramp:
            g0 = RETRIEVAL_START_GAIN
            set_retrieval_gain(model, g0 + (args.retrieval_gain - g0) * step / args.retrieval_ramp)
        if drill_rng.random() < args.induction:
            ids, lm, doc, pos = induction_rows(tok, drill_rng, args.batch, args.seq_len)
        else:
            ids, lm, doc, pos = packer.next(copy_weight=2.0 if step < args.steps // 2 else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        model.train()
        loss, mloss, acc, macc = compute_losses(model, ids, lm, doc, pos)
        total = loss + args.mtp_weight * mloss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        restore_slices(frozen)
        with torch.no_grad():  # auxiliary-loss-free balancing: nudge the choice bias toward even load
            for m in model.moe_layers():
                load = m.last_load.float()
                m.e_score_correction_bias += 1e-3 * torch.sign(load.mean() - load)
        cur = [loss.item(), mloss.item(), acc.item(), macc.item()]
        ema = cur if ema is None else [0.95 * e + 0.05 * v for e, v in zip(ema, cur)]
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - tstart
            print(f"step {step} loss {ema[0]:.3f} mtp {ema[1]:.3f} acc {ema[2]:.3f} mtp_acc {ema[3]:.3f} "
                  f"lr {lr_at(step):.2e} {el / (step + 1):.2f}s/step elapsed {el / 60:.1f}m", flush=True)
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            meta["training"].update(steps_done=step + 1, train_minutes=round((time.time() - tstart) / 60, 1),
                                    ema=dict(loss=round(ema[0], 4), mtp_loss=round(ema[1], 4), acc=round(ema[2], 4),
                                             mtp_acc=round(ema[3], 4)))
            save_asset(model, tok, args.out, template_text, meta)
            print(f"saved checkpoint at step {step + 1}", flush=True)


# --------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=ASSET_DIR)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=2600)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--induction", type=float, default=0.2, help="fraction of steps on copy drills")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--mtp-weight", type=float, default=0.3)
    ap.add_argument("--tok-convs", type=int, default=6000)
    ap.add_argument("--tokenizer", help="reuse this tokenizer.json instead of training one")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bigram", action=argparse.BooleanOptionalAction, default=True,
                    help="layer-1 bigram induction head (docs/tiny-model.md)")
    ap.add_argument("--retrieval", action=argparse.BooleanOptionalAction, default=True,
                    help="layers 2-3 retrieval copy paths (docs/tiny-model.md)")
    ap.add_argument("--retrieval-gain", type=float, default=8.0, help="output scale of the retrieval paths")
    ap.add_argument("--retrieval-ramp", type=int, default=200,
                    help=f"steps over which that scale rises from {RETRIEVAL_START_GAIN}")
    ap.add_argument("--check", action="store_true", help="compare logits with transformers after saving")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    with open(TEMPLATE_PATH) as f:
        template_text = f.read()
    render = make_renderer(template_text)

    if args.tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(args.tokenizer)
    else:  # from a fixed sample of the training distribution
        trng = random.Random(args.seed)
        texts = [conversation_text(make_conversation(trng, "train", 1.0), render) for _ in range(args.tok_convs)]
        tok = build_tokenizer(texts, MODEL_CONFIG["vocab_size"])
    c = dict(MODEL_CONFIG)
    assert tok.get_vocab_size() <= c["vocab_size"], tok.get_vocab_size()
    print(f"tokenizer: {tok.get_vocab_size()} entries ({time.time() - t0:.1f}s)", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    model = TinyGlm(c)
    model.init_weights(gen)
    frozen = install_copy_circuit(model, bigram=args.bigram, retrieval=args.retrieval,
                                  retrieval_gain=args.retrieval_gain)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params (trained, MTP embed/head shared): {n_params / 1e6:.2f}M", flush=True)

    meta = dict(seed=args.seed, batch=args.batch, seq_len=args.seq_len, mtp_weight=args.mtp_weight, model=c,
                training=dict(steps=args.steps, lr=args.lr, warmup=args.warmup, induction=args.induction,
                              copy_circuit=True, bigram=args.bigram, retrieval=args.retrieval,
                              retrieval_gain=args.retrieval_gain, retrieval_ramp=args.retrieval_ramp))
    train(model, frozen, tok, render, args, meta, template_text)
    print(f"saved {args.out} after {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.check:
        packer = Packer(tok, render, random.Random(args.seed + 3), args.seq_len, args.batch)
        ids, _, _, _ = packer.next(0.3)
        diff, same = check_against_transformers(model, args.out, ids[:1, :128])
        print(f"transformers check: max |logit diff| {diff:.4g} (bf16 weights, fp32 compute), argmax agree {same:.3f}")


if __name__ == "__main__":
    main()
