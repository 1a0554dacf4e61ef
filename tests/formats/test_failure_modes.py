"""One test (or a few) per text rule of the field failure modes, sections 1-6; each names its rule (R<section>.<n>).

Every case is checked whole and streamed (per character and in token-sized pieces): the two must agree.
"""

from __future__ import annotations

import json

import pytest

from glm_plugin.formats import (
    ContentDelta,
    ParsedOutput,
    ReasoningDelta,
    ThinkingStart,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallParser,
    ToolCallStart,
    ToolSchemaError,
    collect_events,
    thinking_start_from_prompt,
)
from whole_output import GlmOutputParser, parse_output

R, C, M = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL


def fn(name, **props):
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": props}}}


TOOLS = [
    fn("get_weather", city={"type": "string"}, days={"type": "integer"}, metric={"type": "boolean"}),
    fn("ping"),
    fn("search", query={"type": "string"}, filters={"type": "object"}, ids={"type": "array"}),
]


def parse(text, tools=TOOLS, start=C, **kw) -> ParsedOutput:
    """Whole-text parse, asserting that every streaming of the same text agrees with it."""
    whole = parse_output(text, tools, start, **kw)
    for size in (1, 3, 7, max(1, len(text) // 2), max(1, len(text) // 3)):
        parser = GlmOutputParser(tools, start)
        events = []
        for i in range(0, len(text), size):
            events.extend(parser.feed(text[i:i + size]))
        events.extend(parser.finish())
        if "finish_reason" not in kw:
            assert collect_events(events) == whole, f"chunk size {size}"
    return whole


def calls(result):
    return [(c.name, c.arguments) for c in result.tool_calls]


# ---- 1. Tool-call format variants ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["<tool_call>ping</tool_call>", "<tool_call>ping\n</tool_call>",
                                  "<tool_call> ping </tool_call>", "\n<tool_call>ping\n</tool_call>"])
def test_r1_1_zero_argument_calls(text):
    result = parse(text)
    assert calls(result) == [("ping", {})]
    assert result.tool_calls[0].arguments_json == "{}"
    assert result.content is None


def test_r1_2_both_layouts_and_stray_spaces():
    inline = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
    lines = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
    spaced = "<tool_call> get_weather <arg_key> city </arg_key>  <arg_value>Paris</arg_value> </tool_call>"
    for text in (inline, lines, spaced):
        assert calls(parse(text)) == [("get_weather", {"city": "Paris"})]


def test_r1_2_call_mid_prose():
    text = "Let me check. <tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call> Done."
    result = parse(text)
    assert calls(result) == [("get_weather", {"city": "Oslo"})]
    assert result.content == "Let me check. Done."


def test_r1_3_missing_value_open_tag_recovered_for_declared_tool():
    text = "<tool_call>get_weather<arg_key>city</arg_key>Paris</arg_value><arg_key>days</arg_key>3</arg_value></tool_call>"
    assert calls(parse(text)) == [("get_weather", {"city": "Paris", "days": 3})]


def test_r1_3_missing_key_open_tag_recovered_for_declared_tool():
    assert calls(parse("<tool_call>get_weathercity</arg_key><arg_value>Rome</arg_value></tool_call>")) == [
        ("get_weather", {"city": "Rome"})]
    assert calls(parse("<tool_call>get_weather\ncity</arg_key>\n<arg_value>Rome</arg_value>\n</tool_call>")) == [
        ("get_weather", {"city": "Rome"})]


def test_r1_3_stray_value_close_after_zero_argument_name():
    assert calls(parse("<tool_call>ping</arg_value></tool_call>")) == [("ping", {})]


@pytest.mark.parametrize("text", [
    "<tool_call>nosuch<arg_key>city</arg_key>Paris</arg_value></tool_call>",
    "<tool_call>nosuchcity</arg_key><arg_value>Rome</arg_value></tool_call>",
    "<tool_call>pong</arg_value></tool_call>",
])
def test_r1_3_no_recovery_for_undeclared_names(text):
    result = parse(text)
    assert result.tool_calls == []
    assert result.content == text  # returned as content, not dropped and not a broken call


