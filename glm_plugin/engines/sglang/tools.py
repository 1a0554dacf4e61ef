"""SGLang tool-call detectors over glm_plugin.formats: `ToolCallParser` events in, SGLang parse results out.

SGLang runs the reasoning detector (`reasoning.py`) first and feeds its normal text here, the same split as our
`ThinkingSplitter` -> `ToolCallParser`. The detectors subclass SGLang's own GLM detectors: `FunctionCallParser`
special-cases `Glm47MoeDetector` instances (full-assistant EBNF grammar for `tool_choice`), and the base classes
keep supplying the structural tags. Only parsing is replaced.

This module is imported from the post-import callback of `function_call_parser`, and `reasoning.py` from that of
`reasoning_parser`; neither may import the other's registry, or its callback would meet a half-imported module.
"""

from __future__ import annotations

from typing import Any, List

from sglang.srt.function_call.core_types import StreamingParseResult, ToolCallItem
from sglang.srt.function_call.glm4_moe_detector import Glm4MoeDetector
from sglang.srt.function_call.glm47_moe_detector import Glm47MoeDetector

from glm_plugin.engines.call_state import record_finished_call
from glm_plugin.engines.step_events import fold_step
from glm_plugin.engines.unvalidated import checked, instance
from glm_plugin.formats import (
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallParser,
    parse_tool_calls,
)
from glm_plugin.formats.tags import CALL_OPEN, STOP_TOKENS, THINK_CLOSE


_new_item = instance(ToolCallItem)
_new_result = instance(StreamingParseResult)


def _fast_args_result(index: int, text: str) -> StreamingParseResult:
    item = _new_item({"tool_index": index, "name": None, "parameters": text}, {"tool_index", "parameters"})
    return _new_result({"normal_text": "", "calls": [item]}, {"calls"})


def _args_result(index: int, text: str) -> StreamingParseResult:
    return StreamingParseResult(calls=[ToolCallItem(tool_index=index, parameters=text)])


def _fast_empty_result() -> StreamingParseResult:
    return _new_result({"normal_text": "", "calls": []}, set())


# One per streamed token of a long argument, so built without validation (glm_plugin.engines.unvalidated); the
# empty one answers each token of an undeclared tool's call, which is held until `</tool_call>`.
args_result = checked(_fast_args_result, _args_result, 2, '"x')
empty_result = checked(_fast_empty_result, StreamingParseResult)


def _tool_specs(tools: List[Any] | None) -> list[dict[str, Any]]:
    return [{"name": tool.function.name, "parameters": tool.function.parameters or {}} for tool in tools or ()]


class _GlmToolDetection:
    """Parsing for both GLM layouts; placed before SGLang's detector in the MRO, which keeps everything else."""

    def __init__(self) -> None:
        super().__init__()
        self._glm_stream: ToolCallParser | None = None

    def has_tool_call(self, text: str) -> bool:
        # SGLang's non-streaming path runs the tool stage only when this is True, while streaming always runs it;
        # the stage is also what drops end-of-turn tokens from content, so without them here a whole answer kept
        # a `<|user|>` that the streamed one dropped; so does a `</think>` after thinking ended (docs/formats.md,
        # "Boundaries"). An answer with no call comes back unchanged otherwise.
        return CALL_OPEN in text or THINK_CLOSE in text or any(token in text for token in STOP_TOKENS)

    def detect_and_parse(self, text: str, tools: List[Any]) -> StreamingParseResult:
        result = parse_tool_calls(text, _tool_specs(tools))
        positions = self._get_tool_indices(tools)  # non-streaming tool_index is the tool's place in the request
        calls = [
            ToolCallItem(tool_index=positions.get(call.name, -1), name=call.name, parameters=call.arguments_json)
            for call in result.tool_calls
        ]
        return StreamingParseResult(normal_text=result.content or "", calls=calls)

    def parse_streaming_increment(self, new_text: str, tools: List[Any]) -> StreamingParseResult:
        if self._glm_stream is None:
            self._glm_stream = ToolCallParser(_tool_specs(tools))
        events = self._glm_stream.feed(new_text)
        if len(events) == 1 and type(events[0]) is ToolArgsDelta:  # the per-token case inside a long argument
            return args_result(events[0].index, events[0].text)
        return self._to_result(events)

    def finish(self, tools: List[Any]) -> StreamingParseResult:
        # SGLang's GLM detectors lose a second call buffered in the last delta here (docs/formats.md R2.2).
        if self._glm_stream is None:
            return empty_result()
        return self._to_result(self._glm_stream.finish())

    def _to_result(self, events: list) -> StreamingParseResult:
        if not events:
            return empty_result()
        normal, steps = fold_step(events, self._record)
        calls = [ToolCallItem(tool_index=step.index, parameters=step.arguments or "") if step.name is None else
                 ToolCallItem(tool_index=step.index, name=step.name, parameters=step.arguments or "")
                 for step in steps]
        return StreamingParseResult(normal_text="".join(normal), calls=calls)

    def _record(self, end: ToolCallEnd) -> None:
        record_finished_call(self, end)


class Glm47ToolDetector(_GlmToolDetection, Glm47MoeDetector):
    """`--tool-call-parser glm47`: GLM-4.7 (inline) and GLM-4.5 (newline) layouts."""


class Glm45ToolDetector(_GlmToolDetection, Glm4MoeDetector):
    """`--tool-call-parser glm45`: same parsing; SGLang's GLM-4.5 structural tags."""
