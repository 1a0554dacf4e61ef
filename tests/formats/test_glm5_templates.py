"""GLM-5.x chat templates, rendered with transformers' Jinja (what vLLM's and SGLang's chat servers call), read by
the wire-format core: where each switch makes a turn start, and parse(template's own rendering of a turn) == turn.

The templates are the publisher's (`templates/README.md`): GLM-5, 5.1 and 5.2 byte-exact, GLM-5.3 rebuilt from its
published lines, and GLM-5.3-Flash's `reasoning_effort="none"` variant derived from it (tests/support/glm_templates.py).
"""

from __future__ import annotations

import hashlib
import json

import pytest
from glm_render import Turn, expected, tools_and_turn
from glm_templates import TEMPLATES, template_text
from hypothesis import given, settings

from glm_plugin.formats import ThinkingStart, thinking_start_from_prompt
from whole_output import parse_output

render_jinja_template = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template

PUBLISHED_SHA256 = {
    "glm-5": "45a1d5635afd3d8e08a28866e72fc8395d2a7ec30989fd0bdaec6dd45a99eff0",
    "glm-5.1": "03b1bbff20331e54647c68167e8ac7f0b5b7ceb40ead372f44826624a9ad79cd",
    "glm-5.2": "172dc74a35e1752df75ecfb2b2cf9326d2852bb1379868ebeec9571654489679",
}
R, C = ThinkingStart.REASONING, ThinkingStart.CONTENT


def rendered(name: str, messages: list[dict], generation_prompt: bool = True, **kwargs) -> str:
    (text,), _ = render_jinja_template(conversations=[messages], chat_template=template_text(name),
                                       add_generation_prompt=generation_prompt, **kwargs)
    return text


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("name", list(PUBLISHED_SHA256))
def test_fixture_is_the_published_bytes(name):
    assert hashlib.sha256((TEMPLATES / f"{name}.jinja").read_bytes()).hexdigest() == PUBLISHED_SHA256[name]


@pytest.mark.parametrize(("name", "kwargs", "start", "effort"), [
    ("glm-5", {}, R, None),
    ("glm-5", {"enable_thinking": True}, R, None),
    ("glm-5", {"enable_thinking": False}, C, None),  # closes with a bare </think>, as GLM-4.7 does
    ("glm-5", {"reasoning_effort": "high"}, R, None),  # no effort levels before 5.2
    ("glm-5.1", {}, R, None),
    ("glm-5.1", {"enable_thinking": False}, C, None),
    ("glm-5.1", {"reasoning_effort": "low"}, R, None),
    ("glm-5.1", {"thinking": False}, R, None),
    ("glm-5.2", {}, R, "Max"),
    ("glm-5.2", {"enable_thinking": True}, R, "Max"),
    ("glm-5.2", {"enable_thinking": False}, C, None),  # closes with <think></think>, no effort line
    ("glm-5.2", {"reasoning_effort": "high"}, R, "High"),
    ("glm-5.2", {"reasoning_effort": "low"}, R, "Max"),  # only "high" lowers it
    ("glm-5.2", {"thinking": False}, R, "Max"),  # not this template's switch
    ("glm-5.3.rebuilt", {}, R, "Max"),
    ("glm-5.3.rebuilt", {"enable_thinking": False}, R, "Max"),  # no switch: thinking always opens
    ("glm-5.3.rebuilt", {"reasoning_effort": "low"}, R, "Low"),
    ("glm-5.3.rebuilt", {"reasoning_effort": "none"}, R, "Max"),
    ("glm-5.3-flash-effort-none", {"reasoning_effort": "none"}, C, "Max"),
    ("glm-5.3-flash-effort-none", {"reasoning_effort": "high"}, R, "High"),
])
def test_where_the_turn_starts_per_switch(name, kwargs, start, effort):
    prompt = rendered(name, USER, **kwargs)
    assert thinking_start_from_prompt(prompt) is start
    line = f"<|system|>Reasoning Effort: {effort}<" if effort else "Reasoning Effort"
    assert (line in prompt) is (effort is not None)


