"""Drive one model output through each engine's own parser interface, the way its serving layer does.

Four paths, each returning a `Turn` (reasoning, content, calls as (name, arguments JSON)):
- vLLM: `ParserManager.get_parser(...)` -> `parse()` (non-streaming) and `parse_delta()` per token (streaming);
- SGLang: `ReasoningParser` -> `FunctionCallParser`, `parse_non_stream()` and `parse_stream_chunk()` per token,
  with the end-of-stream flushes and the "unstreamed arguments" check of `serving_chat.py`.

Engine imports happen inside the functions: `requires_engine` decides first whether the module runs at all.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from glm_templates import template_text
from toy_tokenizer import token_deltas, toy_glm_tokenizer
from glm_plugin.formats import ThinkingStart

MESSAGES = [{"role": "user", "content": "hi"}]


def requires_engine(name: str) -> None:
    """Skip the calling module when the engine is not importable; under CI that is an error instead, because
    `make test` installs both engines and a skip would hide a broken environment."""
    try:
        importlib.import_module(name)
    except ImportError as error:
        if os.environ.get("CI"):
            raise RuntimeError(f"{name} is not importable under CI ({error}); `make test` installs it") from error
        pytest.skip(f"{name} is not importable: {error}", allow_module_level=True)


@dataclass
class Turn:
    reasoning: str | None
    content: str | None
    calls: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def of(reasoning: str | None, content: str | None, calls: list[tuple[str, str]]) -> "Turn":
        return Turn(reasoning or None, content or None, calls)


# Where a case's output starts -> the template and request flags that produce that prompt ending.
TEMPLATE_FOR_START = {
    ThinkingStart.REASONING: ("glm47", {}),
    ThinkingStart.MODEL: ("glm45", {}),
    ThinkingStart.CONTENT: ("glm47", {"enable_thinking": False}),
}


@functools.cache
def template_tokenizer(name: str) -> Any:
    """The toy tokenizer carrying one of the publisher's GLM-5.x templates (tests/support/glm_templates.py)."""
    tokenizer = copy.deepcopy(toy_glm_tokenizer("glm47"))
    tokenizer.chat_template = template_text(name)
    return tokenizer


def tokenizer_for(case: Any) -> tuple[Any, dict[str, Any]]:
    """The tokenizer whose template gives the case's prompt, and the request's switches (`reasoning_effort` is
    sent as the request's top-level field, the rest as `chat_template_kwargs`)."""
    if case.template is not None:
        return template_tokenizer(case.template), dict(case.switches)
    template, kwargs = TEMPLATE_FOR_START[case.start]
    return toy_glm_tokenizer(template), kwargs


def _split(switches: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    kwargs = dict(switches)
    return kwargs, kwargs.pop("reasoning_effort", None)


def prompt_ids(tokenizer: Any, kwargs: dict[str, Any]) -> list[int]:
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, **kwargs)
    return tokenizer.encode(prompt, add_special_tokens=False)


# ---- vLLM ------------------------------------------------------------------------------------------------

def vllm_parser_class(tokenizer: Any, tool: str = "glm47", reasoning: str = "glm45") -> Any:
    from vllm.parser.parser_manager import ParserManager

    return ParserManager.get_parser(
        tool_parser_name=tool, reasoning_parser_name=reasoning, enable_auto_tools=True, tokenizer=tokenizer
    )


def vllm_request(tools: list[dict[str, Any]], switches: dict[str, Any]) -> Any:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    kwargs, effort = _split(switches)
    return ChatCompletionRequest(model="glm", messages=MESSAGES, tools=tools or None,
                                 chat_template_kwargs=kwargs, reasoning_effort=effort)


def vllm_served_kwargs(request: Any) -> dict[str, Any]:
    """The template kwargs vLLM's chat serving renders with and hands the parser (the generation-prompt ones
    included)."""
    return request.build_chat_params(None, "auto").chat_template_kwargs


def _vllm_parser(case: Any, tool: str, reasoning: str) -> tuple[Any, Any, list[int]]:
    tokenizer, switches = tokenizer_for(case)
    request = vllm_request(case.tools, switches)
    served = vllm_served_kwargs(request)
    parser = vllm_parser_class(tokenizer, tool, reasoning)(tokenizer, request.tools, chat_template_kwargs=served)
    request = parser.adjust_request(request)
    prompt = tokenizer.apply_chat_template(case.messages or MESSAGES, tokenize=False, **served)  # the conversation
    return parser, request, tokenizer.encode(prompt, add_special_tokens=False)


def vllm_whole(case: Any, tool: str = "glm47", reasoning: str = "glm45", with_prompt: bool = True) -> Turn:
    parser, request, prompt = _vllm_parser(case, tool, reasoning)
    if with_prompt:
        parser.set_prompt_token_ids(prompt)
    text_reasoning, content, calls = parser.parse(case.text, request, enable_auto_tools=True)
    return Turn.of(text_reasoning, content, [(call.name, call.arguments) for call in calls or ()])


