"""Z.ai's and DashScope's thinking switches reach the chat template in both engines (engines/thinking_dialects.py)."""

from __future__ import annotations

import types

import pytest

from glm_plugin.engines.thinking_dialects import ThinkingDialectError, merged_template_kwargs, thinking_switch


@pytest.mark.parametrize(("fields", "switch"), [
    ({}, None),
    ({"thinking": {"type": "enabled"}}, True),
    ({"thinking": {"type": "disabled"}}, False),
    ({"enable_thinking": False}, False),
    ({"enable_thinking": True, "thinking": {"type": "enabled"}}, True),
])
def test_thinking_switch(fields, switch):
    assert thinking_switch(fields) is switch


@pytest.mark.parametrize(("fields", "named"), [
    ({"thinking": "off"}, '"thinking"'),
    ({"thinking": {"type": "auto"}}, '"thinking"'),
    ({"enable_thinking": "no"}, '"enable_thinking"'),
    ({"enable_thinking": True, "thinking": {"type": "disabled"}}, "both on and off"),
])
def test_unreadable_switches_are_refused_by_name(fields, named):
    with pytest.raises(ThinkingDialectError, match=named):
        thinking_switch(fields)


def test_explicit_template_kwargs_win():
    kwargs = {"enable_thinking": True}
    assert merged_template_kwargs(kwargs, {"enable_thinking": False}) is kwargs
    assert merged_template_kwargs(None, {"thinking": {"type": "disabled"}}) == {"enable_thinking": False}


def test_vllm_requests_carry_the_switch_into_template_kwargs():
    pytest.importorskip("vllm")
    import vllm.plugins

    import glm_plugin.engines.vllm.reasoning  # noqa: F401  (a server running the GLM parsers has loaded them)

    vllm.plugins.load_general_plugins()  # the plugin installs the mapping
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    def kwargs(**fields):
        request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **fields)
        return request.build_chat_params(None, "auto").chat_template_kwargs

    assert kwargs(thinking={"type": "disabled"})["enable_thinking"] is False
    assert kwargs(enable_thinking=False)["enable_thinking"] is False
    assert kwargs(enable_thinking=False, chat_template_kwargs={"enable_thinking": True})["enable_thinking"] is True
    assert "enable_thinking" not in kwargs()


def sglang_chat_call(parsers, body):
    """One chat request through the wrapper the plugin installs on SGLang's `OpenAIServingChat.handle_request`.

    SGLang's serving_chat needs a CUDA-built torchvision to import here, so the class is stood in for (its
    `handle_request` returns the template kwargs it was handed); the request is SGLang's real
    `ChatCompletionRequest` built from the body, as SGLang's route builds it, and the raw request is a real
    Starlette `Request` carrying that body."""
    import asyncio
    import json

    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
    from starlette.requests import Request

    from glm_plugin.engines.sglang.patches import accept_hosted_thinking_switches as _accept_hosted_thinking_switches

    class OpenAIServingChat:
        def __init__(self, reasoning_parser, tool_call_parser):
            self.reasoning_parser, self.tool_call_parser = reasoning_parser, tool_call_parser

        async def handle_request(self, request, raw_request):
            return request.chat_template_kwargs

        def create_error_response(self, message):
            return ("400", message)

    module = types.SimpleNamespace(OpenAIServingChat=OpenAIServingChat)
    _accept_hosted_thinking_switches(module)
    wrapped = OpenAIServingChat.handle_request
    _accept_hosted_thinking_switches(module)
    assert OpenAIServingChat.handle_request is wrapped  # idempotent: wrapped once

    data = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}).encode()

    async def receive():
        return {"type": "http.request", "body": data, "more_body": False}

    raw = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                   "headers": [(b"content-type", b"application/json")]}, receive)
    request = ChatCompletionRequest(**json.loads(data))
    assert "enable_thinking" not in (request.model_extra or {})  # what SGLang's model keeps: not DashScope's field
    return asyncio.run(OpenAIServingChat(*parsers).handle_request(request, raw))


@pytest.mark.parametrize("body", [{"thinking": {"type": "disabled"}}, {"enable_thinking": False}],
                         ids=["zai", "dashscope"])
def test_sglang_chat_serving_maps_both_dialects_for_glm_parsers_only(body):
    pytest.importorskip("sglang")
    assert sglang_chat_call(("glm45", "glm47"), body) == {"enable_thinking": False}
    assert not (sglang_chat_call(("qwen3", "qwen"), body) or {})
    explicit = {**body, "chat_template_kwargs": {"enable_thinking": True}}
    assert sglang_chat_call(("glm45", "glm47"), explicit) == {"enable_thinking": True}


def test_sglang_unreadable_switch_is_a_400_naming_the_field():
    pytest.importorskip("sglang")
    status, message = sglang_chat_call(("glm45", "glm47"), {"enable_thinking": "no"})
    assert status == "400" and '"enable_thinking"' in message
    status, message = sglang_chat_call(("glm45", "glm47"), {"enable_thinking": True, "thinking": {"type": "disabled"}})
    assert status == "400" and "both on and off" in message
