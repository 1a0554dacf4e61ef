"""The rendered prompt's current turn, from what an engine hands a parser: prompt token ids, or only the tokenizer.

Where the output starts is decided by `glm_plugin.formats.turn_start` from the prompt's text. Engines hand parsers
the prompt token ids only on some paths (vLLM streaming); otherwise we render the checkpoint's own template's
generation prompt with the request's template kwargs, once per (template, kwargs), and read that.
Duck-typed over Hugging Face tokenizers; no engine import.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

from glm_plugin.formats import ThinkingStart, start_from_flags, thinking_start_from_prompt

_PROBE_MESSAGES = [{"role": "user", "content": "hi"}]
_probe_cache: dict[tuple, ThinkingStart | None] = {}
_probe_lock = threading.Lock()
_PROBE_CACHE_MAX = 256


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
    return thinking_start_from_prompt(tokenizer.decode(list(turn), skip_special_tokens=False))


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
        start = thinking_start_from_prompt(prompt) if isinstance(prompt, str) else None
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
    return start if start is not None else start_from_flags(chat_template_kwargs)
