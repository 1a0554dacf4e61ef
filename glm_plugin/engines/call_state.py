"""The per-call bookkeeping both engines' tool-parser base classes keep, filled from our finished calls.

vLLM and SGLang both diff `prev_tool_call_arr` against `streamed_args_for_tool` at end of stream to send
"remaining" arguments. Ours are always complete when a call ends, so both hold the same final JSON and nothing
is sent twice (docs/formats.md R2.1: out-of-sync copies made vLLM flush stale arguments).
"""

from __future__ import annotations

from typing import Any

from glm_plugin.formats import ToolCallEnd


def record_finished_call(parser: Any, end: ToolCallEnd) -> None:
    while len(parser.prev_tool_call_arr) <= end.index:
        parser.prev_tool_call_arr.append({})
        parser.streamed_args_for_tool.append("")
    parser.prev_tool_call_arr[end.index] = {"name": end.name, "arguments": end.arguments_json}
    parser.streamed_args_for_tool[end.index] = end.arguments_json
    parser.current_tool_id = end.index
