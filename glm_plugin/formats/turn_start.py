"""Where the model's output starts (inside thinking, in content, or the model decides): the rules, from text.

The truth is the rendered prompt's current turn (the generation prompt plus any prefill): GLM-4.7 ends the prompt
with `<|assistant|><think>`, GLM-4.5/4.6 with `<|assistant|>`, and `enable_thinking=false` or a prefill closes
the block; never the model name (docs/formats.md R6.1). Both engine adapters call these functions; how they obtain
the prompt text (token ids, the checkpoint's template) is theirs (`glm_plugin.engines.rendered_prompt`).
"""

from __future__ import annotations

from typing import Any, Mapping

from .tags import ASSISTANT, THINK_CLOSE, THINK_OPEN
from .thinking import ThinkingSplitter, ThinkingStart


def ends_reasoning(text: str, start: ThinkingStart = ThinkingStart.REASONING) -> bool:
    """Whether `text`, read from `start`, closes reasoning: `</think>`, a well-formed call (R4.1, not prose about
    the tag, R4.2), or, from MODEL, an answer without thinking. The splitter's own rule, so all callers agree."""
    splitter = ThinkingSplitter(start)
    splitter.feed(text)
    return splitter.reasoning_ended


def start_of_turn(turn_text: str) -> ThinkingStart:
    """The state after the assistant turn's text so far: the generation prompt's tail plus any prefill.

    `<think>` -> REASONING, `</think>` or `<think></think>` or prefilled answer text -> CONTENT, nothing -> MODEL.
    """
    if ends_reasoning(turn_text, ThinkingStart.MODEL):
        return ThinkingStart.CONTENT
    return ThinkingStart.REASONING if THINK_OPEN in turn_text else ThinkingStart.MODEL


def thinking_start_from_prompt(prompt: str) -> ThinkingStart:
    """Where the model's output starts, given the rendered prompt: the text after its last `<|assistant|>` decides;
    a prompt without one (a fragment) is judged by its tail."""
    i = prompt.rfind(ASSISTANT)
    if i >= 0:
        return start_of_turn(prompt[i + len(ASSISTANT):])
    tail = prompt[-64:].rstrip()
    if tail.endswith(THINK_OPEN):
        return ThinkingStart.REASONING
    if tail.endswith(THINK_CLOSE):
        return ThinkingStart.CONTENT
    return ThinkingStart.MODEL


def start_after_prefill(start: ThinkingStart, prefill: str) -> ThinkingStart:
    """The state once an assistant prefill (continue_final_message) has been rendered after the generation prompt."""
    if not prefill or start is ThinkingStart.CONTENT:
        return start
    if ends_reasoning(prefill, start):
        return ThinkingStart.CONTENT
    if start is ThinkingStart.REASONING or THINK_OPEN in prefill:
        return ThinkingStart.REASONING
    return ThinkingStart.MODEL


def thinking_requested(chat_template_kwargs: Mapping[str, Any] | None) -> bool:
    """GLM thinking is on unless the request turns it off (`enable_thinking` or `thinking` false)."""
    kwargs = chat_template_kwargs or {}
    return kwargs.get("enable_thinking") is not False and kwargs.get("thinking") is not False


def start_from_flags(chat_template_kwargs: Mapping[str, Any] | None) -> ThinkingStart:
    """The start state when no prompt text is available at all: the request's thinking switch decides."""
    return ThinkingStart.REASONING if thinking_requested(chat_template_kwargs) else ThinkingStart.CONTENT
