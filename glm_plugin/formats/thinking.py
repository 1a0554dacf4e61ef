"""The `<think>…</think>` splitter (where a turn starts is `turn_start.py`'s business).

GLM-4.5/4.6 let the model open `<think>` itself; GLM-4.7's generation prompt already opens it, so the model only
closes it; `enable_thinking=false` pre-fills a closed block. The start state therefore comes from the end of the
rendered prompt, never from the model name (docs/formats.md R6.1). With thinking off the model sometimes writes a
block anyway (`<think></think>` before a call, or a whole one before its answer: zai-org/GLM-4.5 #142, vLLM PR
#31788): a block that opens the output is split off there too, so its tags never reach content.

A `<tool_call>` ends reasoning implicitly: calls emitted inside thinking are still calls (R4.1); the tag is handed
on, verbatim, as content for the tool stage. But text *about* the tag is not a call: inside reasoning,
`<tool_call>` ends thinking only once a well-formed name region follows it (R4.2), and never inside a fenced code
block or an inline code span, where the model is showing an example (gptme PR #1472, LM Studio #1592).
`</think>` ends reasoning even inside a fence: a fence the model never closed must not swallow its answer.
"""

from __future__ import annotations

import enum
import re

from .events import ContentDelta, ReasoningDelta
from .tags import (
    CALL_CLOSE,
    CALL_OPEN,
    KEY_CLOSE,
    KEY_OPEN,
    MAX_NAME_CHARS,
    PARTIAL,
    STOP_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    VALUE_CLOSE,
    VALUE_OPEN,
    find_marker,
    looks_like_name,
)


class ThinkingStart(enum.Enum):
    REASONING = "reasoning"  # the prompt ends inside an opened <think> (GLM-4.7 default)
    CONTENT = "content"  # the prompt closed thinking (`</think>` or `<think></think>` prefill)
    MODEL = "model"  # the model opens <think> itself, or answers directly (GLM-4.5/4.6)


_DECIDE, _REASONING_START, _REASONING, _CONTENT, _CALL_CHECK = range(5)
_START_MARKERS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN) + STOP_TOKENS
_REASONING_MARKERS = (THINK_CLOSE, CALL_OPEN) + STOP_TOKENS
_NAME_END_MARKERS = (KEY_OPEN, CALL_CLOSE, KEY_CLOSE, VALUE_CLOSE, VALUE_OPEN, CALL_OPEN, THINK_CLOSE)
_CODE_SIGNS = re.compile("`+|\n")
FENCE = 3  # a run of at least this many backticks opens or closes a fenced code block


def _opens_call(region: str, marker: str) -> bool:
    """Whether `<tool_call>` + region + marker starts a call (possibly one the tool stage must recover)."""
    if marker in (KEY_OPEN, CALL_CLOSE, VALUE_CLOSE):
        return looks_like_name(region.strip())
    if marker == KEY_CLOSE:  # name and key run together, with or without whitespace between them
        return 1 <= len(region.split()) <= 2 and all(looks_like_name(p) for p in region.split())
    return False


class ThinkingSplitter:
    """Splits output text into reasoning and content, one delta at a time.

    Reasoning is stripped of the whitespace that touches its markers (templates render `reasoning.strip()`);
    content passes through untouched, for the tool-call stage to handle. `feed` costs O(len(delta)).
    """

    __slots__ = ("_state", "_pending", "_ws", "_region", "_ticks", "_fenced", "_inline", "reasoning_ended")

    def __init__(self, start: ThinkingStart = ThinkingStart.MODEL):
        # Thinking off (CONTENT) decides like MODEL: only a block that opens the output is reasoning.
        self._state = _REASONING_START if start is ThinkingStart.REASONING else _DECIDE
        self._pending = ""  # unconsumed text: a possible marker prefix, or leading whitespace while deciding
        self._ws = ""  # reasoning whitespace held back until we know it is not trailing
        self._region = ""  # text after a <tool_call> met inside reasoning, until we know it is a call
        self._ticks = 0  # length of the run of backticks that ends the reasoning so far
        self._fenced = False  # inside a fenced code block of the reasoning
        self._inline = False  # inside an inline `code` span of the reasoning
        self.reasoning_ended = False

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
            if state == _CALL_CHECK:
                i, marker = find_marker(text, pos, _NAME_END_MARKERS)
                end = n if i < 0 else i
                if len(self._region) + end - pos > MAX_NAME_CHARS:
                    marker = None  # too long for a name: prose
                else:
                    self._region += text[pos:end]
                    if i < 0:
                        break
                    if marker is PARTIAL:
                        self._pending = text[i:]
                        break
                    pos = i
                    if _opens_call(self._region, marker):
                        out.append(ContentDelta(CALL_OPEN + self._region))
                        self._region = ""
                        self._state = _CONTENT
                        self._ws = ""
                        self.reasoning_ended = True
                        continue
                # Not a call: the tag was reasoning text; rescan what followed it (at most a name's length).
                text = self._region + text[pos:]
                pos, n = 0, len(text)
                self._region = ""
                self._state = _REASONING
                self._reasoning(out, CALL_OPEN)
                continue
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
            if marker == CALL_OPEN:
                self._end_run()
                if self._fenced or self._inline:  # an example in a fence or in `code`: text, not a call
                    self._reasoning(out, CALL_OPEN)
                else:
                    self._state = _CALL_CHECK
                continue
            self._ws = ""
            self._state = _CONTENT
            self.reasoning_ended = True
        return out

    def _reasoning(self, out: list, piece: str) -> None:
        self._track_code(piece)
        body = piece.rstrip()
        if not body:
            if self._state == _REASONING:
                self._ws += piece
            return
        if self._state == _REASONING_START:
            self._state = _REASONING
        out.append(ReasoningDelta(self._ws + body if self._ws else body))
        self._ws = piece[len(body):]

    def _track_code(self, piece: str) -> None:
        """Follow code markup across pieces. A run of backticks counts once it is complete (a later character
        ends it, whatever the chunking): FENCE or more open or close a fenced block, fewer an inline span, which
        a newline also ends (an unpaired backtick must not hide the calls of the lines after it)."""
        if "`" not in piece and "\n" not in piece:
            if piece:
                self._end_run()
            return
        pos = 0
        for sign in _CODE_SIGNS.finditer(piece):
            if sign.start() > pos:
                self._end_run()
            if sign.group() == "\n":
                self._end_run()
                self._inline = False
            else:
                self._ticks += sign.end() - sign.start()
            pos = sign.end()
        if pos < len(piece):
            self._end_run()

    def _end_run(self) -> None:
        ticks, self._ticks = self._ticks, 0
        if ticks >= FENCE:
            self._fenced = not self._fenced
            self._inline = False
        elif ticks and not self._fenced:
            self._inline = not self._inline

    def finish(self) -> list[ReasoningDelta | ContentDelta]:
        """End of stream: text held as a possible marker prefix was not a marker after all."""
        pending, self._pending = self._pending, ""
        self._ws = ""
        if self._state == _CALL_CHECK:  # cut off inside what may be a call: the tool stage decides
            region, self._region = self._region, ""
            self._state = _CONTENT
            self.reasoning_ended = True
            return [ContentDelta(CALL_OPEN + region + pending)]
        if not pending:
            return []
        if self._state in (_DECIDE, _CONTENT):
            return [ContentDelta(pending)]
        out: list[ReasoningDelta | ContentDelta] = []
        self._reasoning(out, pending)
        return out
