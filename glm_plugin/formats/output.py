"""Events folded into what the engines return: reasoning and content text, and the non-streaming tool stage.

Non-streaming parsing is streaming with one delta (the same parser, fed once), so the two cannot disagree
(docs/formats.md R2.1).
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
from .tool_calls import ToolCallParser


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
