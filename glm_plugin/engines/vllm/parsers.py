"""vLLM `ReasoningParser` / `ToolParser` adapters: glm_plugin.formats events in, vLLM delta types out.

vLLM's `ParserManager` composes the two into its `DelegatingParser`: the reasoning parser sees the output until
it reports that reasoning ended, then the tool parser sees the rest. Our `ThinkingSplitter` and `ToolCallParser`
split the work exactly that way, so each adapter owns one of them and only translates events.

Both adapters declare `engine_based_streaming = True`. That is vLLM's contract for "I keep my own state": the
`DelegatingParser` then hands us each delta alone, instead of re-concatenating the whole output text and token
list on every step (quadratic for long outputs), and asks `has_engine_confirmed_reasoning_end()` and
`finish_streaming()` instead of scanning token ids itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.parser.abstract_parser import DelegatingParser, Parser
from vllm.reasoning import ReasoningParser
from vllm.renderers.chat_utils import make_tool_call_id
from vllm.tool_parsers import ToolParser
from vllm.tool_parsers.tool_strict_level import ToolStrictLevel

from glm_plugin.engines.call_state import record_finished_call
from glm_plugin.engines.rendered_prompt import default_start, start_from_prompt_ids
from glm_plugin.engines.thinking_dialects import merged_template_kwargs
from glm_plugin.engines.unvalidated import checked, instance
from glm_plugin.formats import (
    ContentDelta,
    ThinkingSplitter,
    ThinkingStart,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallParser,
    ToolCallStart,
    ends_reasoning,
    parse_tool_calls,
    reasoning_and_content,
)
from glm_plugin.formats.content_edges import ContentEdges
from glm_plugin.formats.tags import CALL_OPEN, THINK_CLOSE, THINK_OPEN, TURN_BOUNDARIES

logger = logging.getLogger("vllm.glm_plugin")  # under "vllm" so vLLM's log handler shows it

_new_message = instance(DeltaMessage)


def _fast_args_message(index: int, text: str, _new=object.__new__, _set=object.__setattr__) -> DeltaMessage:
    # instance() inlined three times: this runs once per token of every streamed argument.
    function = _new(DeltaFunctionCall)
    _set(function, "__dict__", {"name": None, "arguments": text})
    _set(function, "__pydantic_fields_set__", {"arguments"})
    _set(function, "__pydantic_extra__", None)
    _set(function, "__pydantic_private__", None)
    call = _new(DeltaToolCall)
    _set(call, "__dict__", {"id": None, "type": None, "index": index, "function": function})
    _set(call, "__pydantic_fields_set__", {"index", "function"})
    _set(call, "__pydantic_extra__", {})
    _set(call, "__pydantic_private__", None)
    message = _new(DeltaMessage)
    _set(message, "__dict__", {"role": None, "content": None, "reasoning": None, "tool_calls": [call]})
    _set(message, "__pydantic_fields_set__", {"tool_calls"})
    _set(message, "__pydantic_extra__", {})
    _set(message, "__pydantic_private__", None)
    return message


def _fast_text_message(reasoning: str | None, content: str | None) -> DeltaMessage:
    fields = {"reasoning", "content"} if reasoning is not None and content is not None else (
        {"reasoning"} if reasoning is not None else {"content"})
    return _new_message({"role": None, "content": content, "reasoning": reasoning, "tool_calls": []}, fields)


def _args_message(index: int, text: str) -> DeltaMessage:
    return DeltaMessage(tool_calls=[DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=text))])


def _text_message(reasoning: str | None, content: str | None) -> DeltaMessage:
    return DeltaMessage(**{k: v for k, v in (("reasoning", reasoning), ("content", content)) if v is not None})


# One of these per streamed token, so built without validation (glm_plugin.engines.unvalidated).
args_message = checked(_fast_args_message, _args_message, 3, '"x')
text_message = checked(_fast_text_message, _text_message, "r", "c")


class GlmTokenIds:
    """The GLM special-token ids this tokenizer has (None where it lacks one)."""

    __slots__ = ("think_open", "think_close", "call_open", "boundaries", "ends")

    def __init__(self, tokenizer: Any):
        vocab = tokenizer.get_vocab() if tokenizer is not None else {}
        self.think_open = vocab.get(THINK_OPEN)
        self.think_close = vocab.get(THINK_CLOSE)
        self.call_open = vocab.get(CALL_OPEN)
        self.boundaries = frozenset(vocab[t] for t in TURN_BOUNDARIES if t in vocab)
        # A <tool_call> ends reasoning implicitly, exactly as in ThinkingSplitter.
        self.ends = frozenset(i for i in (self.think_close, self.call_open) if i is not None)


@functools.lru_cache(maxsize=16)
def _token_ids(tokenizer: Any) -> GlmTokenIds:
    return GlmTokenIds(tokenizer)  # once per tokenizer: get_vocab() copies the whole vocabulary


def _delta(reasoning: list[str], content: list[str], calls: list[DeltaToolCall] | None = None) -> DeltaMessage | None:
    if calls:
        message = DeltaMessage(tool_calls=calls)
        if content:
            message.content = "".join(content)
        return message
    if not reasoning and not content:
        return None
    return text_message("".join(reasoning) if reasoning else None, "".join(content) if content else None)


class GlmReasoningParser(ReasoningParser):
    """`<think>` splitting for GLM-4.5/4.6/4.7; where a turn starts is read from the prompt, not the model name."""

    engine_based_streaming = True

    def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any):
        super().__init__(tokenizer, *args, **kwargs)
        self._ids = _token_ids(tokenizer)
        self._start = default_start(tokenizer, kwargs.get("chat_template_kwargs"), logger)
        self._splitter: ThinkingSplitter | None = None
        self._edges = ContentEdges()
        self._count_scan: list | None = None  # [position, first reasoning id, end marker], see count_reasoning_tokens

    @property
    def reasoning_start_str(self) -> str:
        return THINK_OPEN

    @property
    def reasoning_end_str(self) -> str:
        return THINK_CLOSE

    # -- the prompt decides where the output starts -------------------------------------------------------

    @property
    def start(self) -> ThinkingStart:
        return self._start

    def set_prompt_token_ids(self, prompt_token_ids: Sequence[int]) -> None:
        """Non-streaming hook (forwarded by `DelegatingParser`, see `forward_prompt_token_ids`)."""
        self._start = start_from_prompt_ids(self.model_tokenizer, prompt_token_ids, self._ids.boundaries)

    def adjust_initial_state_from_prompt(self, prompt_token_ids: Sequence[int]) -> None:
        """Streaming hook: vLLM calls it once, before the first delta, when the prompt left reasoning open."""
        if self._splitter is None:
            self.set_prompt_token_ids(prompt_token_ids)

    def adjust_request(self, request: Any) -> Any:
        request.skip_special_tokens = False  # the GLM markers are special tokens; the parser needs to see them
        return request

    # -- token-id queries (structured output after thinking, usage accounting) -----------------------------

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        """Pure function of the ids: scan back over the current turn for the marker that decides it."""
        ids = self._ids
        if not ids.ends:
            return False
        for i in range(len(input_ids) - 1, -1, -1):
            token = input_ids[i]
            if token == ids.think_close or (token == ids.call_open and self._opens_call(input_ids, i)):
                return True
            if token == ids.think_open:
                return False
            if token in ids.boundaries:
                # No marker in this turn yet: the model answered directly if it wrote anything (GLM-4.5 style).
                return self._answered_directly(input_ids[i + 1:])
        return False

    def _decode(self, ids: Sequence[int]) -> str:
        return self.model_tokenizer.decode(list(ids), skip_special_tokens=False)

    def _answered_directly(self, turn_ids: Sequence[int]) -> bool:
        head = turn_ids[:64]  # bounded: the first non-blank text decides, as in ThinkingSplitter
        return bool(head) and bool(self._decode(head).strip())

    def _opens_call(self, input_ids: Sequence[int], at: int) -> bool:
        """Whether the `<tool_call>` at `at` starts a call, by the splitter's own rule: prose about the tag inside
        reasoning is not a call (docs/formats.md R4.2). Looks at a bounded window after the tag."""
        return ends_reasoning(self._decode(input_ids[at:at + 64]))

    def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids: Iterable[int]) -> bool:
        if self._ids.think_close in delta_ids:
            return True
        return self.is_reasoning_end(input_ids)

    def _reasoning_end_at(self, input_ids: Sequence[int]) -> tuple[int, int] | None:
        """(index of the first marker ending reasoning, its token) in generated ids, or None."""
        ids = self._ids
        for i, token in enumerate(input_ids):
            if token == ids.think_close or (token == ids.call_open and self._opens_call(input_ids, i)):
                return i, token
        return None

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        end = self._reasoning_end_at(input_ids)
        if end is None:
            return input_ids if self._start is ThinkingStart.CONTENT else []
        i, token = end
        return input_ids[i + 1:] if token == self._ids.think_close else input_ids[i:]  # a call's tag is content

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """Reasoning tokens among the generated ids. vLLM calls this on every streamed chunk with continuous usage
        stats, each time with all ids so far, so the scan resumes where the previous call stopped."""
        ids = self._ids
        if self._start is ThinkingStart.CONTENT or not ids.ends:
            return 0
        scan = self._count_scan
        if scan is None or len(token_ids) < scan[0]:
            scan = self._count_scan = [0, 0 if self._start is ThinkingStart.REASONING else None, None]
        pos, first, end = scan
        n = len(token_ids)
        while end is None and pos < n:
            token = token_ids[pos]
            if token == ids.think_close:
                end = pos
            elif token == ids.call_open:
                if self._opens_call(token_ids, pos):
                    end = pos
                elif n - pos < 64:
                    break  # the splitter's rule may still make it a call: look again when more ids arrived
            elif token == ids.think_open and first is None:
                first = pos + 1  # GLM-4.5: reasoning starts after the model's own <think>
            if end is None:
                pos += 1
        scan[:] = [pos, first, end]
        return 0 if first is None else max(0, (pos if end is None else end) - first)

    # -- text ----------------------------------------------------------------------------------------------

    def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
        splitter = ThinkingSplitter(self._start)
        reasoning, content = reasoning_and_content(splitter.feed(model_output) + splitter.finish())
        return reasoning or None, content.strip() or None

    def extract_reasoning_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ) -> DeltaMessage | None:
        if self._splitter is None:
            self._splitter = ThinkingSplitter(self._start)
        return self._to_delta(self._splitter.feed(delta_text))

    def has_engine_confirmed_reasoning_end(self) -> bool:
        return self._splitter is not None and self._splitter.reasoning_ended

    def finish_streaming(self) -> DeltaMessage | None:
        if self._splitter is None:
            return None
        # Called when reasoning ends (the tool parser takes the rest of the stream) or when the stream ends.
        return self._to_delta(self._splitter.finish(), self._edges.finish(more_follows=self._splitter.reasoning_ended))

    def _to_delta(self, events: list, tail: str = "") -> DeltaMessage | None:
        if not events and not tail:
            return None
        reasoning, content = reasoning_and_content(events)
        content = self._edges.feed(content) + tail
        return _delta([reasoning] if reasoning else [], [content] if content else [])


def _tool_spec(tool: Any) -> dict[str, Any]:
    """A vLLM request tool (Chat Completions or Responses) as the `{"name", "parameters"}` the core reads."""
    function = getattr(tool, "function", None) or tool
    return {"name": function.name, "parameters": getattr(function, "parameters", None) or {}}


def _passes_through(request: Any) -> bool:
    # Without declared tools, or with tool_choice="none", calls are not parsed: the markup stays content, as in
    # SGLang (and nothing is lost: docs/formats.md).
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
        self._pass_through: ContentEdges | None = None

    def adjust_request(self, request: Any) -> Any:
        request = super().adjust_request(request)
        request.skip_special_tokens = False
        return request

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        if _passes_through(request):
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output.strip() or None)
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
            self._pass_through = ContentEdges() if _passes_through(request) else None
        if self._pass_through is not None:
            text = self._pass_through.feed(delta_text)
            return text_message(None, text) if text else None
        return self._to_delta(self._stream.feed(delta_text))

    def finish_streaming(self) -> DeltaMessage | None:
        if self._stream is None or self._pass_through is not None:
            return None
        return self._to_delta(self._stream.finish())

    def _to_delta(self, events: list) -> DeltaMessage | None:
        if not events:
            return None
        content: list[str] = []
        calls: dict[int, DeltaToolCall] = {}  # one entry per call index: vLLM clients expect that
        for event in events:
            kind = type(event)
            if kind is ToolArgsDelta:
                function = calls[event.index].function if event.index in calls else None
                if function is None:
                    calls[event.index] = DeltaToolCall(index=event.index, function=DeltaFunctionCall(arguments=event.text))
                else:
                    function.arguments = (function.arguments or "") + event.text
            elif kind is ContentDelta:
                content.append(event.text)
            elif kind is ToolCallStart:
                calls[event.index] = DeltaToolCall(
                    index=event.index, id=make_tool_call_id(), type="function",
                    function=DeltaFunctionCall(name=event.name),
                )
            elif kind is ToolCallEnd:
                self._record(event)
        return _delta([], content, list(calls.values()))

    def _record(self, end: ToolCallEnd) -> None:
        record_finished_call(self, end)


def forward_prompt_token_ids() -> None:
    """Make `DelegatingParser.set_prompt_token_ids` reach a reasoning parser that wants the prompt.

    vLLM 0.32 gives the non-streaming parser the prompt through `Parser.set_prompt_token_ids`, which
    `DelegatingParser` leaves a no-op, so a composed reasoning parser never sees it (streaming has
    `adjust_initial_state_from_prompt`). Patched only while vLLM has not implemented it itself; other parsers
    are unaffected (they have no `set_prompt_token_ids`).
    """
    if DelegatingParser.set_prompt_token_ids is not Parser.set_prompt_token_ids:
        return

    def set_prompt_token_ids(self: DelegatingParser, prompt_token_ids: Sequence[int]) -> None:
        hook = getattr(self._reasoning_parser, "set_prompt_token_ids", None)
        if hook is not None:
            hook(prompt_token_ids)

    DelegatingParser.set_prompt_token_ids = set_prompt_token_ids


def accept_hosted_thinking_switches() -> None:
    """Read Z.ai's `thinking: {"type": ...}` and DashScope's top-level `enable_thinking` as the template's switch.

    vLLM keeps unknown request fields (`model_extra`) and reads only `chat_template_kwargs`; both the parser set-up
    and the renderer get the kwargs from `ChatCompletionRequest.build_chat_params`, so we fill them in there, once
    per request. Installed when this module loads, i.e. only in servers that use the GLM parsers.
    """
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    original = ChatCompletionRequest.build_chat_params
    if getattr(original, "glm_plugin", False):
        return

    def build_chat_params(self: ChatCompletionRequest, *args: Any, **kwargs: Any) -> Any:
        merged = merged_template_kwargs(self.chat_template_kwargs, self.model_extra or {})
        if merged is not self.chat_template_kwargs:
            self.chat_template_kwargs = merged
        return original(self, *args, **kwargs)

    build_chat_params.glm_plugin = True  # type: ignore[attr-defined]
    ChatCompletionRequest.build_chat_params = build_chat_params


forward_prompt_token_ids()
accept_hosted_thinking_switches()
logger.info(
    "glm_plugin: tool-call parsers glm45, glm47 and reasoning parsers glm45, glm47 are glm_plugin's "
    "(GLM_PLUGIN_DISABLE=parsers restores vLLM's)"
)
