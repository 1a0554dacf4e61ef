"""One parser step's events folded into what both engines' streaming deltas carry: the content text, and for each
call the step touched, its name (when it started in this step) and its argument text. Engine-free, so both
adapters translate the same fold into their own delta classes.

A call's argument fragments are joined once per step: an undeclared tool's call is released whole, one fragment
per token, and growing a string per fragment would cost the square of its length (docs/formats.md, undeclared
tool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from glm_plugin.formats import ContentDelta, ToolArgsDelta, ToolCallEnd, ToolCallStart


@dataclass(slots=True)
class CallStep:
    index: int
    name: str | None  # the call started in this step
    arguments: str | None  # argument text that arrived in this step, if any


def fold_step(events: Iterable, on_end: Callable[[ToolCallEnd], None]) -> tuple[list[str], list[CallStep]]:
    """(content pieces, the calls touched, in the order they appeared); `on_end` sees each finished call."""
    content: list[str] = []
    calls: dict[int, CallStep] = {}  # one entry per call index: clients of both engines expect that
    fragments: dict[int, list[str]] = {}
    for event in events:
        kind = type(event)
        if kind is ToolArgsDelta:
            parts = fragments.get(event.index)
            if parts is None:
                parts = fragments[event.index] = []
                if event.index not in calls:
                    calls[event.index] = CallStep(event.index, None, None)
            parts.append(event.text)
        elif kind is ContentDelta:
            content.append(event.text)
        elif kind is ToolCallStart:
            calls[event.index] = CallStep(event.index, event.name, None)
        elif kind is ToolCallEnd:
            on_end(event)
    for index, parts in fragments.items():
        calls[index].arguments = "".join(parts)
    return content, list(calls.values())
