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
    import glm_plugin.engines.vllm.parsers  # noqa: F401  (loading the GLM parsers installs the mapping)
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    def kwargs(**fields):
        request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **fields)
        return request.build_chat_params(None, "auto").chat_template_kwargs

    assert kwargs(thinking={"type": "disabled"})["enable_thinking"] is False
    assert kwargs(enable_thinking=False)["enable_thinking"] is False
    assert kwargs(enable_thinking=False, chat_template_kwargs={"enable_thinking": True})["enable_thinking"] is True
    assert "enable_thinking" not in kwargs()


def test_sglang_chat_serving_maps_zai_thinking_for_glm_parsers_only():
    """SGLang's serving_chat needs a CUDA-built torchvision to import here, so its `_process_messages` is stood in
    for; the request is SGLang's real `ChatCompletionRequest` and the wrapper is the one the plugin installs."""
    pytest.importorskip("sglang")
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

    from glm_plugin.engines.sglang import _accept_hosted_thinking_switches

    class OpenAIServingChat:
        def __init__(self, reasoning_parser, tool_call_parser):
            self.reasoning_parser, self.tool_call_parser = reasoning_parser, tool_call_parser

        def _process_messages(self, request, is_multimodal):
            return request.chat_template_kwargs

    module = types.SimpleNamespace(OpenAIServingChat=OpenAIServingChat)
    _accept_hosted_thinking_switches(module)
    wrapped = OpenAIServingChat._process_messages
    _accept_hosted_thinking_switches(module)
    assert OpenAIServingChat._process_messages is wrapped  # idempotent: wrapped once

    def request():
        return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                                     thinking={"type": "disabled"})

    assert OpenAIServingChat("glm45", "glm47")._process_messages(request(), False) == {"enable_thinking": False}
    assert not (OpenAIServingChat("qwen3", "qwen")._process_messages(request(), False) or {})