def vllm_stream(case: Any, tokens_per_delta: int = 1, tool: str = "glm47", reasoning: str = "glm45") -> Turn:
    parser, request, prompt = _vllm_parser(case, tool, reasoning)
    tokenizer, _ = tokenizer_for(case)
    steps = token_deltas(tokenizer, case.text, tokens_per_delta)
    reasoning_parts: list[str] = []
    content_parts: list[str] = []
    calls: dict[int, tuple[list[str], list[str]]] = {}  # index -> (name, argument fragments): linear to collect
    for i, (delta_text, delta_ids) in enumerate(steps):
        message = parser.parse_delta(delta_text, delta_ids, request, prompt_token_ids=prompt,
                                     finished=i == len(steps) - 1)
        if message is None:
            continue
        reasoning_parts.append(message.reasoning or "")
        content_parts.append(message.content or "")
        for call in message.tool_calls:
            name, args = calls.setdefault(call.index, ([], []))
            if call.function is not None:
                if call.function.name:
                    assert not name, f"call {call.index}: name sent twice ({name!r}, {call.function.name!r})"
                    assert call.id, "the first delta of a call carries its id"
                    name.append(call.function.name)
                args.append(call.function.arguments or "")
    return Turn.of("".join(reasoning_parts), "".join(content_parts), _joined(calls))


def _joined(calls: dict[int, tuple[list[str], list[str]]]) -> list[tuple[str, str]]:
    return [("".join(name), "".join(args)) for _, (name, args) in sorted(calls.items())]


# ---- SGLang ----------------------------------------------------------------------------------------------

def sglang_tools(tools: list[dict[str, Any]]) -> list[Any]:
    from sglang.srt.entrypoints.openai.protocol import Tool

    return [Tool(**tool) for tool in tools]


def sglang_request(switches: dict[str, Any]) -> Any:
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

    kwargs, effort = _split(switches)
    return ChatCompletionRequest(model="glm", messages=MESSAGES, chat_template_kwargs=kwargs or None,
                                 reasoning_effort=effort)


def _sglang_parsers(case: Any, tool: str, reasoning: str) -> tuple[Any, Any]:
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    tokenizer, switches = tokenizer_for(case)
    request = sglang_request(switches)
    # What serving_chat derives for a glm45 parser (its reasoning_default "enable_thinking"), then passes along.
    force = (request.chat_template_kwargs or {}).get("enable_thinking") is not False
    # serving_chat's _tool_call_parsing_active: tools declared (tool_choice defaults to "auto"); a glm47 tool parser
    # parses nothing without them.
    reasoning_parser = ReasoningParser(reasoning, stream_reasoning=True, force_reasoning=force, request=request,
                                       tokenizer=tokenizer, tool_call_parser_active=bool(case.tools))
    tool_parser = FunctionCallParser(sglang_tools(case.tools), tool, tokenizer=tokenizer)
    return reasoning_parser, tool_parser


def sglang_whole(case: Any, tool: str = "glm47", reasoning: str = "glm45") -> Turn:
    reasoning_parser, tool_parser = _sglang_parsers(case, tool, reasoning)
    text_reasoning, normal = reasoning_parser.parse_non_stream(case.text)
    calls: list[tuple[str, str]] = []
    if tool_parser.has_tool_call(normal):
        normal, items = tool_parser.parse_non_stream(normal)
        calls = [(item.name, item.parameters) for item in items]
    return Turn.of(text_reasoning, normal, calls)


def sglang_stream(case: Any, tokens_per_delta: int = 1, tool: str = "glm47", reasoning: str = "glm45") -> Turn:
    reasoning_parser, tool_parser = _sglang_parsers(case, tool, reasoning)
    tokenizer, _ = tokenizer_for(case)
    steps = token_deltas(tokenizer, case.text, tokens_per_delta)
    reasoning_parts: list[str] = []
    content_parts: list[str] = []
    calls: dict[int, tuple[list[str], list[str]]] = {}
    for i, (delta_text, _) in enumerate(steps):
        last = i == len(steps) - 1
        text_reasoning, normal = reasoning_parser.parse_stream_chunk(delta_text)
        if last:
            end_reasoning, end_normal = reasoning_parser.parse_stream_end()
            text_reasoning = (text_reasoning or "") + (end_reasoning or "")
            normal = (normal or "") + (end_normal or "")
        reasoning_parts.append(text_reasoning or "")
        normal_text, items = tool_parser.parse_stream_chunk(normal or "")
        if last:
            end_text, end_items = tool_parser.parse_stream_end()
            normal_text = (normal_text or "") + end_text
            items = list(items) + list(end_items)
        content_parts.append(normal_text or "")
        for item in items:
            name, args = calls.setdefault(item.tool_index, ([], []))
            if item.name:
                assert not name, f"call {item.tool_index}: name sent twice"
                name.append(item.name)
            args.append(item.parameters)
    assert _sglang_unstreamed_args(tool_parser.detector) == "", "arguments left for SGLang's end-of-stream flush"
    return Turn.of("".join(reasoning_parts), "".join(content_parts), _joined(calls))


def _sglang_unstreamed_args(detector: Any) -> str:
    """What `OpenAIServingChat._check_for_unstreamed_tool_args` would append after the stream (must be nothing)."""
    if not detector.prev_tool_call_arr or not detector.streamed_args_for_tool:
        return ""
    index = len(detector.prev_tool_call_arr) - 1
    expected = detector.prev_tool_call_arr[index].get("arguments", {})
    expected = expected if isinstance(expected, str) else json.dumps(expected, ensure_ascii=False)
    actual = detector.streamed_args_for_tool[index]
    return expected[len(actual):] if expected.startswith(actual) else ""
