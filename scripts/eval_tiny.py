"""Measure the bundled tiny GLM checkpoint on held-out conversations.

Why: the tiny model is only useful as an end-to-end oracle if it really produces GLM-4.7-shaped output:
thinking when the prompt opens it, none when it is disabled, well-formed ``<tool_call>`` markup with the
right name and argument values copied from the request, and answers that use the tool results. The MTP
layer must predict the token after next well enough to be accepted. This script prints those figures for
conversations whose entities (names, symbols) come from the held-out split that training never used.

Greedy decoding runs through transformers' ``Glm4MoeForCausalLM`` (the canonical implementation); the MTP
layer, which transformers does not implement, runs through the training module loaded from the same
safetensors file.

Usage:  python scripts/eval_tiny.py [--model DIR] [--n 200] [--seed 777]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tinyglm import ASSET_DIR  # noqa: E402
from tinyglm.data import TOOL_NAMES, TOOLS, Entities, plain_turn, tool_turn  # noqa: E402
from tinyglm.model import MODEL_CONFIG, TinyGlm, causal_doc_mask  # noqa: E402
from tinyglm.text import STOP_TOKENS, conversation_text, loss_spans, make_renderer  # noqa: E402

CALL_RE = re.compile(r"<tool_call>([^<]*)((?:<arg_key>[^<]*</arg_key><arg_value>.*?</arg_value>)*)</tool_call>", re.S)
ARG_RE = re.compile(r"<arg_key>([^<]*)</arg_key><arg_value>(.*?)</arg_value>", re.S)


def make_eval_conversation(rng: random.Random, split: str = "eval"):
    """History of 0-1 turns, then a user request that needs 1-3 tool calls (held-out entities)."""
    ent = Entities(rng, split)
    shown = rng.sample(TOOL_NAMES, rng.choice([1, 2, 3]))
    thinking = rng.random() < 0.7
    history = []
    if rng.random() < 0.3:
        history = plain_turn(ent, shown, thinking, 0.5)
    elif rng.random() < 0.2:
        history, _ = tool_turn(ent, shown, thinking)
    msgs, info = tool_turn(ent, shown, thinking)
    return dict(history=history, turn=msgs, info=info, tools=[TOOLS[n] for n in shown], thinking=thinking)


def make_plain_prompt(rng: random.Random):
    ent = Entities(rng, "eval")
    shown = rng.sample(TOOL_NAMES, rng.choice([0, 1, 2]))
    thinking = rng.random() < 0.7
    msgs = plain_turn(ent, shown, thinking, 1.0)
    return dict(messages=msgs, tools=[TOOLS[n] for n in shown], thinking=thinking)


def typed_value(tool_name, key, raw):
    props = TOOLS[tool_name]["function"]["parameters"]["properties"] if tool_name in TOOLS else {}
    if props.get(key, {}).get("type") == "string":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_calls(text):
    """(calls, well_formed): well-formed means the text is one or more complete GLM-4.7 tool calls and
    nothing else, every name is a known tool and every non-string value is valid JSON."""
    calls, pos, ok = [], 0, True
    for m in CALL_RE.finditer(text):
        if text[pos:m.start()].strip():
            ok = False
        pos = m.end()
        name = m.group(1)
        args = {}
        for k, v in ARG_RE.findall(m.group(2)):
            args[k] = typed_value(name, k, v)
            if name in TOOLS:
                props = TOOLS[name]["function"]["parameters"]["properties"]
                if props.get(k, {}).get("type") not in (None, "string"):
                    try:
                        json.loads(v)
                    except ValueError:
                        ok = False
        if name not in TOOLS:
            ok = False
        calls.append((name, args))
    if text[pos:].strip():
        ok = False
    return calls, ok and bool(calls)


def quotes_results(answer, keys):
    """An answer (no further call) that contains every tool result's key value."""
    return "<tool_call>" not in answer and all(k in answer for k in keys)


def split_thinking(out, thinking):
    """Return (thinking_ok, reasoning, rest) for generated text that followed the prompt's prefill."""
    if thinking:
        if "</think>" not in out:
            return False, "", out
        reasoning, rest = out.split("</think>", 1)
        return bool(reasoning.strip()) and "<think>" not in reasoning, reasoning, rest
    return ("</think>" not in out and "<think>" not in out), "", out


