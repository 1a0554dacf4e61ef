"""Where a turn starts when the engine does not pass the prompt: the checkpoint's template rendered with the
request's own kwargs (glm_plugin/engines/rendered_prompt.py), in both engines; a template that cannot be rendered
is logged once and the request's switch decides."""

from __future__ import annotations

import copy
import logging

import pytest
from drivers import requires_engine, sglang_request, template_tokenizer, vllm_parser_class, vllm_request, \
    vllm_served_kwargs

from glm_plugin.formats import ThinkingStart
from toy_tokenizer import toy_glm_tokenizer

requires_engine("vllm")
requires_engine("sglang")

R, C = ThinkingStart.REASONING, ThinkingStart.CONTENT


@pytest.fixture(scope="module", autouse=True)
def plugins_loaded():
    import sglang.srt.plugins
    import vllm.plugins

    vllm.plugins.load_general_plugins()
    sglang.srt.plugins.load_plugins()


def vllm_start(tokenizer, switches):
    served = vllm_served_kwargs(vllm_request([], switches))
    assert served["add_generation_prompt"] is True  # what made the old probe raise and fall back to the flags
    return vllm_parser_class(tokenizer)(tokenizer, None, chat_template_kwargs=served).reasoning_parser.start


@pytest.mark.parametrize(("template", "switches", "start"), [
    ("glm-5.3.rebuilt", {"enable_thinking": False}, R),  # no switch in the template: it thinks anyway
    ("glm-5.3.rebuilt", {"reasoning_effort": "none"}, R),  # vLLM turns this into enable_thinking=False
    ("glm-5.3-flash-effort-none", {"reasoning_effort": "none"}, C),
    ("glm-5.2", {"enable_thinking": False}, C),
    ("glm-5", {"enable_thinking": False}, C),  # a bare </think>
    ("glm-5.1", {"reasoning_effort": "high"}, R),
    ("glm-5.2", {"reasoning_effort": "high"}, R),
])
def test_both_engines_read_the_template_with_the_requests_kwargs(template, switches, start):
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    tokenizer = template_tokenizer(template)
    assert vllm_start(tokenizer, switches) is start
    request = sglang_request(switches)
    force = (request.chat_template_kwargs or {}).get("enable_thinking") is not False
    detector = ReasoningParser("glm45", force_reasoning=force, request=request, tokenizer=tokenizer).detector
    assert detector.start is start


@pytest.fixture
def records():
    caught: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = caught.append
    loggers = [logging.getLogger("vllm.glm_plugin"), logging.getLogger("glm_plugin.engines.sglang.reasoning")]
    for logger in loggers:
        logger.addHandler(handler)
    yield caught
    for logger in loggers:
        logger.removeHandler(handler)


def test_a_template_that_cannot_render_is_logged_once_per_engine_and_the_switch_decides(records):
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    tokenizer = copy.deepcopy(toy_glm_tokenizer("glm47"))
    tokenizer.chat_template = "{{ raise_exception('a system message is required') }}"
    assert [vllm_start(tokenizer, switches) for switches in ({}, {"enable_thinking": False}, {})] == [R, C, R]
    for force in (True, False):
        ReasoningParser("glm45", force_reasoning=force, request=sglang_request({}), tokenizer=tokenizer)
    messages = [record.getMessage() for record in records]
    assert len(messages) == 1, messages  # once per template, whichever engine asked first
    assert "a system message is required" in messages[0] and "add_generation_prompt=True" in messages[0]