def test_r1_4_never_empty_arguments_when_argument_text_was_present():
    result = parse("<tool_call>get_weather<arg_key>city</arg_key>Paris</arg_value></tool_call>")
    assert result.tool_calls[0].arguments == {"city": "Paris"}
    result = parse("<tool_call>nosuch<arg_key>city</arg_key>Paris</arg_value></tool_call>")
    assert result.tool_calls == [] and "Paris" in result.content


def test_r1_5_doubled_close_tag_and_trailing_stop_tokens():
    text = "<tool_call>ping</tool_call></tool_call><|observation|>"
    result = parse(text)
    assert calls(result) == [("ping", {})]
    assert result.content is None


def test_r1_6_text_after_calls_is_kept_and_content_is_none_with_only_calls():
    result = parse("Before.<tool_call>ping</tool_call>After.")
    assert result.content == "Before.After."
    assert parse("<tool_call>ping</tool_call>").content is None
    assert parse("").content == ""


def test_r1_7_undeclared_name_is_a_call_in_both_modes_with_contiguous_indices():
    text = ("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
            "<tool_call>nosuch<arg_key>n</arg_key><arg_value>5</arg_value></tool_call><tool_call>ping</tool_call>")
    result = parse(text)
    assert calls(result) == [("get_weather", {"city": "Paris"}), ("nosuch", {"n": 5}), ("ping", {})]
    parser = GlmOutputParser(TOOLS, C)
    events = [e for ch in text for e in parser.feed(ch)] + parser.finish()
    assert [e.index for e in events if type(e) is ToolCallStart] == [0, 1, 2]


def test_r1_7_calls_without_any_declared_tools():
    result = parse("<tool_call>anything<arg_key>x</arg_key><arg_value>[1]</arg_value></tool_call>", tools=None)
    assert calls(result) == [("anything", {"x": [1]})]


def test_r1_9_values_may_hold_other_tag_text():
    value = "see <arg_key>k</arg_key> and </tool_call> and <tool_call> and <think>"
    result = parse(f"<tool_call>search<arg_key>query</arg_key><arg_value>{value}</arg_value></tool_call>")
    assert calls(result) == [("search", {"query": value})]


def test_r1_9_a_value_holding_its_own_close_tag_keeps_it_unless_a_value_end_follows():
    text = "<tool_call>search<arg_key>query</arg_key><arg_value>a</arg_value>b</arg_value></tool_call>"
    result = parse(text)
    assert calls(result) == [("search", {"query": "a</arg_value>b"})]
    assert result.content is None
    json.loads(result.tool_calls[0].arguments_json)


# ---- 2. Streaming -------------------------------------------------------------------------------------------

def test_r2_1_multi_token_deltas_as_mtp_produces_them():
    text = ("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>days</arg_key>"
            "<arg_value>3</arg_value></tool_call>")
    parser = GlmOutputParser(TOOLS, C)
    events = parser.feed(text[:40]) + parser.feed(text[40:41]) + parser.feed(text[41:]) + parser.finish()
    assert collect_events(events) == parse_output(text, TOOLS, C)


def test_r2_2_every_complete_call_in_one_delta_is_emitted_from_that_delta():
    parser = GlmOutputParser(TOOLS, C)
    events = parser.feed("<tool_call>ping</tool_call><tool_call>get_weather<arg_key>city</arg_key>"
                         "<arg_value>Rome</arg_value></tool_call>")
    assert [e.name for e in events if type(e) is ToolCallEnd] == ["ping", "get_weather"]
    assert parser.finish() == []


def test_r2_3_name_emitted_once_and_only_when_complete():
    tools = [fn("get"), fn("get_weather", city={"type": "string"})]
    parser = ToolCallParser(tools)
    assert parser.feed("<tool_call>get") == []
    assert parser.feed("_wea") == []
    events = parser.feed("ther<arg_key>")
    assert events == [ToolCallStart(0, "get_weather")]