class Generator:
    def __init__(self, model_dir):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.eval()
        gen_cfg = json.load(open(os.path.join(model_dir, "generation_config.json")))
        self.eos = gen_cfg["eos_token_id"]
        self.stop_strings = STOP_TOKENS

    def prompt(self, messages, tools, thinking):
        return self.tok.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True,
                                            enable_thinking=thinking, tokenize=False)

    @torch.no_grad()
    def generate(self, text, max_new_tokens):
        ids = self.tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        out = self.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.eos,
                                  pad_token_id=self.eos[0], attention_mask=torch.ones_like(ids))
        new = self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False)
        for s in self.stop_strings:
            if new.endswith(s):
                return new[: -len(s)], s
        return new, None


@torch.no_grad()
def mtp_accuracy(model_dir, convs, render, tok):
    """Teacher-forced top-1 of the MTP layer (and of the main head) on assistant tokens."""
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    c = dict(MODEL_CONFIG)
    c["vocab_size"] = cfg["vocab_size"]
    m = TinyGlm(c)
    m.load_hf_state_dict(load_file(os.path.join(model_dir, "model.safetensors")))
    m.eval()
    hit = tot = main_hit = 0
    for conv in convs:
        text = conversation_text(conv, render)
        enc = tok.encode(text, add_special_tokens=False)
        spans = loss_spans(text)
        lm = torch.tensor([any(s >= a and e <= b for a, b in spans) for s, e in enc.offsets])
        ids = torch.tensor(enc.ids)[None]
        L = ids.shape[1]
        pos = torch.arange(L)[None]
        mask = causal_doc_mask(torch.zeros_like(ids))
        h, cs = m.trunk(ids, pos, mask)
        main_pred = m.lm_head(h)[0].argmax(-1)
        next_ids = torch.cat([ids[:, 1:], ids[:, -1:]], 1)
        mp = m.mtp_logits(m.mtp(h, next_ids, pos, cs, mask))[0].argmax(-1)
        sel = lm[2:]
        hit += (mp[:-2][sel] == ids[0, 2:][sel]).sum().item()
        main_hit += (main_pred[1:-1][sel] == ids[0, 2:][sel]).sum().item()
        tot += sel.sum().item()
    return hit / max(1, tot), main_hit / max(1, tot), tot


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=ASSET_DIR)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--plain", type=int, default=50)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=3, help="print this many sample generations")
    ap.add_argument("--json", help="also write the figures (and the failed calls) to this file")
    ap.add_argument("--split", default="eval", choices=["eval", "train"],
                    help="entity split; 'train' tells copying apart from memorised entities")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    g = Generator(args.model)
    rng = random.Random(args.seed)
    convs = [make_eval_conversation(rng, args.split) for _ in range(args.n)]
    failures = []

    well = exact = answered = think_ok = think_total = bare_answered = bare_total = 0
    per_tool = defaultdict(lambda: [0, 0])
    by_mode = defaultdict(lambda: [0, 0])
    by_calls = defaultdict(lambda: [0, 0])
    for i, cv in enumerate(convs):
        user, call_msg = cv["turn"][0], cv["turn"][1]
        n_calls = len(cv["info"]["calls"])
        tool_msgs = cv["turn"][2:2 + n_calls]
        final_msg = cv["turn"][-1]
        # 1) the call turn
        p1 = g.prompt(cv["history"] + [user], cv["tools"], cv["thinking"])
        out1, stop1 = g.generate(p1, 160)
        tok1, _, rest1 = split_thinking(out1, cv["thinking"])
        calls, ok = parse_calls(rest1)
        ok = ok and stop1 == "<|observation|>"
        expected = [(tc["function"]["name"], tc["function"]["arguments"]) for tc in call_msg["tool_calls"]]
        ex = ok and calls == expected
        well += ok
        exact += ex
        if not ex:
            failures.append({"user": user["content"], "expected": expected, "got": out1})
        for name, _ in expected:
            per_tool[name][1] += 1
            per_tool[name][0] += ex
        for table, key in ((by_mode, "thinking" if cv["thinking"] else "no-thinking"),
                           (by_calls, f"{n_calls} call{'s' if n_calls > 1 else ''}")):
            table[key][0] += ex
            table[key][1] += 1
        # 2) the answer turn, after the gold calls and results
        p2 = g.prompt(cv["history"] + [user, call_msg] + tool_msgs, cv["tools"], cv["thinking"])
        out2, stop2 = g.generate(p2, 96)
        tok2, _, answer = split_thinking(out2, cv["thinking"])
        keys = [c["key"] for c in cv["info"]["calls"]]
        ans_ok = quotes_results(answer, keys)
        answered += ans_ok
        if cv["thinking"]:  # the same answer when the client did not send the call's reasoning back
            bare = {k: v for k, v in call_msg.items() if k != "reasoning_content"}
            p3 = g.prompt(cv["history"] + [user, bare] + tool_msgs, cv["tools"], True)
            tok3, _, answer3 = split_thinking(g.generate(p3, 96)[0], True)
            bare_answered += tok3 and quotes_results(answer3, keys)
            bare_total += 1
        think_ok += tok1 + tok2
        think_total += 2
        if i < args.show:
            print(f"--- sample {i} (thinking={cv['thinking']})\n  user: {user['content']}\n  call: {out1!r}"
                  f"\n  gold: {expected}\n  answer: {out2!r}\n  gold answer: {final_msg['content']!r}", flush=True)
    n = len(convs)

    # plain prompts: no tool calls, and echo/lookup copies
    prng = random.Random(args.seed + 1)
    plain = [make_plain_prompt(prng) for _ in range(args.plain)]
    no_call = plain_exact = plain_think = 0
    for pc in plain:
        p = g.prompt([pc["messages"][0]], pc["tools"], pc["thinking"])
        out, _ = g.generate(p, 64)
        tk, _, content = split_thinking(out, pc["thinking"])
        no_call += "<tool_call>" not in out
        plain_exact += content.strip() == pc["messages"][1]["content"]
        plain_think += tk

    render = make_renderer(open(os.path.join(args.model, "chat_template.jinja")).read())
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    gold = [dict(messages=cv["history"] + cv["turn"], tools=cv["tools"], enable_thinking=cv["thinking"]) for cv in convs]
    mtp_acc, main_acc, n_tok = mtp_accuracy(args.model, gold, render, tok)

    figures = {
        "conversations": n,
        "well_formed_tool_call": well / n,
        "exact_name_and_arguments": exact / n,
        "answer_contains_tool_result": answered / n,
        "thinking_correct": think_ok / think_total,
        "answer_without_call_reasoning": bare_answered / max(1, bare_total),
        "plain_prompts": args.plain,
        "plain_no_tool_call": no_call / max(1, args.plain),
        "plain_exact_answer": plain_exact / max(1, args.plain),
        "plain_thinking_correct": plain_think / max(1, args.plain),
        "mtp_top1_assistant_tokens": mtp_acc,
        "main_top1_same_positions": main_acc,
        "mtp_tokens": n_tok,
        "exact_by_tool": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_tool.items())},
        "exact_by_mode": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_mode.items())},
        "exact_by_calls": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_calls.items())},
        "seconds": round(time.time() - t0, 1),
        "split": args.split,
    }
    print(f"{'held-out' if args.split == 'eval' else 'training-entity'} conversations: {n}")
    print(f"well-formed GLM-4.7 tool call:      {well / n:.1%}   (target >= 95%)")
    print(f"exact tool name and arguments:      {exact / n:.1%}   (target >= 85%)")
    print(f"final answer has the result value:  {answered / n:.1%}   (target >= 90%)")
    print(f"thinking present/absent correctly:  {think_ok / think_total:.1%}   (target 100%)")
    print(f"  answers (thinking, and has result) when the call's reasoning is not sent back: "
          f"{bare_answered / max(1, bare_total):.1%} of {bare_total}")
    print(f"plain prompts without a tool call:  {no_call / max(1, args.plain):.1%}  exact plain answers: "
          f"{plain_exact / max(1, args.plain):.1%}")
    print(f"MTP top-1 on assistant tokens:      {mtp_acc:.3f}   (target >= 0.6; main head {main_acc:.3f}, "
          f"{n_tok} tokens)")
    print("exact by tool:", json.dumps(figures["exact_by_tool"]))
    print("exact by mode:", json.dumps(figures["exact_by_mode"]))
    print("exact by calls per request:", json.dumps(figures["exact_by_calls"]))
    print(f"({figures['seconds']} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(figures, failed_calls=failures), f, indent=2)
    return figures


if __name__ == "__main__":
    main()
