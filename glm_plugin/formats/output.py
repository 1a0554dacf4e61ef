"""A whole GLM turn: the thinking splitter chained into the tool-call parser, streaming or not.

Non-streaming parsing is streaming with one delta, so the two cannot disagree (docs/formats.md R2.1).
"""

from __future__ import annotations

from typing import Any, Iterable

from .events import (
    ContentDelta,
    Event,
    ParsedOutput,
    ReasoningDelta,
    ToolCall,
    ToolCallEnd,
)
from .thinking import ThinkingSplitter, ThinkingStart
from .tool_calls import ToolCallParser


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


def reasoning_and_content(events: Iterable[Event]) -> tuple[str, str]:
    """The reasoning text and the content text among `events` (call events are not text)."""
    reasoning: list[str] = []
    content: list[str] = []
    for event in events:
        kind = type(event)
        if kind is ReasoningDelta:
            reasoning.append(event.text)
        elif kind is ContentDelta:
            content.append(event.text)
    return "".join(reasoning), "".join(content)


def collect_events(events: Iterable[Event]) -> ParsedOutput:
    """Fold a turn's events into the non-streaming result."""
    events = list(events)
    reasoning, text = reasoning_and_content(events)
    calls = [ToolCall(e.name, e.arguments, e.arguments_json, e.complete) for e in events if type(e) is ToolCallEnd]
    return ParsedOutput(reasoning=reasoning or None, content=None if calls and not text else text, tool_calls=calls)


def parse_tool_calls(text: str, tools: Iterable[Any] | None) -> ParsedOutput:
    """Non-streaming parse of content whose reasoning an engine has already split off (both engines' tool stage)."""
    parser = ToolCallParser(tools)
    return collect_events(parser.feed(text) + parser.finish())


def parse_output(
    text: str,
    tools: Iterable[Any] | None = None,
    start: ThinkingStart = ThinkingStart.MODEL,
    finish_reason: str | None = None,
) -> ParsedOutput:
    """Non-streaming parse of a whole turn.

    With `finish_reason == "stop"`, a template-opened thinking block that never closed and holds no call is the
    answer, not reasoning (docs/formats.md R6.4: the model skipped thinking; only a length stop truncates
    reasoning). Streaming cannot take back reasoning it already sent; docs/formats.md records that difference.
    """
    parser = GlmOutputParser(tools, start)
    events = parser.feed(text)
    events.extend(parser.finish())
    result = collect_events(events)
    if (
        finish_reason == "stop"
        and start is ThinkingStart.REASONING
        and not parser.reasoning_ended
        and not result.tool_calls
        and result.reasoning
    ):
        return ParsedOutput(reasoning=None, content=result.reasoning, tool_calls=[])
    return result
