"""Field cases of structure leaking into what the user reads, through both engines' real parser entry points.

Each case is a shape from a public report (its id in the name): the calls were right, but `</think>`, a thinking-off
`<think>…</think>`, an end-of-turn token or a call's tags reached `content`, or text the model meant as text (a tag
in prose, a call shown in a fenced example) lost characters or became a call. Every case runs through every path of
`test_engine_formats` (vLLM `parse()` / `parse_delta()`, SGLang `parse_non_stream()` / `parse_stream_chunk()`, at
three chunkings) and must equal `glm_plugin.formats.parse_output` byte for byte (docs/formats.md, "Boundaries").
"""

from __future__ import annotations

import pytest
from drivers import requires_engine
from fixtures import CONTENT, MODEL, REASONING, TOOLS, Case, tool

requires_engine("vllm")
requires_engine("sglang")

from test_engine_formats import PATHS, check, plugins_loaded  # noqa: E402,F401  (the fixture loads both plugins)

pytestmark = pytest.mark.no_model

OSLO = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>"
OSLO_45 = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n</tool_call>"
OSLO_CALL = [("get_weather", {"city": "Oslo"})]
# A tool whose free-form keys are typed by the schema outside `properties` (environment variables are strings).
RUN = tool("run", {"command": {"type": "string"}})
RUN["function"]["parameters"]["additionalProperties"] = {"type": "string"}
LIMITS = tool("set_limits", {})
LIMITS["function"]["parameters"]["patternProperties"] = {"^max_": {"type": "integer"}, "^note_": {"type": "string"}}

BOUNDARY_CASES = [
    # A GLM-4.5-layout call written inside the reasoning, then the block's `</think>`: the tag is the block's end.
    Case("vllm_46040_call_inside_reasoning_then_think_close",
         "\n<think>The user wants the forecast.\n" + OSLO_45 + "\n</think>\n",
         MODEL, "The user wants the forecast.", None, OSLO_CALL),
    Case("opencode_pr6883_inline_call_inside_reasoning_then_think_close_and_answer",
         "Checking Oslo first." + OSLO + "</think>\nI will report back.",
         REASONING, "Checking Oslo first.", "I will report back.", OSLO_CALL),
    # Thinking off, and the model writes a think block anyway.
    Case("glm45_142_thinking_off_empty_block_before_call", "<think></think>" + OSLO, CONTENT, None, None, OSLO_CALL),
    Case("cline_pr5316_thinking_off_empty_block_newline_layout", "\n<think></think>\n" + OSLO_45, CONTENT, None, None,
         OSLO_CALL),
    Case("vllm_pr31788_thinking_off_full_block_before_answer",
         "<think>Two plus two is simple arithmetic.</think>\n\nThe answer is 4.",
         CONTENT, "Two plus two is simple arithmetic.", "The answer is 4."),
    # A call shown as an example inside the reasoning, then the real call after `</think>`.
    Case("gptme_pr1472_fenced_example_in_reasoning_then_real_call",
         "The call looks like this:\n```\n<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
         "</tool_call>\n```\nNow for Oslo.</think>" + OSLO,
         REASONING,
         "The call looks like this:\n```\n<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
         "</tool_call>\n```\nNow for Oslo.", None, OSLO_CALL),
    Case("lmstudio_1592_inline_code_example_in_reasoning",
         "Some models write `<tool_call>get_time</tool_call>` for this; no call is needed.</think>It is noon.",
         REASONING, "Some models write `<tool_call>get_time</tool_call>` for this; no call is needed.", "It is noon."),
    # Prose that mentions the tag literally, then a real call: every character of the prose is kept.
    Case("lmstudio_1592_literal_tag_in_answer_before_call",
         "Calls are wrapped in <tool_call> tags. Checking now." + OSLO,
         CONTENT, None, "Calls are wrapped in <tool_call> tags. Checking now.", OSLO_CALL),
    Case("lmstudio_1592_literal_tag_in_answer_before_call_glm45_layout",
         "\n<think>check</think>\nCalls are wrapped in <tool_call> tags. Checking now.\n" + OSLO_45,
         MODEL, "check", "Calls are wrapped in <tool_call> tags. Checking now.", OSLO_CALL),
    # An answer, then an end-of-turn token the engine handed to the parser (R1.5; no call in the turn).
    Case("xinfer_pr392_answer_then_user_token", "The sum of 2 and 2.</think>The answer is 4.<|user|>", REASONING,
         "The sum of 2 and 2.", "The answer is 4."),
    # thinking_token_budget forced `</think>`; GLM wrote its answer, its own `</think>`, the answer again.
    Case("vllm_48201_the_models_own_close_after_a_forced_one", "One plus one.</think>1+1=2.</think>1+1=2.",
         REASONING, "One plus one.", "1+1=2.1+1=2."),
    # The same with no tools declared: no call is parsed (vLLM's tool parser passes the text on, SGLang runs no tool
    # stage), the second close is still structure; a pair the answer opened itself is text.
    Case("vllm_48201_the_models_own_close_with_no_tools", "Sum.</think>It is 2.</think>It is 2. <think>x</think>",
         REASONING, "Sum.", "It is 2.It is 2. <think>x</think>", tools=[]),
    Case("vllm_48201_a_close_inside_an_argument_value_is_its_text",
         "Sum.</think>Now.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>a</think>b</arg_value>"
         "</tool_call>", REASONING, "Sum.", "Now.", [("get_weather", {"city": "a</think>b"})]),
    Case("vllm_48201_second_close_after_a_call_and_text",
         "Checking." + OSLO + "Oslo first.\n</think>\nDone.", REASONING, "Checking.", "Oslo first.\n\nDone.",
         OSLO_CALL),
    Case("xinfer_pr392_answer_then_observation_token", "The answer is 4.\n<|observation|>", CONTENT, None,
         "The answer is 4."),
    # Keys outside `properties`, typed by the schema's other keywords (R3.5).
    Case("r3_5_additional_properties_types_environment_variables",
         "</think><tool_call>run<arg_key>command</arg_key><arg_value>serve</arg_value><arg_key>PORT</arg_key>"
         "<arg_value>8080</arg_value><arg_key>DEBUG</arg_key><arg_value>true</arg_value></tool_call>",
         REASONING, None, None, [("run", {"command": "serve", "PORT": "8080", "DEBUG": "true"})],
         tools=[RUN, *TOOLS]),
    Case("r3_5_pattern_properties_type_matching_keys",
         "</think><tool_call>set_limits<arg_key>max_files</arg_key><arg_value>10</arg_value><arg_key>note_1"
         "</arg_key><arg_value>10</arg_value></tool_call>",
         REASONING, None, None, [("set_limits", {"max_files": 10, "note_1": "10"})], tools=[LIMITS, *TOOLS]),
]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", BOUNDARY_CASES, ids=[case.name for case in BOUNDARY_CASES])
def test_boundary_case_through_engine(case, path):
    check(case, PATHS[path](case))
