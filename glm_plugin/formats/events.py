"""The events a GLM output stream is parsed into; both engine adapters translate exactly these.

Slotted, mutable dataclasses, not frozen ones: the parser creates one per token-sized delta, and a frozen dataclass
pays for `object.__setattr__` on every construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(slots=True)
class ReasoningDelta:
    """Text inside the thinking block (markers removed)."""

    text: str


@dataclass(slots=True)
class ContentDelta:
    """Visible answer text, including any text that could not be parsed as a tool call."""

    text: str


@dataclass(slots=True)
class ToolCallStart:
    """A call's complete, validated name. Emitted once per call, before any of its argument text."""

    index: int
    name: str


@dataclass(slots=True)
class ToolArgsDelta:
    """A fragment of the call's arguments JSON; a call's fragments concatenate to `ToolCallEnd.arguments_json`."""

    index: int
    text: str


@dataclass(slots=True)
class ToolCallEnd:
    """The call is over. `complete` is False when the stream ended inside it (never reported as complete)."""

    index: int
    name: str
    arguments: dict[str, Any]
    arguments_json: str
    complete: bool = True


Event = Union[ReasoningDelta, ContentDelta, ToolCallStart, ToolArgsDelta, ToolCallEnd]


@dataclass(slots=True)
class ToolCall:
    """One call in a non-streaming result."""

    name: str
    arguments: dict[str, Any]
    arguments_json: str
    complete: bool = True


@dataclass(slots=True)
class ParsedOutput:
    """A whole turn: `content` is None when the turn holds only calls; `reasoning` is None when there was none."""

    reasoning: str | None
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
