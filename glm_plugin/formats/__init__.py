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
from .output import GlmOutputParser, collect_events, parse_output
from .thinking import ThinkingSplitter, ThinkingStart, thinking_start_from_prompt
from .tool_calls import ToolCallParser

__all__ = [
    "ContentDelta",
    "Event",
    "GlmOutputParser",
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
    "parse_output",
    "thinking_start_from_prompt",
]
