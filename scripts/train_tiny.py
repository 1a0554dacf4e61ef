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
import sys
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "glm_plugin", "assets", "tiny-glm")
TEMPLATE_PATH = os.path.join(DEFAULT_OUT, "chat_template.jinja")

SPECIAL_TOKENS = [
    "<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>",
    "</arg_value>", "<tool_response>", "</tool_response>",
]
STOP_TOKENS = ["<|endoftext|>", "<|user|>", "<|observation|>"]
# Capitalised words, single digits, whitespace and punctuation never carry a leading space; only
# lower-case words do (runs of spaces and punctuation form their own pieces). So "Veloria" is the same tokens after "in " and after "<arg_value>".
PRETOKENIZE_PATTERN = r" ?[a-z]+|[A-Z][a-z]*|[0-9]|[^A-Za-z0-9]+"

MODEL_CONFIG = dict(
    hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=64, partial_rotary_factor=0.5,
    rope_theta=1000000.0, use_qk_norm=True, attention_bias=True, first_k_dense_replace=1,
    n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
    norm_topk_prob=True, routed_scaling_factor=2.5, rms_norm_eps=1e-5, num_nextn_predict_layers=1,
    max_position_embeddings=4096, tie_word_embeddings=False, vocab_size=4096,
)

# --------------------------------------------------------------------------------------------------
# Entities. Every generated string is assigned to the training or the held-out split by a hash, so
# evaluation can use values the model has never seen.
# --------------------------------------------------------------------------------------------------
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "", "n", "r", "l", "s", "m", "k"]
CONDITIONS = ["Sunny", "Cloudy", "Rain", "Snow", "Windy", "Fog", "Storm", "Clear"]
STATUSES = ["Shipped", "Pending", "Delivered", "Packed", "Delayed"]
CUISINES = ["italian", "thai", "mexican", "indian", "japanese"]
UNITS = ["celsius", "fahrenheit"]
WORD_SUFFIX = ["Park", "Lamp", "Party", "Review", "Break", "Plan", "Trip", "Notes", "Meeting", "Call"]


def split_of(text: str) -> str:
    """'eval' for about one string in eight, else 'train' (deterministic)."""
    return "eval" if zlib.crc32(text.encode()) % 8 == 0 else "train"


class Entities:
    """Random names, symbols and numbers restricted to one split."""

    def __init__(self, rng: random.Random, split: str):
        self.rng = rng
        self.split = split

    def _pick(self, make):
        for _ in range(200):
            s = make()
            if split_of(s) == self.split:
                return s
        return s

    def _word(self):
        r = self.rng
        w = "".join(r.choice(ONSETS) + r.choice(VOWELS) + r.choice(CODAS) for _ in range(r.choice([2, 2, 3])))
        return w.capitalize()

    def word(self):
        return self._pick(self._word)

    def place(self):
        return self._pick(lambda: self._word() if self.rng.random() < 0.75 else self._word() + " " + self._word())

    def person(self):
        return self._pick(lambda: self._word() + " " + self._word())

    def title(self):
        return self._pick(lambda: self._word() + " " + self.rng.choice(WORD_SUFFIX))

    def symbol(self, n=None):
        n = n or self.rng.choice([3, 4])
        return self._pick(lambda: "".join(self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n)))

    def integer(self, lo=1, hi=9999):
        return self.rng.randint(lo, hi)

    def decimal(self):
        whole = self.rng.randint(1, 999)
        frac = self.rng.randint(1, 99)
        return float(f"{whole}.{frac:02d}") if frac % 10 else float(f"{whole}.{frac // 10 or 5}")


# --------------------------------------------------------------------------------------------------
# Tools. Each has a short JSON schema and a sampler returning (user request, arguments, response,
# key value, answer). Argument values always appear verbatim in the user request.
# --------------------------------------------------------------------------------------------------
def fn(name, desc, props, required):
    return {"type": "function", "function": {"name": name, "description": desc,
            "parameters": {"type": "object", "properties": props, "required": required}}}