@pytest.mark.parametrize("name", ["glm-5.1", "glm-5.2", "glm-5.3.rebuilt"])
def test_tools_are_declared_as_bare_function_objects(name):
    tool = {"type": "function", "strict": True,
            "function": {"name": "get_time", "description": "now", "parameters": {"type": "object"}}}
    prompt = rendered(name, USER, tools=[tool])
    block = prompt.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(block) == tool["function"]


def test_glm5_declares_tools_whole():
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    block = rendered("glm-5", USER, tools=[tool]).split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(block) == tool


@pytest.mark.parametrize(("name", "kwargs", "kept"), [
    ("glm-5.2", {}, False),
    ("glm-5.2", {"clear_thinking": False}, True),
    ("glm-5.3.rebuilt", {}, True),  # keeps old reasoning by default
    ("glm-5.3.rebuilt", {"clear_thinking": True}, False),
])
def test_clear_thinking_decides_only_the_history(name, kwargs, kept):
    history = USER + [{"role": "assistant", "reasoning_content": "old thought", "content": "Hello."},
                      {"role": "user", "content": "again"}]
    prompt = rendered(name, history, **kwargs)
    assert ("<think>old thought</think>Hello." in prompt) is kept
    assert ("<think></think>Hello." in prompt) is not kept
    assert thinking_start_from_prompt(prompt) is R  # earlier turns' markers decide nothing (R6.5)


@pytest.mark.parametrize("name", ["glm-5", "glm-5.1"])
@pytest.mark.parametrize(("kwargs", "kept"), [({}, False), ({"clear_thinking": True}, False),
                                              ({"clear_thinking": False}, True)])
def test_glm5_and_51_clear_past_reasoning_to_a_bare_close(name, kwargs, kept):
    history = USER + [{"role": "assistant", "reasoning_content": "old thought", "content": "Hello."},
                      {"role": "user", "content": "again"}]
    prompt = rendered(name, history, **kwargs)
    assert ("<|assistant|><think>old thought</think>Hello." in prompt) is kept
    assert ("<|assistant|></think>Hello." in prompt) is not kept
    assert thinking_start_from_prompt(prompt) is R


@pytest.mark.parametrize("name", ["glm-5", "glm-5.1", "glm-5.2", "glm-5.3.rebuilt"])
def test_tool_results_then_the_next_turn(name):
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    history = USER + [{"role": "assistant", "reasoning_content": "need it", "content": "", "tool_calls": [call]},
                      {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "rain"}]
    prompt = rendered(name, history)
    assert prompt.endswith("<|assistant|><think>need it</think><tool_call>get_weather<arg_key>city</arg_key>"
                           "<arg_value>Oslo</arg_value></tool_call><|observation|><tool_response>sunny"
                           "</tool_response><tool_response>rain</tool_response><|assistant|><think>")
    assert thinking_start_from_prompt(prompt) is R


def model_output(name: str, turn: Turn) -> str:
    """What the model writes for `turn`: the template's rendering of it as the last assistant message, after the
    generation prompt (`<|assistant|><think>`)."""
    message = {"role": "assistant", "reasoning_content": turn.reasoning, "content": turn.content,
               "tool_calls": [{"function": {"name": n, "arguments": a}} for n, a in turn.calls]}
    text = rendered(name, USER + [message], generation_prompt=False)
    head = rendered(name, USER)
    if not text.startswith(head):  # GLM-5 renders an empty thought as a bare `</think>`, as GLM-4.7 does
        head = head.removesuffix("<think>")
    assert text.startswith(head)
    return text[len(head):].rstrip("\n")  # the template's trailing newline after calls is not model output


# The call layout itself is property-tested at full count in test_format_properties.py; this checks that the real
# templates render it that way, which a few hundred examples settle (most of the cost is drawing the turn).
@settings(max_examples=100)
@given(tools_and_turn())
def test_parse_inverts_the_templates_own_rendering(case):
    tools, turn = case
    for name in ("glm-5", "glm-5.1", "glm-5.2", "glm-5.3.rebuilt"):
        result = parse_output(model_output(name, turn), tools, R)
        reasoning, content, calls = expected(turn, True)
        assert (result.reasoning, result.content) == (reasoning, content)
        assert [(c.name, c.arguments) for c in result.tool_calls] == calls
