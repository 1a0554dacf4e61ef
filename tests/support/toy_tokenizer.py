"""A toy byte-level BPE tokenizer holding GLM's special tokens, for the engine-adapter tests and bench/engine_parsers.py.

The engines' parser paths take token ids as well as text (vLLM's built-in GLM parser only accepts `<tool_call>`
when it arrives as its special-token id), so a realistic stream needs a tokenizer where every GLM marker is one
token and ordinary text is a few characters per token. No GLM checkpoint is needed: the vocabulary is trained in
well under a second from a fixed corpus, so it is the same on every run. `template` picks the generation prompt
of GLM-4.7 (opens `<think>`) or GLM-4.5 (the model opens it); both close it when `enable_thinking` is false.
"""

from __future__ import annotations

import codecs
import functools
from typing import Any

from glm_plugin.formats.tags import END_OF_TEXT, NOTHINK
from glm_plugin.formats.tags import SPECIAL_TOKENS as GLM_SPECIAL_TOKENS

SPECIAL_TOKENS = GLM_SPECIAL_TOKENS + (NOTHINK,)

# Only the end of the prompt matters to the parsers; the turns are rendered as the real templates do.
GLM47_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}</think>{% else %}<think>{% endif %}{% endif %}"
)
GLM45_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}\n<think></think>{% endif %}{% endif %}"
)
TEMPLATES = {"glm47": GLM47_TEMPLATE, "glm45": GLM45_TEMPLATE}

_WORDS = (
    "the weather in Paris and Rome is sunny today I will call the tool to get it need two calls let me think "
    "about what the user wants first then write file path content lines city days unit celsius query limit "
    "return value true false null items name number string object array list of results done here is answer"
).split()
_CODE = 'def f(x):\n    return x < 3 and "a" or \'b\'  # <tag> & more\nline 12: <value> & "quoted"\n{"a": [1, 2.5, -3]}\n'


def _corpus() -> list[str]:
    lines = []
    for i in range(400):
        words = [_WORDS[(i * 7 + j * 13) % len(_WORDS)] for j in range(12)]
        lines.append(" ".join(words) + f" {i} {i * 37 % 1000}.")
        lines.append(_CODE)
    return lines


@functools.lru_cache(maxsize=None)
def toy_glm_tokenizer(template: str = "glm47") -> Any:
    """A `transformers.PreTrainedTokenizerFast` (as the engines load one) with GLM's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t != END_OF_TEXT],
        chat_template=TEMPLATES[template],
    )


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of the byte-level BPE alphabet (GPT-2's printable stand-in for every byte)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_deltas(tokenizer: Any, text: str, tokens_per_delta: int = 1) -> list[tuple[str, list[int]]]:
    """`text` as an engine streams it: (delta_text, delta_token_ids) per step, each marker an atomic id.

    Like the engines' incremental detokenizers, a character split across tokens is emitted with its last byte.
    Linear in len(text), so a benchmark can stream megabytes.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_tokens)
    to_byte = _unicode_to_byte()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    steps: list[tuple[str, list[int]]] = []
    for i in range(0, len(ids), tokens_per_delta):
        out = []
        for piece in pieces[i: i + tokens_per_delta]:
            out.append(piece if piece in special else utf8.decode(bytes(to_byte[c] for c in piece)))
        steps.append(("".join(out), ids[i: i + tokens_per_delta]))
    assert "".join(step[0] for step in steps) == text, "toy tokenizer does not round-trip this text"
    return steps