TOOLS = {
    "get_weather": fn("get_weather", "Current weather for a city",
                      {"city": {"type": "string"}, "unit": {"type": "string", "enum": UNITS}}, ["city"]),
    "get_time": fn("get_time", "Current local time", {}, []),
    "get_stock_price": fn("get_stock_price", "Latest price of a stock", {"symbol": {"type": "string"}}, ["symbol"]),
    "set_timer": fn("set_timer", "Start a named timer",
                    {"minutes": {"type": "integer"}, "label": {"type": "string"}}, ["minutes", "label"]),
    "convert_currency": fn("convert_currency", "Convert money between currencies",
                           {"amount": {"type": "number"}, "source": {"type": "string"}, "target": {"type": "string"}},
                           ["amount", "source", "target"]),
    "send_email": fn("send_email", "Send an email to a contact",
                     {"to": {"type": "string"}, "subject": {"type": "string"}, "urgent": {"type": "boolean"}},
                     ["to", "subject"]),
    "add_tags": fn("add_tags", "Tag an item",
                   {"item": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                   ["item", "tags"]),
    "create_event": fn("create_event", "Create a calendar event",
                       {"event": {"type": "object", "properties": {"title": {"type": "string"},
                                                                   "day": {"type": "integer"}}}}, ["event"]),
    "lookup_order": fn("lookup_order", "Find an order",
                       {"order_id": {"type": "integer"}, "include_items": {"type": "boolean"}}, ["order_id"]),
    "find_restaurant": fn("find_restaurant", "Find a restaurant",
                          {"city": {"type": "string"}, "cuisine": {"type": "string", "enum": CUISINES}},
                          ["city", "cuisine"]),
}
TOOL_NAMES = list(TOOLS)


def _j(d):
    return json.dumps(d, ensure_ascii=False)


def sample_call(name: str, ent: Entities):
    """Return dict(user, args, response, key, answer, intent) for one call of tool `name`."""
    r = ent.rng
    if name == "get_weather":
        city = ent.place()
        args = {"city": city}
        if r.random() < 0.4:
            args["unit"] = r.choice(UNITS)
            user = r.choice([f"What is the weather in {city} in {args['unit']}?",
                             f"Weather for {city} please, in {args['unit']}."])
        else:
            user = r.choice([f"What is the weather in {city}?", f"How is the weather in {city} today?",
                             f"Check the weather for {city}."])
        temp, cond = r.randint(-9, 39), r.choice(CONDITIONS)
        resp = {"city": city, "temp": temp, "condition": cond}
        return dict(user=user, args=args, response=_j(resp), key=str(temp),
                    answer=f"It is {temp} degrees and {cond} in {city}.", intent=f"the weather in {city}")
    if name == "get_time":
        hh, mm = r.randint(0, 23), r.randint(0, 59)
        t = f"{hh:02d}:{mm:02d}"
        user = r.choice(["What time is it?", "Tell me the current time.", "What is the time now?"])
        return dict(user=user, args={}, response=_j({"time": t}), key=t,
                    answer=f"It is {t} now.", intent="the current time")
    if name == "get_stock_price":
        sym, price = ent.symbol(), ent.decimal()
        user = r.choice([f"What is the price of {sym}?", f"How much is {sym} stock?", f"Get the stock price for {sym}."])
        return dict(user=user, args={"symbol": sym}, response=_j({"symbol": sym, "price": price}), key=str(price),
                    answer=f"{sym} trades at {price}.", intent=f"the price of {sym}")
    if name == "set_timer":
        mins, label = r.randint(1, 180), ent.title()
        user = r.choice([f"Set a timer for {mins} minutes called {label}.",
                         f"Start a {mins} minute timer named {label}."])
        tid = ent.integer(100, 9999)
        return dict(user=user, args={"minutes": mins, "label": label},
                    response=_j({"timer_id": tid, "status": "Started"}), key=str(tid),
                    answer=f"Timer {tid} is set for {mins} minutes.", intent=f"a timer of {mins} minutes")
    if name == "convert_currency":
        amt = ent.decimal() if r.random() < 0.5 else ent.integer(1, 5000)
        src, dst = ent.symbol(3), ent.symbol(3)
        user = r.choice([f"Convert {amt} {src} to {dst}.", f"How much is {amt} {src} in {dst}?"])
        res = ent.decimal()
        return dict(user=user, args={"amount": amt, "source": src, "target": dst},
                    response=_j({"result": res, "currency": dst}), key=str(res),
                    answer=f"{amt} {src} is {res} {dst}.", intent=f"converting {amt} {src} to {dst}")
    if name == "send_email":
        to, subject = ent.person(), ent.title()
        urgent = r.random() < 0.5
        args = {"to": to, "subject": subject}
        if urgent:
            args["urgent"] = True
            user = r.choice([f"Send an urgent email to {to} about {subject}.",
                             f"Email {to} with subject {subject}, it is urgent."])
        elif r.random() < 0.5:
            args["urgent"] = False
            user = f"Email {to} with subject {subject}, it is not urgent."
        else:
            user = r.choice([f"Send an email to {to} about {subject}.", f"Email {to} with subject {subject}."])
        mid = ent.integer(100, 9999)
        return dict(user=user, args=args, response=_j({"message_id": mid, "status": "Sent"}), key=str(mid),
                    answer=f"Sent to {to} as message {mid}.", intent=f"an email to {to}")
    if name == "add_tags":
        item = ent.title()
        tags = [ent.word() for _ in range(r.choice([1, 2, 2, 3]))]
        tag_text = tags[0] if len(tags) == 1 else ", ".join(tags[:-1]) + " and " + tags[-1]
        user = r.choice([f"Tag {item} with {tag_text}.", f"Add the tags {tag_text} to {item}."])
        n = ent.integer(1, 99)
        return dict(user=user, args={"item": item, "tags": tags}, response=_j({"item": item, "total_tags": n}),
                    key=str(n), answer=f"{item} now has {n} tags.", intent=f"tagging {item}")
    if name == "create_event":
        title, day = ent.title(), r.randint(1, 31)
        user = r.choice([f"Create an event {title} on day {day}.", f"Schedule {title} for day {day}."])
        eid = ent.integer(100, 9999)
        return dict(user=user, args={"event": {"title": title, "day": day}}, response=_j({"event_id": eid}),
                    key=str(eid), answer=f"Event {title} was created with id {eid}.", intent=f"an event {title}")
    if name == "lookup_order":
        oid = ent.integer(1000, 99999)
        args = {"order_id": oid}
        if r.random() < 0.4:
            args["include_items"] = True
            user = f"Look up order {oid} with its items."
        else:
            user = r.choice([f"Where is my order {oid}?", f"Check order {oid}."])
        status, eta = r.choice(STATUSES), r.randint(1, 20)
        return dict(user=user, args=args, response=_j({"order_id": oid, "status": status, "eta_days": eta}),
                    key=str(eta), answer=f"Order {oid} is {status} and arrives in {eta} days.",
                    intent=f"order {oid}")
    if name == "find_restaurant":
        city, cuisine = ent.place(), r.choice(CUISINES)
        user = r.choice([f"Find a {cuisine} restaurant in {city}.", f"Any good {cuisine} food in {city}?"])
        top, rating = ent.title(), round(r.randint(10, 50) / 10, 1)
        return dict(user=user, args={"city": city, "cuisine": cuisine},
                    response=_j({"name": top, "rating": rating}), key=top,
                    answer=f"Try {top}, rated {rating}.", intent=f"{cuisine} food in {city}")
    raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------------
GREETINGS = [("Hello!", "Hello! How can I help you today?"), ("Hi there.", "Hi! What can I do for you?"),
             ("Thanks a lot.", "You are welcome."), ("Good morning.", "Good morning! How can I help?"),
             ("Who are you?", "I am a small assistant that can use tools."),
             ("Thank you, that is all.", "Glad to help. Goodbye!")]


EVAL_CALL_WEIGHTS = (0.6, 0.3, 0.1)  # how often a request needs 1, 2, 3 calls in the held-out set
TRAIN_CALL_WEIGHTS = (0.45, 0.35, 0.2)  # training leans on the multi-call requests, the ones it gets wrong
DROP_CALL_REASONING = 0.35  # share of thinking call turns whose reasoning the client did not send back


def tool_turn(ent: Entities, shown: list[str], thinking: bool, call_weights=EVAL_CALL_WEIGHTS):
    """One user request needing 1-3 calls, with the assistant's call turn, results and answer."""
    r = ent.rng
    k = r.choices([1, 2, 3], call_weights)[0]
    names = [r.choice(shown) for _ in range(k)]
    calls = [sample_call(n, ent) for n in names]
    user = " ".join(c["user"] for c in calls)
    think1 = f"The user asks for {' and '.join(c['intent'] for c in calls)}. I will call {', then '.join(names)}."
    think2 = "The results are in. I will answer from them."
    a1 = {"role": "assistant", "content": "",
          "tool_calls": [{"type": "function", "function": {"name": n, "arguments": c["args"]}}
                         for n, c in zip(names, calls)]}
    a2 = {"role": "assistant", "content": " ".join(c["answer"] for c in calls)}
    if thinking:
        a1["reasoning_content"] = think1
        a2["reasoning_content"] = think2
    msgs = [{"role": "user", "content": user}, a1]
    msgs += [{"role": "tool", "content": c["response"]} for c in calls]
    msgs.append(a2)
    return msgs, dict(names=names, calls=calls)


def plain_turn(ent: Entities, shown: list[str], thinking: bool, copy_weight: float):
    """A turn that needs no tool: greetings, tool listing, echo and key-value copy drills."""
    r = ent.rng
    kind = r.choices(["greet", "list", "echo", "lookup"], [1.0, 0.5, copy_weight, copy_weight])[0]
    if kind == "greet":
        user, answer = r.choice(GREETINGS)
        think = "This is small talk, no tool is needed."
    elif kind == "list":
        user = r.choice(["What tools can you use?", "Which functions do you have?"])
        answer = ("I can use " + ", ".join(shown) + ".") if shown else "I have no tools right now."
        think = "The user asks about my tools."
    elif kind == "echo":
        parts = []
        for _ in range(r.randint(2, 6)):
            parts.append(r.choice([ent.word(), ent.place(), ent.symbol(), str(ent.integer()), str(ent.decimal())]))
        text = " ".join(parts)
        user = r.choice([f"Repeat exactly: {text}", f"Say this back: {text}", f"Echo {text}"])
        answer = text
        think = "The user wants the text repeated exactly."
    else:
        n = r.randint(2, 6)
        keys = []
        while len(keys) < n:
            w = ent.word()
            if w not in keys:
                keys.append(w)
        vals = [r.choice([ent.word(), str(ent.integer()), ent.symbol(), str(ent.decimal())]) for _ in keys]
        i = r.randrange(n)
        table = ", ".join(f"{k}={v}" for k, v in zip(keys, vals))
        user = r.choice([f"Records: {table}. What is {keys[i]}?", f"Given {table}, what is the value of {keys[i]}?"])
        answer = f"{keys[i]} is {vals[i]}."
        think = f"I look up {keys[i]} in the records."
    a = {"role": "assistant", "content": answer}
    if thinking:
        a["reasoning_content"] = think
    return [{"role": "user", "content": user}, a]


def make_conversation(rng: random.Random, split: str = "train", copy_weight: float = 0.3):
    """A conversation: tools shown (0-3), 1-3 user turns, thinking on or off for the whole exchange."""
    ent = Entities(rng, split)
    n_shown = rng.choices([0, 1, 2, 3], [0.15, 0.4, 0.3, 0.15])[0]
    shown = rng.sample(TOOL_NAMES, n_shown)
    thinking = rng.random() < 0.75
    msgs = []
    if rng.random() < 0.1:
        msgs.append({"role": "system", "content": "You are a helpful assistant."})
    for _ in range(rng.choices([1, 2, 3], [0.7, 0.25, 0.05])[0]):
        if shown and rng.random() < 0.7:
            m, _ = tool_turn(ent, shown, thinking, TRAIN_CALL_WEIGHTS)
            if thinking and rng.random() < DROP_CALL_REASONING:
                # OpenAI-SDK clients send the call turn back without its reasoning: the template then
                # renders a bare </think> there, and the answer must still come from the results.
                del m[1]["reasoning_content"]
        else:
            m = plain_turn(ent, shown, thinking, copy_weight)
        msgs += m
    return dict(messages=msgs, tools=[TOOLS[n] for n in shown], enable_thinking=thinking)


# --------------------------------------------------------------------------------------------------
# Rendering (through our own chat template) and loss masks
# --------------------------------------------------------------------------------------------------
def make_renderer(template_text: str):
    """A Jinja2 renderer with the same settings as transformers' apply_chat_template."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    tmpl = env.from_string(template_text)

    def render(messages, tools=None, add_generation_prompt=False, **kw):
        return tmpl.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **kw)

    return render


def loss_spans(text: str):
    """Character spans the model must produce: from after the `<|assistant|>` prefill (`<think>` or
    `</think>`) up to and including the next stop token."""
    spans = []
    pos = 0
    while True:
        a = text.find("<|assistant|>", pos)
        if a < 0:
            break
        start = a + len("<|assistant|>")
        for pre in ("<think>", "</think>"):
            if text.startswith(pre, start):
                start += len(pre)
                break
        ends = [(text.find(s, start), s) for s in STOP_TOKENS]
        ends = [(e, s) for e, s in ends if e >= 0]
        end = min(ends)[0] + len(min(ends)[1]) if ends else len(text)
        spans.append((start, end))
        pos = end
    return spans


def conversation_text(conv, render):
    text = render(conv["messages"], tools=conv["tools"] or None, enable_thinking=conv["enable_thinking"])
    return text + "<|endoftext|>"


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
def build_tokenizer(texts, vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    return tok


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
    qb, kb, gq, gk, worst = positional_query_keys(c["rope_theta"], d, rot)
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


def causal_doc_mask(doc):
    """doc [B, L] document ids (-1 = padding) -> boolean mask [B, 1, L, L], causal within a document."""
    L = doc.shape[1]
    same = doc[:, :, None] == doc[:, None, :]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    m = same & causal
    m |= torch.eye(L, dtype=torch.bool)  # padding rows attend to themselves (no NaNs)
    return m[:, None]


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------
def last_exchange(conv):
    """The conversation from its last user message on (system prompt kept). Long conversations are
    mostly the ones with 3-call requests; dropping them whole starved training of exactly those."""
    msgs = conv["messages"]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    head = msgs[:1] if msgs[0]["role"] == "system" else []
    return dict(conv, messages=head + msgs[last_user:])


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
                    if len(self.pending[0]) > self.L:  # keep the (multi-call) last exchange, not nothing
                        self.pending = self.encode(last_exchange(conv))
                t, m = self.pending
                if len(t) > self.L:  # still too long: drop
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
    ap.add_argument("--out", default=DEFAULT_OUT)
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
