"""vLLM `ToolParser` adapter: glm_plugin.formats `ToolCallParser` events in, vLLM deltas out.

vLLM's `DelegatingParser` hands us the output once the reasoning parser (`reasoning.py`) reports that reasoning
ended, each delta alone (`engine_based_streaming = True`, see there). vLLM imports this module on the first lookup
of a GLM tool parser name; importing it changes nothing in vLLM (what we patch is in `patches.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.renderers.chat_utils import make_tool_call_id
from vllm.tool_parsers import ToolParser
from vllm.tool_parsers.tool_strict_level import ToolStrictLevel

from glm_plugin.engines.call_state import record_finished_call
from glm_plugin.engines.step_events import fold_step
from glm_plugin.engines.vllm.names import announce_parsers
from glm_plugin.engines.vllm.deltas import args_message, delta_message, text_message
from glm_plugin.formats import (
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallParser,
    parse_tool_calls,
)
from glm_plugin.formats.content_edges import ContentEdges
from glm_plugin.formats.late_close import LateCloseFilter, without_late_closes


def _tool_spec(tool: Any) -> dict[str, Any]:
    """A vLLM request tool (Chat Completions or Responses) as the `{"name", "parameters"}` the core reads."""
    function = getattr(tool, "function", None) or tool
    return {"name": function.name, "parameters": getattr(function, "parameters", None) or {}}


def _passes_through(request: Any) -> bool:
    # Without declared tools, or with tool_choice="none", calls are not parsed: the markup stays content, as in
    # SGLang (and nothing is lost: docs/formats.md); only a second `</think>` is dropped (formats/late_close.py).
    return request is not None and (not getattr(request, "tools", None) or request.tool_choice == "none")


class GlmToolParser(ToolParser):
    """GLM-4.5 and GLM-4.7 tool calls (both layouts), typed by the request's JSON Schema."""

    # Same generation-side settings as vLLM's own glm45/glm47 parser, so swapping parsers changes only parsing.
    supports_required_and_named = False
    structural_tag_model = "glm_4_7"
    default_tool_strict_level = ToolStrictLevel.FUNCTION
    engine_based_streaming = True

    def __init__(self, tokenizer: Any, tools: list | None = None):
        super().__init__(tokenizer, tools)
        self._specs = [_tool_spec(tool) for tool in self.tools]
        ToolCallParser(self._specs)  # a malformed schema fails here, once per request, with the fix named
        self._stream: ToolCallParser | None = None
        self._pass_through: tuple[LateCloseFilter, ContentEdges] | None = None

    def adjust_request(self, request: Any) -> Any:
        request = super().adjust_request(request)
        request.skip_special_tokens = False
        return request

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        if _passes_through(request):
            content = without_late_closes(model_output).strip()
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=content or None)
        result = parse_tool_calls(model_output, self._specs)
        calls = [
            ToolCall(id=make_tool_call_id(), function=FunctionCall(name=call.name, arguments=call.arguments_json))
            for call in result.tool_calls
        ]
        return ExtractedToolCallInformation(tools_called=bool(calls), tool_calls=calls, content=result.content or None)

    def extract_tool_calls_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
        request: Any,
    ) -> DeltaMessage | None:
        stream = self._stream
        if stream is not None and self._pass_through is None:
            events = stream.feed(delta_text)
            if len(events) == 1 and type(events[0]) is ToolArgsDelta:  # the per-token case inside a long argument
                event = events[0]
                return args_message(event.index, event.text)
            return self._to_delta(events)
        if stream is None:
            self._stream = ToolCallParser(self._specs)
            self._pass_through = (LateCloseFilter(), ContentEdges()) if _passes_through(request) else None
        if self._pass_through is not None:
            late, edges = self._pass_through
            text = edges.feed(late.feed(delta_text))
            return text_message(None, text) if text else None
        return self._to_delta(self._stream.feed(delta_text))

    def finish_streaming(self) -> DeltaMessage | None:
        if self._stream is None:
            return None
        if self._pass_through is not None:
            late, edges = self._pass_through
            text = edges.feed(late.finish())
            return text_message(None, text) if text else None
        return self._to_delta(self._stream.finish())

    def _to_delta(self, events: list) -> DeltaMessage | None:
        if not events:
            return None
        content, steps = fold_step(events, self._record)
        calls = []
        for step in steps:
            if step.name is None:
                call = DeltaToolCall(index=step.index, function=DeltaFunctionCall())
            else:
                call = DeltaToolCall(index=step.index, id=make_tool_call_id(), type="function",
                                     function=DeltaFunctionCall(name=step.name))
            if step.arguments is not None:
                call.function.arguments = step.arguments
            calls.append(call)
        return delta_message([], content, calls)

    def _record(self, end: ToolCallEnd) -> None:
        record_finished_call(self, end)


announce_parsers()  # at import, not at registration: by now vLLM's log handler is set up
