"""GLM's text protocol (thinking, tool calls, typed arguments), engine-neutral and standard-library only."""

from .arguments import ToolSchemaError, ToolSchemas
from .events import (
    ContentDelta,
    Event,
    ParsedOutput,
    ReasoningDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallEnd,
    ToolCallStart,
)
from .output import collect_events, parse_tool_calls, reasoning_and_content
from .thinking import ThinkingSplitter, ThinkingStart
from .turn_start import (
    ends_reasoning,
    start_after_prefill,
    start_from_flags,
    start_of_turn,
    thinking_requested,
    thinking_start_from_prompt,
)
from .tool_calls import ToolCallParser

__all__ = [
    "ContentDelta",
    "Event",
    "ParsedOutput",
    "ReasoningDelta",
    "ThinkingSplitter",
    "ThinkingStart",
    "ToolArgsDelta",
    "ToolCall",
    "ToolCallEnd",
    "ToolCallParser",
    "ToolCallStart",
    "ToolSchemaError",
    "ToolSchemas",
    "collect_events",
    "ends_reasoning",
    "parse_tool_calls",
    "reasoning_and_content",
    "start_after_prefill",
    "start_from_flags",
    "start_of_turn",
    "thinking_requested",
    "thinking_start_from_prompt",
]
