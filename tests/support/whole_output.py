"""The test oracle for a whole GLM turn: the package's two stages (ThinkingSplitter, then ToolCallParser on the
content) chained the way both engines chain them, streaming or not. Tests and bench compare each engine's answer
with it; no engine uses it (each runs the two stages in its own reasoning and tool-parser slots).

Non-streaming parsing is streaming with one delta, so the two cannot disagree (docs/formats.md R2.1).
"""

from __future__ import annotations

from typing import Any, Iterable

from glm_plugin.formats import ContentDelta, Event, ParsedOutput, ThinkingSplitter, ThinkingStart, ToolCallParser
from glm_plugin.formats import collect_events


class GlmOutputParser:
    """Streaming parser for one GLM turn: reasoning, content and tool-call events."""

    __slots__ = ("splitter", "tools")

    def __init__(self, tools: Iterable[Any] | None = None, start: ThinkingStart = ThinkingStart.MODEL):
        self.splitter = ThinkingSplitter(start)
        self.tools = ToolCallParser(tools)

    def _route(self, events: list) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if type(event) is ContentDelta:
                out.extend(self.tools.feed(event.text))
            else:
                out.append(event)
        return out

    def feed(self, text: str) -> list[Event]:
        return self._route(self.splitter.feed(text))

    def finish(self) -> list[Event]:
        out = self._route(self.splitter.finish())
        out.extend(self.tools.finish())
        return out

    @property
    def reasoning_ended(self) -> bool:
        return self.splitter.reasoning_ended


def parse_output(text: str, tools: Iterable[Any] | None = None,
                 start: ThinkingStart = ThinkingStart.MODEL) -> ParsedOutput:
    """Non-streaming parse of a whole turn."""
    parser = GlmOutputParser(tools, start)
    return collect_events(parser.feed(text) + parser.finish())
