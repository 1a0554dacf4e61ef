"""A `</think>` in content, after thinking ended, is a second close: structure, dropped (docs/formats.md, "Boundaries").

vLLM's `thinking_token_budget` forces `</think>`, and GLM then writes its own (`…</think>1+1=2.</think>1+1=2.`, vLLM
#48201). `ToolCallParser` applies the rule to content it parses; this filter applies it where calls are not parsed
(a request without tools, or with tool_choice "none": vLLM's tool-parser pass-through, SGLang's reasoning detector
when no tool stage follows it): a `</think>` after a `<think>` of the content's own is text (only a turn's start
opens a block), any other is dropped. O(len(delta)).
"""

from __future__ import annotations

from .tags import PARTIAL, THINK_CLOSE, THINK_OPEN, find_marker

_MARKERS = (THINK_OPEN, THINK_CLOSE)


class LateCloseFilter:
    __slots__ = ("_opened", "_pending")

    def __init__(self) -> None:
        self._opened = False  # a <think> of the content's own waits for its </think>
        self._pending = ""  # a possible marker prefix at the end of the last delta

    def feed(self, text: str) -> str:
        if self._pending:
            text, self._pending = self._pending + text, ""
        elif "<" not in text:
            return text
        pieces = []
        pos = 0
        while True:
            i, marker = find_marker(text, pos, _MARKERS)
            if i < 0:
                pieces.append(text[pos:])
                return "".join(pieces)
            pieces.append(text[pos:i])
            if marker is PARTIAL:
                self._pending = text[i:]
                return "".join(pieces)
            if marker == THINK_OPEN or self._opened:
                pieces.append(marker)
                self._opened = marker == THINK_OPEN
            pos = i + len(marker)

    def finish(self) -> str:
        """End of the text: a held marker prefix was text after all."""
        pending, self._pending = self._pending, ""
        return pending


def without_late_closes(text: str) -> str:
    """The rule over a whole text (the non-streaming paths)."""
    late = LateCloseFilter()
    return late.feed(text) + late.finish()
