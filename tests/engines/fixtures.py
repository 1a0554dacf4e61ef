"""Format cases replayed through both engines' interfaces: (model output, tools, start state) -> expected turn.

Each case states what a client must receive: reasoning, content, and the calls as (name, arguments). The same
texts are valid input for `glm_plugin.formats.parse_output`, and the engine tests also check that the engines
agree with it byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from glm_plugin.formats import ThinkingStart

REASONING, CONTENT, MODEL = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL


def tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": name.replace("_", " "),
                                             "parameters": {"type": "object", "properties": properties}}}


WEATHER = tool("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}})
TIME = tool("get_time", {})
CONFIGURE = tool("configure", {
    "count": {"type": "integer"},
    "ratio": {"type": "number"},
    "verbose": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "options": {"type": "object"},
    "label": {"type": "string"},
})
TOOLS = [WEATHER, TIME, CONFIGURE]


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    start: ThinkingStart
    reasoning: str | None
    content: str | None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=lambda: TOOLS)
    # A GLM-5.x case: the template (tests/support/glm_templates.py) and the request's switches that give `start`;
    # `messages` is the conversation before the turn (a lone user message when None).
    template: str | None = None
    switches: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None


CASES = [
    Case(
        "glm47_inline_call_after_thinking",
        "I need the forecast for Paris.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris"
        "</arg_value><arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
        REASONING, "I need the forecast for Paris.", None, [("get_weather", {"city": "Paris", "days": 3})],
    ),
    Case(
        "glm45_newline_layout_two_calls",
        "\n<think>need two calls</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
        "</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>\n<tool_call>get_weather\n"
        "<arg_key>city</arg_key>\n<arg_value>Rome</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n"
        "</tool_call>",
        MODEL, "need two calls", None,
        [("get_weather", {"city": "Paris", "days": 3}), ("get_weather", {"city": "Rome", "days": 3})],
    ),
    Case(
        "zero_arg_call_inline",
        "The user wants the time.</think><tool_call>get_time</tool_call>",
        REASONING, "The user wants the time.", None, [("get_time", {})],
    ),
    Case(
        "zero_arg_call_newline",
        "<think>time please</think>\n<tool_call>get_time\n</tool_call>",
        MODEL, "time please", None, [("get_time", {})],
    ),
    Case(
        "two_calls_back_to_back",
        "Two cities.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>"
        "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Bergen</arg_value></tool_call>",
        REASONING, "Two cities.", None, [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})],
    ),
    Case(
        "call_inside_thinking",
        "Let me check the weather first.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value>"
        "</tool_call>",
        REASONING, "Let me check the weather first.", None, [("get_weather", {"city": "Oslo"})],
    ),
    Case(
        "prose_about_the_tag_inside_thinking",
        "Calls are wrapped in <tool_call> tags, then a name.</think>No call is needed.",
        REASONING, "Calls are wrapped in <tool_call> tags, then a name.", "No call is needed.",
    ),
    Case(
        "typed_arguments",
        "Configuring.</think><tool_call>configure<arg_key>count</arg_key><arg_value>5</arg_value>"
        "<arg_key>ratio</arg_key><arg_value>0.25</arg_value><arg_key>verbose</arg_key><arg_value>true</arg_value>"
        "<arg_key>tags</arg_key><arg_value>[\"a\", \"b c\"]</arg_value><arg_key>options</arg_key>"
        "<arg_value>{\"depth\": 2, \"mode\": \"fast\"}</arg_value><arg_key>label</arg_key><arg_value>007"
        "</arg_value></tool_call>",
        REASONING, "Configuring.", None,
        [("configure", {"count": 5, "ratio": 0.25, "verbose": True, "tags": ["a", "b c"],
                        "options": {"depth": 2, "mode": "fast"}, "label": "007"})],
    ),
    Case(
        "declared_string_that_looks_like_json",
        "</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>{\"not\": \"json\"} & <b>"
        "</arg_value></tool_call>",
        REASONING, None, None, [("get_weather", {"city": "{\"not\": \"json\"} & <b>"})],
    ),
    Case(
        "undeclared_tool_name",
        "Trying something.</think><tool_call>delete_everything<arg_key>path</arg_key><arg_value>/tmp/x"
        "</arg_value></tool_call>",
        REASONING, "Trying something.", None, [("delete_everything", {"path": "/tmp/x"})],
    ),
    Case(
        "content_before_and_after_call",
        "Let me look that up.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
        "</tool_call>I will report back.",
        CONTENT, None, "Let me look that up.I will report back.", [("get_weather", {"city": "Paris"})],
    ),
    Case(
        "content_around_call_newline_layout",
        "<think>look it up</think>\nLet me look that up.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
        "<arg_value>Paris</arg_value>\n</tool_call>\nI will report back.",
        MODEL, "look it up", "Let me look that up.\nI will report back.", [("get_weather", {"city": "Paris"})],
    ),
    Case(
        "reasoning_then_answer",
        "The sum of 2 and 2.</think>\n\nThe answer is 4.",
        REASONING, "The sum of 2 and 2.", "The answer is 4.",
    ),
    Case(
        "glm45_direct_answer_without_thinking",
        "The answer is 4.",
        MODEL, None, "The answer is 4.",
    ),
    Case(
        "thinking_disabled",
        "Paris is the capital of France.",
        CONTENT, None, "Paris is the capital of France.",
    ),
    Case(
        "call_cut_off_by_max_tokens",
        "Checking.</think><tool_call>get_weather<arg_key>days</arg_key><arg_value>2</arg_value><arg_key>city"
        "</arg_key><arg_value>San Fra",
        REASONING, "Checking.", None, [("get_weather", {"days": 2, "city": "San Fra"})],
    ),
    Case(
        "unicode_and_escapes_in_value",
        "</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>北京 \"quoted\"\n\ttab\\slash"
        "</arg_value></tool_call>",
        REASONING, None, None, [("get_weather", {"city": "北京 \"quoted\"\n\ttab\\slash"})],
    ),
]

# GLM-5.x, served through the same parser names (vLLM's and SGLang's recipes: --tool-call-parser glm47
# --reasoning-parser glm45). The wire format is GLM-4.7's; where a turn starts comes from each template's switches.
GLM5, GLM51, GLM52, GLM53, GLM53_FLASH = "glm-5", "glm-5.1", "glm-5.2", "glm-5.3.rebuilt", "glm-5.3-flash-effort-none"
OSLO_BERGEN = ("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call><tool_call>"
               "get_weather<arg_key>city</arg_key><arg_value>Bergen</arg_value></tool_call>")
TWO_RESULTS = [
    {"role": "user", "content": "Weather in Oslo and Bergen?"},
    {"role": "assistant", "reasoning_content": "Two cities.", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": c}}}
                    for c in ("Oslo", "Bergen")]},
    {"role": "tool", "content": "sunny"},
    {"role": "tool", "content": "rain"},
]

GLM5_CASES = [
    # GLM-5 and 5.1 switch thinking off with a bare `</think>` (GLM-4.7's), and read no `reasoning_effort`.
    Case("glm5_thinking_then_answer", "The sum of 2 and 2.</think>The answer is 4.", REASONING,
         "The sum of 2 and 2.", "The answer is 4.", template=GLM5),
    Case("glm5_two_calls_after_thinking", "Two cities.</think>" + OSLO_BERGEN, REASONING, "Two cities.", None,
         [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})], template=GLM5),
    Case("glm5_zero_arg_call", "The user wants the time.</think><tool_call>get_time</tool_call>", REASONING,
         "The user wants the time.", None, [("get_time", {})], template=GLM5),
    Case("glm5_enable_thinking_false_call", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo"
         "</arg_value></tool_call>", CONTENT, None, None, [("get_weather", {"city": "Oslo"})], template=GLM5,
         switches={"enable_thinking": False}),
    Case("glm5_after_tool_results", "Oslo sunny, Bergen rain.</think>Oslo is sunny; Bergen has rain.", REASONING,
         "Oslo sunny, Bergen rain.", "Oslo is sunny; Bergen has rain.", template=GLM5, messages=TWO_RESULTS),
    Case("glm51_two_calls_after_thinking", "Two cities.</think>" + OSLO_BERGEN, REASONING, "Two cities.", None,
         [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})], template=GLM51),
    Case("glm51_zero_arg_call", "Checking the clock.</think><tool_call>get_time</tool_call>", REASONING,
         "Checking the clock.", None, [("get_time", {})], template=GLM51),
    Case("glm51_call_inside_thinking", "Let me check first.<tool_call>get_weather<arg_key>city</arg_key>"
         "<arg_value>Oslo</arg_value></tool_call>", REASONING, "Let me check first.", None,
         [("get_weather", {"city": "Oslo"})], template=GLM51),
    Case("glm51_enable_thinking_false", "Paris is the capital of France.", CONTENT, None,
         "Paris is the capital of France.", template=GLM51, switches={"enable_thinking": False}),
    Case("glm51_effort_high_not_read", "Quick check.</think>Done.", REASONING, "Quick check.", "Done.",
         template=GLM51, switches={"reasoning_effort": "high"}),
    Case("glm51_after_tool_results", "Oslo sunny, Bergen rain.</think>Oslo is sunny; Bergen has rain.", REASONING,
         "Oslo sunny, Bergen rain.", "Oslo is sunny; Bergen has rain.", template=GLM51, messages=TWO_RESULTS),
    Case("glm52_thinking_then_answer", "The sum of 2 and 2.</think>The answer is 4.", REASONING,
         "The sum of 2 and 2.", "The answer is 4.", template=GLM52),
    Case("glm52_two_calls_after_thinking", "Two cities.</think>" + OSLO_BERGEN, REASONING, "Two cities.", None,
         [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})], template=GLM52),
    Case("glm52_zero_arg_call", "The user wants the time.</think><tool_call>get_time</tool_call>", REASONING,
         "The user wants the time.", None, [("get_time", {})], template=GLM52),
    Case("glm52_call_inside_thinking", "Let me check first.<tool_call>get_weather<arg_key>city</arg_key>"
         "<arg_value>Oslo</arg_value><arg_key>days</arg_key><arg_value>2</arg_value></tool_call>", REASONING,
         "Let me check first.", None, [("get_weather", {"city": "Oslo", "days": 2})], template=GLM52),
    Case("glm52_enable_thinking_false", "Paris is the capital of France.", CONTENT, None,
         "Paris is the capital of France.", template=GLM52, switches={"enable_thinking": False}),
    Case("glm52_enable_thinking_false_call", "<tool_call>get_weather<arg_key>days</arg_key><arg_value>2"
         "</arg_value></tool_call>", CONTENT, None, None, [("get_weather", {"days": 2})], template=GLM52,
         switches={"enable_thinking": False}),
    Case("glm52_effort_high", "Quick check.</think>Done.", REASONING, "Quick check.", "Done.", template=GLM52,
         switches={"reasoning_effort": "high"}),
    Case("glm52_after_tool_results", "Oslo sunny, Bergen rain.</think>Oslo is sunny; Bergen has rain.", REASONING,
         "Oslo sunny, Bergen rain.", "Oslo is sunny; Bergen has rain.", template=GLM52, messages=TWO_RESULTS),
    # GLM-5.3 has no thinking switch: "off" requests still think, and the reply must still be split.
    Case("glm53_enable_thinking_false_still_thinks", "17*23 = 391</think>391", REASONING, "17*23 = 391", "391",
         template=GLM53, switches={"enable_thinking": False}),
    Case("glm53_effort_none_still_thinks", "Brief.</think>" + OSLO_BERGEN, REASONING, "Brief.", None,
         [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})], template=GLM53,
         switches={"reasoning_effort": "none"}),
    Case("glm53_effort_low_typed_call", "Configuring.</think><tool_call>configure<arg_key>count</arg_key><arg_value>5"
         "</arg_value><arg_key>tags</arg_key><arg_value>[\"a\"]</arg_value></tool_call>", REASONING, "Configuring.",
         None, [("configure", {"count": 5, "tags": ["a"]})], template=GLM53, switches={"reasoning_effort": "low"}),
    Case("glm53_flash_effort_none_closes_thinking", "Answer without thinking.", CONTENT, None,
         "Answer without thinking.", template=GLM53_FLASH, switches={"reasoning_effort": "none"}),
]
