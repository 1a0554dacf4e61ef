"""The rendered prompt's current turn, from what an engine hands a parser: prompt token ids, or only the tokenizer.

Where the output starts is decided by `glm_plugin.formats.turn_start` from the prompt's text. Engines hand parsers
the prompt token ids only on some paths (vLLM streaming); otherwise we render the checkpoint's own template's
generation prompt with the request's template kwargs, once per (template, kwargs), and read that: GLM-5.x
templates decide it from more than `enable_thinking` (GLM-5.3 always opens thinking, variants read
`reasoning_effort`). Duck-typed over Hugging Face tokenizers; no engine import.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Sequence

from glm_plugin.formats import ThinkingStart, start_from_flags, thinking_start_from_prompt

_PROBE_MESSAGES = [{"role": "user", "content": "hi"}]
_probe_cache: dict[tuple, ThinkingStart | None] = {}
_probe_lock = threading.Lock()
_PROBE_CACHE_MAX = 256
# Keys an engine's template kwargs may carry that are arguments of the rendering call, not template variables
# (vLLM's always hold add_generation_prompt / continue_final_message): the probe sets its own.
CALL_KWARGS = frozenset({
    "add_generation_prompt", "continue_final_message", "tokenize", "conversation", "chat_template", "tools",
    "documents", "return_dict", "return_assistant_tokens_mask",
})
_failures_logged: set[int] = set()
_logger = logging.getLogger(__name__)


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


def template_variables(chat_template_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request's template kwargs without the rendering call's own arguments."""
    return {k: v for k, v in (chat_template_kwargs or {}).items() if k not in CALL_KWARGS}


def start_from_template(
    tokenizer: Any, chat_template_kwargs: Mapping[str, Any] | None, log: logging.Logger | None = None
) -> ThinkingStart | None:
    """Render the template's generation prompt with these kwargs and read its tail; None if there is no template
    or it cannot be rendered (logged once per template, on `log`)."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not isinstance(template, str) or not template:
        return None
    kwargs = template_variables(chat_template_kwargs)
    key = (id(tokenizer), hash(template), repr(sorted(kwargs.items(), key=lambda kv: kv[0])))
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    try:
        prompt = tokenizer.apply_chat_template(
            _PROBE_MESSAGES, tokenize=False, add_generation_prompt=True, **kwargs
        )
        start = thinking_start_from_prompt(prompt) if isinstance(prompt, str) else None
    except Exception as error:  # noqa: BLE001 - any template error: the request's flags decide instead
        start = None
        _log_failure_once(hash(template), error, log or _logger)
    with _probe_lock:
        if len(_probe_cache) >= _PROBE_CACHE_MAX:
            _probe_cache.clear()
        _probe_cache[key] = start
    return start


def _log_failure_once(template_key: int, error: Exception, log: logging.Logger) -> None:
    with _probe_lock:
        if template_key in _failures_logged:
            return
        _failures_logged.add(template_key)
    log.warning(
        "glm_plugin: the chat template cannot render a one-user-message generation prompt (%s: %s), so where a "
        "reply starts (thinking or answer) is taken from the request's enable_thinking when the engine does not "
        "pass the prompt; serve a template that renders [{\"role\": \"user\", ...}] with "
        "add_generation_prompt=True", type(error).__name__, error)


def default_start(
    tokenizer: Any, chat_template_kwargs: Mapping[str, Any] | None, log: logging.Logger | None = None
) -> ThinkingStart:
    """The start state when the prompt itself is not available: the template's, else the request's flags."""
    start = start_from_template(tokenizer, chat_template_kwargs, log)
    return start if start is not None else start_from_flags(chat_template_kwargs)
