"""A whole GLM turn: the thinking splitter chained into the tool-call parser, streaming or not.

Non-streaming parsing is streaming with one delta, so the two cannot disagree (failure-modes R2.1).
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


def collect_events(events: Iterable[Event]) -> ParsedOutput:
    """Fold a turn's events into the non-streaming result."""
    reasoning: list[str] = []
    content: list[str] = []
    calls: list[ToolCall] = []
    for event in events:
        kind = type(event)
        if kind is ReasoningDelta:
            reasoning.append(event.text)
        elif kind is ContentDelta:
            content.append(event.text)
        elif kind is ToolCallEnd:
            calls.append(ToolCall(event.name, event.arguments, event.arguments_json, event.complete))
    text = "".join(content)
    return ParsedOutput(
        reasoning="".join(reasoning) or None,
        content=None if calls and not text else text,
        tool_calls=calls,
    )


def parse_output(
    text: str,
    tools: Iterable[Any] | None = None,
    start: ThinkingStart = ThinkingStart.MODEL,
    finish_reason: str | None = None,
) -> ParsedOutput:
    """Non-streaming parse of a whole turn.

    With `finish_reason == "stop"`, a template-opened thinking block that never closed and holds no call is the
    answer, not reasoning (failure-modes R6.4: the model skipped thinking; only a length stop truncates
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