def test_r2_4_empty_object_exactly_once():
    parser = ToolCallParser(TOOLS)
    events = [e for ch in "<tool_call>ping</tool_call>" for e in parser.feed(ch)] + parser.finish()
    assert [e.text for e in events if type(e) is ToolArgsDelta] == ["{}"]


def test_r2_5_string_values_stream_before_their_close_tag_other_values_wait():
    parser = ToolCallParser(TOOLS)
    parser.feed("<tool_call>search<arg_key>query</arg_key><arg_value>hello ")
    early = parser.feed("world")
    assert early == [ToolArgsDelta(0, "world")]
    assert parser.feed("</arg_value><arg_key>ids</arg_key><arg_value>[1, ") == [ToolArgsDelta(0, '"')]
    assert parser.feed("2]</arg_value>") == []  # a close tag closes once what follows it is known (R1.9)
    assert parser.feed("</tool_call>")[0] == ToolArgsDelta(0, ', "ids": [1, 2]')


def test_r2_6_streamed_json_is_typed_python_booleans_and_bad_numbers():
    text = ("<tool_call>get_weather<arg_key>metric</arg_key><arg_value>True</arg_value>"
            "<arg_key>days</arg_key><arg_value>three</arg_value></tool_call>")
    result = parse(text)
    assert result.tool_calls[0].arguments == {"metric": True, "days": "three"}
    assert result.tool_calls[0].arguments_json == '{"metric": true, "days": "three"}'


def test_r2_6_call_truncated_by_max_tokens_is_closed_and_marked_incomplete():
    parser = GlmOutputParser(TOOLS, C)
    events = parser.feed("<tool_call>search<arg_key>ids</arg_key><arg_value>[1]</arg_value>"
                         "<arg_key>query</arg_key><arg_value>half a sent")
    events += parser.finish()
    end = events[-1]
    assert type(end) is ToolCallEnd and not end.complete
    assert end.arguments == {"ids": [1], "query": "half a sent"}
    fragments = "".join(e.text for e in events if type(e) is ToolArgsDelta)
    assert fragments == end.arguments_json and json.loads(fragments) == end.arguments
    truncated = parse_output("<tool_call>search<arg_key>ids</arg_key><arg_value>[1, 2", TOOLS, C)
    assert truncated.tool_calls[0].complete is False
    assert truncated.tool_calls[0].arguments == {}


@pytest.mark.parametrize("tail", ["<", "</", "<tool_ca", "<|user", "</think"])
def test_r2_7_partial_markers_are_released_at_end_of_stream(tail):
    result = parse("a " + tail)
    assert result.content == "a " + tail


def test_r2_7_plain_text_with_angle_brackets_is_not_held_forever():
    parser = ToolCallParser(TOOLS)
    parser.feed("<tool_call>search<arg_key>query</arg_key><arg_value>")
    events = parser.feed("x < y and <b>bold")
    assert "".join(e.text for e in events) == "x < y and <b>bold"


# ---- 3. Argument typing ------------------------------------------------------------------------------------

def args_of(tool_schema, value, tools=None):
    tools = tools or [fn("f", v=tool_schema)]
    result = parse(f"<tool_call>f<arg_key>v</arg_key><arg_value>{value}</arg_value></tool_call>", tools)
    return result.tool_calls[0].arguments["v"]


@pytest.mark.parametrize("schema,text,value", [
    ({"type": "integer"}, "42", 42),
    ({"type": "number"}, "2.5", 2.5),
    ({"type": "number"}, "7", 7),
    ({"type": "boolean"}, "false", False),
    ({"type": "array"}, '["a", 1]', ["a", 1]),
    ({"type": "object"}, '{"k": [true, null]}', {"k": [True, None]}),
    ({"type": "null"}, "null", None),
])
def test_r3_1_types_come_from_the_schema(schema, text, value):
    assert args_of(schema, text) == value


@pytest.mark.parametrize("text", ["007", "true", '{"a": 1}', "3", "null", " padded ", "[1, 2]"])
def test_r3_2_declared_strings_stay_verbatim(text):
    assert args_of({"type": "string"}, text) == text


