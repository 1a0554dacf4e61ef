"""Rendering conversations through our chat template, the spans the loss covers, and the tokenizer.

Why here: training and evaluation must render and tokenise byte-identically."""

from __future__ import annotations

import json

from glm_plugin.formats.tags import ASSISTANT, THINK_CLOSE, THINK_OPEN
from glm_plugin.formats.tags import SPECIAL_TOKENS as GLM_SPECIAL_TOKENS
from glm_plugin.formats.tags import STOP_TOKENS as GLM_STOP_TOKENS

SPECIAL_TOKENS = list(GLM_SPECIAL_TOKENS)  # the tokenizer's ids follow this order
STOP_TOKENS = list(GLM_STOP_TOKENS)
# Capitalised words, single digits, whitespace and punctuation never carry a leading space; only
# lower-case words do (runs of spaces and punctuation form their own pieces). So "Veloria" is the same tokens after "in " and after "<arg_value>".
PRETOKENIZE_PATTERN = r" ?[a-z]+|[A-Z][a-z]*|[0-9]|[^A-Za-z0-9]+"


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
        a = text.find(ASSISTANT, pos)
        if a < 0:
            break
        start = a + len(ASSISTANT)
        for pre in (THINK_OPEN, THINK_CLOSE):
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
