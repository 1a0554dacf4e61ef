"""Whitespace at the edges of a turn's content is format, not content, also when no tool-call stage runs.

GLM templates render `content.strip()`; `ToolCallParser` trims its content with this class. But an engine
skips its tool-call stage when a request declares no tools, and SGLang's non-streaming path skips it when the text
holds no `<tool_call>`; there the `\\n\\n` after `</think>` would reach the client, and streaming and non-streaming
would disagree. The reasoning adapters pass their content through this trimmer so every path gives the same
content. O(len(delta)); holds back at most the trailing whitespace seen so far.
"""

from __future__ import annotations


class ContentEdges:
    __slots__ = ("_started", "_held")

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def feed(self, text: str) -> str:
        if not text:
            return ""
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        body = text.rstrip()
        if not body:
            self._held += text
            return ""
        out = self._held + body if self._held else body
        self._held = text[len(body):]
        return out

    def finish(self, more_follows: bool = False) -> str:
        """End of this trimmer's part: trailing whitespace is dropped, unless more content follows elsewhere (vLLM
        hands the rest of the stream to the tool parser once reasoning ends), where it is released."""
        held, self._held = self._held, ""
        return held if more_follows else ""
