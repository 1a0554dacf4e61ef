"""The `<think>…</think>` splitter, and where a turn starts, read from the rendered prompt.

GLM-4.5/4.6 let the model open `<think>` itself; GLM-4.7's generation prompt already opens it, so the model only
closes it; `enable_thinking=false` pre-fills a closed block. The start state therefore comes from the end of the
rendered prompt, never from the model name (failure-modes R6.1). A `<tool_call>` ends reasoning implicitly: calls
emitted inside thinking are still calls (R4.1); the tag is handed on, verbatim, as content for the tool stage.
"""

from __future__ import annotations

import enum

from .events import ContentDelta, ReasoningDelta
from .tags import CALL_OPEN, PARTIAL, STOP_TOKENS, THINK_CLOSE, THINK_OPEN, find_marker


class ThinkingStart(enum.Enum):
    REASONING = "reasoning"  # the prompt ends inside an opened <think> (GLM-4.7 default)
    CONTENT = "content"  # the prompt closed thinking (`</think>` or `<think></think>` prefill)
    MODEL = "model"  # the model opens <think> itself, or answers directly (GLM-4.5/4.6)


def thinking_start_from_prompt(prompt: str) -> ThinkingStart:
    """Where the model's output starts, given the rendered prompt (its tail is enough)."""
    tail = prompt[-64:].rstrip()
    if tail.endswith(THINK_OPEN):
        return ThinkingStart.REASONING
    if tail.endswith(THINK_CLOSE):
        return ThinkingStart.CONTENT
    return ThinkingStart.MODEL


_DECIDE, _REASONING_START, _REASONING, _CONTENT = range(4)
_DECIDE_MARKERS = (THINK_OPEN,)
_START_MARKERS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN) + STOP_TOKENS
_REASONING_MARKERS = (THINK_CLOSE, CALL_OPEN) + STOP_TOKENS


class ThinkingSplitter:
    """Splits output text into reasoning and content, one delta at a time.

    Reasoning is stripped of the whitespace that touches its markers (templates render `reasoning.strip()`);
    content passes through untouched, for the tool-call stage to handle. `feed` costs O(len(delta)).
    """

    __slots__ = ("_state", "_pending", "_ws", "reasoning_ended")

    def __init__(self, start: ThinkingStart = ThinkingStart.MODEL):
        self._state = {ThinkingStart.MODEL: _DECIDE, ThinkingStart.REASONING: _REASONING_START}.get(start, _CONTENT)
        self._pending = ""  # unconsumed text: a possible marker prefix, or leading whitespace while deciding
        self._ws = ""  # reasoning whitespace held back until we know it is not trailing
        self.reasoning_ended = start is ThinkingStart.CONTENT

    def feed(self, text: str) -> list[ReasoningDelta | ContentDelta]:
        if self._state == _CONTENT and not self._pending:
            return [ContentDelta(text)] if text else []
        out: list[ReasoningDelta | ContentDelta] = []
        text = self._pending + text
        self._pending = ""
        pos = 0
        n = len(text)
        while pos < n:
            state = self._state
            if state == _CONTENT:
                out.append(ContentDelta(text[pos:]))
                break
            if state == _DECIDE:
                stripped = len(text) - len(text[pos:].lstrip())
                if stripped == n:
                    self._pending = text[pos:]
                    break
                if text.startswith(THINK_OPEN, stripped):
                    self._state = _REASONING_START
                    pos = stripped + len(THINK_OPEN)
                elif THINK_OPEN.startswith(text[stripped:]):
                    self._pending = text[pos:]
                    break
                else:
                    self._state = _CONTENT
                    self.reasoning_ended = True
                continue
            if state == _REASONING_START:
                stripped = len(text) - len(text[pos:].lstrip())
                if stripped == n:
                    break  # leading whitespace of reasoning is dropped
                pos = stripped
            markers = _START_MARKERS if state == _REASONING_START else _REASONING_MARKERS
            i, marker = find_marker(text, pos, markers)
            if i < 0:
                self._reasoning(out, text[pos:])
                break
            if i > pos:
                self._reasoning(out, text[pos:i])
                if self._state != state:  # reasoning began before the marker: rescan with the right markers
                    pos = i
                    continue
            if marker is PARTIAL:
                self._pending = text[i:]
                break
            pos = i + len(marker)
            if marker == THINK_OPEN:
                continue  # a re-opened block at the very start (template and model both opened it)
            if marker in STOP_TOKENS:
                continue
            self._ws = ""
            self._state = _CONTENT
            self.reasoning_ended = True
            if marker == CALL_OPEN:
                pos = i  # the tool stage needs the tag itself
        return out

    def _reasoning(self, out: list, piece: str) -> None:
        body = piece.rstrip()
        if not body:
            if self._state == _REASONING:
                self._ws += piece
            return
        if self._state == _REASONING_START:
            self._state = _REASONING
        out.append(ReasoningDelta(self._ws + body if self._ws else body))
        self._ws = piece[len(body):]

    def finish(self) -> list[ReasoningDelta | ContentDelta]:
        """End of stream: text held as a possible marker prefix was not a marker after all."""
        pending, self._pending = self._pending, ""
        self._ws = ""
        if not pending:
            return []
        if self._state in (_DECIDE, _CONTENT):
            return [ContentDelta(pending)]
        out: list[ReasoningDelta | ContentDelta] = []
        self._reasoning(out, pending)
        return out