@pytest.mark.parametrize("schema,text,value", [
    ({"type": ["integer", "null"]}, "null", None),
    ({"type": ["integer", "null"]}, "5", 5),
    ({"anyOf": [{"type": "string"}, {"type": "array"}]}, "[1]", [1]),
    ({"anyOf": [{"type": "string"}, {"type": "array"}]}, "plain", "plain"),
    ({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, "true", True),
    ({"allOf": [{"type": "string"}, {"maxLength": 9}]}, "0042", "0042"),
    ({"enum": ["a", "b"]}, "a", "a"),
    ({"enum": [1, 2]}, "2", 2),
    ({"const": "0"}, "0", "0"),
    ({"type": "string", "nullable": True}, "null", None),
    ({"type": "string", "nullable": True}, "nullify", "nullify"),
    # Policy: a string-or-number union reads an exact JSON number as the number (documented in docs/formats.md).
    ({"type": ["string", "number"]}, "12", 12),
    ({"type": ["string", "number"]}, "12 apples", "12 apples"),
])
def test_r3_3_unions_and_combinators(schema, text, value):
    assert args_of(schema, text) == value


def test_r3_3_local_refs_are_resolved():
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"v": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}}}}
    assert args_of(None, "8", tools=[tool]) == 8


@pytest.mark.parametrize("schema,text,value", [
    ({"type": "array"}, "['a', 'b']", ["a", "b"]),
    ({"type": "boolean"}, "True", True),
    ({"type": "integer"}, "NaN", "NaN"),
    ({"type": "integer"}, "0x10", "0x10"),
    ({"type": "integer"}, "007", "007"),
    ({"type": "number"}, "1e400", "1e400"),
])
def test_r3_4_declared_non_strings_json_then_python_literals_never_invalid_numbers(schema, text, value):
    assert args_of(schema, text) == value


@pytest.mark.parametrize("text,value", [("12", 12), ("[1, 2]", [1, 2]), ("true", True), ("null", None),
                                        ("hello", "hello"), ('"quoted"', '"quoted"'), ("True", "True"),
                                        ("{broken", "{broken")])
def test_r3_5_undeclared_keys_use_the_conservative_json_heuristic(text, value):
    assert args_of(None, text, tools=[fn("f")]) == value


def test_r3_5_undeclared_values_are_held_while_they_may_still_be_json():
    parser = ToolCallParser([fn("f")])
    parser.feed("<tool_call>f<arg_key>v</arg_key><arg_value>[1, ")
    assert parser.feed("2") == []
    assert parser.feed("]</arg_value>") == []
    assert parser.feed("<arg_key>") == [ToolArgsDelta(0, '{"v": [1, 2]')]


def test_bad_tool_schema_is_a_clear_error():
    with pytest.raises(ToolSchemaError, match="unknown JSON Schema type 'str'"):
        ToolCallParser([fn("f", v={"type": "str"})])
    with pytest.raises(ToolSchemaError, match="no usable 'name'"):
        ToolCallParser([{"type": "function", "function": {"parameters": {}}}])


# ---- 4. Tool calls inside thinking ---------------------------------------------------------------------------

def test_r4_1_a_tool_call_ends_reasoning():
    text = "I need the weather.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
    result = parse(text, start=R)
    assert result.reasoning == "I need the weather."
    assert calls(result) == [("get_weather", {"city": "Paris"})]
    result = parse("\n<think>hmm\n<tool_call>ping\n</tool_call>", start=M)
    assert result.reasoning == "hmm" and calls(result) == [("ping", {})]


def test_r4_2_prose_about_the_tag_inside_reasoning_is_not_a_call():
    text = "The format wraps calls in <tool_call> tags, then a name.</think>Answer."
    result = parse(text, start=R)
    assert result.reasoning == "The format wraps calls in <tool_call> tags, then a name."
    assert result.content == "Answer." and result.tool_calls == []


def test_r4_3_empty_think_block_at_the_start():
    assert parse("<think></think>Hello", start=M) == ParsedOutput(None, "Hello", [])
    assert parse("\n<think></think>\nHello", start=M) == ParsedOutput(None, "Hello", [])
    assert parse("</think>Hello", start=R) == ParsedOutput(None, "Hello", [])


