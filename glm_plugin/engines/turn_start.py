"""Where the model's output starts (inside thinking, in content, or the model decides), from what an engine gives us.

The truth is the rendered prompt (DESIGN "template-aware thinking"): GLM-4.7 ends it with `<|assistant|><think>`,
GLM-4.5/4.6 with `<|assistant|>`, and `enable_thinking=false` or a prefill closes the block. Engines hand parsers
the prompt token ids only on some paths (vLLM streaming), so otherwise we render the checkpoint's own template's
generation prompt with the request's template kwargs, once per (template, kwargs), and read its tail.
Duck-typed over Hugging Face tokenizers; no engine import.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

from glm_plugin.formats import ThinkingSplitter, ThinkingStart, thinking_start_from_prompt

ASSISTANT = "<|assistant|>"
TURN_BOUNDARIES = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
THINK_OPEN = "<think>"

_PROBE_MESSAGES = [{"role": "user", "content": "hi"}]
_probe_cache: dict[tuple, ThinkingStart | None] = {}
_probe_lock = threading.Lock()
_PROBE_CACHE_MAX = 256


def start_of_turn(turn_text: str) -> ThinkingStart:
    """The state after the assistant turn's text so far: the generation prompt's tail plus any prefill.

    `<think>` -> REASONING, `</think>` or `<think></think>` or prefilled answer text -> CONTENT, nothing -> MODEL.
    """
    splitter = ThinkingSplitter(ThinkingStart.MODEL)
    splitter.feed(turn_text)
    if splitter.reasoning_ended:
        return ThinkingStart.CONTENT
    return ThinkingStart.REASONING if THINK_OPEN in turn_text else ThinkingStart.MODEL


def start_from_prompt_text(prompt: str) -> ThinkingStart:
    i = prompt.rfind(ASSISTANT)
    if i < 0:
        return thinking_start_from_prompt(prompt)
    return start_of_turn(prompt[i + len(ASSISTANT):])


def start_from_prompt_ids(tokenizer: Any, prompt_ids: Sequence[int], boundary_ids: frozenset[int]) -> ThinkingStart:
    """Decode only the current turn (after the last turn-boundary token), so the cost is bounded by the prefill."""
    n = len(prompt_ids)
    lo = max(0, n - 4096)
    for i in range(n - 1, lo - 1, -1):
        if prompt_ids[i] in boundary_ids:
            turn = prompt_ids[i:]
            break
    else:
        turn = prompt_ids[-32:]
    text = tokenizer.decode(list(turn), skip_special_tokens=False)
    return start_from_prompt_text(text)


def thinking_requested(chat_template_kwargs: Mapping[str, Any] | None) -> bool:
    """GLM thinking is on unless the request turns it off (`enable_thinking` or `thinking` false)."""
    kwargs = chat_template_kwargs or {}
    return kwargs.get("enable_thinking") is not False and kwargs.get("thinking") is not False


def start_from_template(tokenizer: Any, chat_template_kwargs: Mapping[str, Any] | None) -> ThinkingStart | None:
    """Render the template's generation prompt with these kwargs and read its tail; None if there is no template."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not isinstance(template, str) or not template:
        return None
    kwargs = dict(chat_template_kwargs or {})
    key = (id(tokenizer), hash(template), repr(sorted(kwargs.items(), key=lambda kv: kv[0])))
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    try:
        prompt = tokenizer.apply_chat_template(
            _PROBE_MESSAGES, tokenize=False, add_generation_prompt=True, **kwargs
        )
        start = start_from_prompt_text(prompt) if isinstance(prompt, str) else None
    except Exception:  # a template that needs more than one user message: fall back to the request flags
        start = None
    with _probe_lock:
        if len(_probe_cache) >= _PROBE_CACHE_MAX:
            _probe_cache.clear()
        _probe_cache[key] = start
    return start


def default_start(tokenizer: Any, chat_template_kwargs: Mapping[str, Any] | None) -> ThinkingStart:
    """The start state when the prompt itself is not available: the template's, else the request's flags."""
    start = start_from_template(tokenizer, chat_template_kwargs)
    if start is not None:
        return start
    return ThinkingStart.REASONING if thinking_requested(chat_template_kwargs) else ThinkingStart.CONTENT


def start_after_prefill(start: ThinkingStart, prefill: str) -> ThinkingStart:
    """The state once an assistant prefill (continue_final_message) has been rendered after the generation prompt."""
    if not prefill:
        return start
    if start is ThinkingStart.CONTENT:
        return start
    splitter = ThinkingSplitter(start)
    splitter.feed(prefill)
    if splitter.reasoning_ended:
        return ThinkingStart.CONTENT
    if start is ThinkingStart.REASONING or THINK_OPEN in prefill:
        return ThinkingStart.REASONING
    return ThinkingStart.MODEL