# ---- 5. Multiple calls ---------------------------------------------------------------------------------------

def test_r5_1_back_to_back_calls_without_separator():
    text = ("<tool_call>get_weather<arg_key>city</arg_key><arg_value>A</arg_value></tool_call><tool_call>get_weather"
            "<arg_key>city</arg_key><arg_value>B</arg_value></tool_call>")
    assert calls(parse(text)) == [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})]


def test_r5_3_each_call_is_validated_on_its_own():
    text = ("<tool_call>nosuch<arg_key>x</arg_key>bare</arg_value></tool_call>"
            "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Lima</arg_value></tool_call>")
    result = parse(text)
    assert calls(result) == [("get_weather", {"city": "Lima"})]
    assert result.content.startswith("<tool_call>nosuch")


# ---- 6. Reasoning split and thinking toggles -----------------------------------------------------------------

# Prompt tails as the GLM templates render them (from the rendered example conversations).
PROMPTS = {
    "4.5 thinking on": ("<|user|>\nweather in Paris?<|assistant|>", M),
    "4.5 thinking off": ("<|user|>\nweather in Paris?/nothink<|assistant|>\n<think></think>", C),
    "4.7 thinking on": ("<|user|>weather in Paris?<|assistant|><think>", R),
    "4.7 thinking off": ("<|user|>weather in Paris?<|assistant|></think>", C),
    "4.7 turn 3": ("<|user|>a<|assistant|><think>r</think>b<|user|>c<|assistant|></think>d<|user|>e<|assistant|><think>",
                   R),
}


@pytest.mark.parametrize("name", PROMPTS)
def test_r6_1_start_state_comes_from_the_rendered_prompt(name):
    prompt, start = PROMPTS[name]
    assert thinking_start_from_prompt(prompt) is start


def test_r6_1_glm45_without_think_tag_is_content():
    assert parse("Just an answer.", start=M) == ParsedOutput(None, "Just an answer.", [])


def test_r6_3_thinking_off_routes_everything_to_content():
    result = parse("All of this is the answer.", start=C)
    assert result.reasoning is None and result.content == "All of this is the answer."


def test_r6_4_eos_without_close_tag_stays_reasoning_as_streamed():
    """Streaming has sent an unclosed template-opened block as reasoning; the whole answer must agree."""
    assert parse_output("An answer without thinking.", None, R) == ParsedOutput("An answer without thinking.", "", [])


def test_r6_5_later_turns_split_like_the_first():
    prompt, start = PROMPTS["4.7 turn 3"]
    result = parse("think again</think>final", start=thinking_start_from_prompt(prompt))
    assert (result.reasoning, result.content) == ("think again", "final")


def test_r6_6_reasoning_end_is_known_while_streaming():
    parser = GlmOutputParser(TOOLS, R)
    parser.feed("still thinking")
    assert not parser.reasoning_ended
    parser.feed("</think>")
    assert parser.reasoning_ended
    parser = GlmOutputParser(TOOLS, C)  # thinking off: the first text decides (the model may still open a block)
    parser.feed("  ")
    assert not parser.reasoning_ended
    parser.feed("Answer")
    assert parser.reasoning_ended


def test_reasoning_and_content_events_are_typed():
    events = GlmOutputParser(None, R).feed("a</think>b")
    assert events == [ReasoningDelta("a"), ContentDelta("b")]


def test_once_reasoning_has_ended_the_splitter_passes_text_through_unchanged():
    """Adapters rely on this to skip the splitter after `reasoning_ended` (SGLang's answer tokens)."""
    from glm_plugin.formats import ThinkingSplitter

    for start, opening in ((R, "r</think>"), (M, "\n<think>r</think>"), (M, "answer"), (C, "answer")):
        splitter = ThinkingSplitter(start)
        splitter.feed(opening)
        assert splitter.reasoning_ended
        for text in ("  x", "<tool_call>", "</think>", "<|user|>", "\n"):
            assert splitter.feed(text) == [ContentDelta(text)]
