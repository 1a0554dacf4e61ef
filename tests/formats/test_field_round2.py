"""Field cases, round two: five malformed-call shapes GLM emits in production (docs/formats.md R1.3, R1.5, R1.9, R3.4).

Each test name carries the public report the shape comes from. Every case goes through `parse` of
test_failure_modes: whole, and streamed at several chunkings that must agree with it. Agent-client tools (Claude
Code / OpenCode style) because that is where these outputs were seen.
"""

from __future__ import annotations

import json

import pytest
from glm_render import MARKERS, chunkings, round_trips
from hypothesis import given
from hypothesis import strategies as st
from test_failure_modes import calls, fn, parse
from test_format_properties import merged, stream

from glm_plugin.formats import ThinkingStart, ToolArgsDelta, ToolCallParser

R, C, M = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL

AGENT_TOOLS = [
    fn("Bash", command={"type": "string"}, timeout={"type": "integer"}, description={"type": "string"},
       run_in_background={"type": "boolean"}),
    fn("Read", file_path={"type": "string"}, offset={"type": "integer"}, limit={"type": "integer"}),
    fn("Edit", file_path={"type": "string"}, old_string={"type": "string"}, new_string={"type": "string"},
       replace_all={"type": "boolean"}),
    fn("Write", file_path={"type": "string"}, content={"type": "string"}),
    fn("get_weather", city={"type": "string"}, days={"type": "integer"}),
    fn("configure", ratio={"type": "number"}, retries={"type": ["integer", "null"]}, tags={"type": "array"},
       options={"type": "object"}),
    fn("ping"),
]


def check(text, expected_calls, content=None, start=C):
    result = parse(text, AGENT_TOOLS, start)
    assert calls(result) == expected_calls
    assert result.content == content
    for call in result.tool_calls:
        assert call.complete
        assert json.loads(call.arguments_json) == call.arguments
    return result


# ---- R1.5: a doubled closing key tag (vLLM PR #54971) --------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    pytest.param("<tool_call>Read<arg_key>file_path</arg_key></arg_key><arg_value>/src/app.py</arg_value></tool_call>",
                 [("Read", {"file_path": "/src/app.py"})], id="vllm_pr54971_glm47_inline"),
    pytest.param("\n<tool_call>Read\n<arg_key>file_path</arg_key>\n</arg_key>\n<arg_value>/src/app.py</arg_value>\n"
                 "</tool_call>", [("Read", {"file_path": "/src/app.py"})], id="vllm_pr54971_glm45_newlines"),
    pytest.param("<tool_call>Read<arg_key>file_path</arg_key><arg_value>/a.py</arg_value><arg_key>limit</arg_key>"
                 "</arg_key><arg_value>200</arg_value></tool_call>", [("Read", {"file_path": "/a.py", "limit": 200})],
                 id="vllm_pr54971_second_key_typed"),
    pytest.param("<tool_call>Bash<arg_key>command</arg_key></arg_key><arg_value>pytest -q</arg_value><arg_key>"
                 "description</arg_key></arg_key><arg_value>Run tests</arg_value></tool_call>",
                 [("Bash", {"command": "pytest -q", "description": "Run tests"})], id="vllm_pr54971_every_key"),
    pytest.param("<tool_call>Readfile_path</arg_key></arg_key><arg_value>/etc/hosts</arg_value></tool_call>",
                 [("Read", {"file_path": "/etc/hosts"})], id="vllm_pr54971_with_missing_key_open"),
    pytest.param("<tool_call>Read<arg_key>file_path</arg_key></arg_key></arg_key><arg_value>/x</arg_value>"
                 "</tool_call>", [("Read", {"file_path": "/x"})], id="vllm_pr54971_tripled"),
    pytest.param("<tool_call>ping</tool_call><tool_call>get_weather<arg_key>city</arg_key></arg_key><arg_value>Oslo"
                 "</arg_value></tool_call>", [("ping", {}), ("get_weather", {"city": "Oslo"})],
                 id="vllm_pr54971_in_second_call"),
])
def test_doubled_key_close(text, expected):
    check(text, expected)


def test_vllm_pr54971_after_thinking_glm47_flash():
    check("Reading the config first.</think><tool_call>Read<arg_key>file_path</arg_key></arg_key><arg_value>"
          "config.yaml</arg_value></tool_call>", [("Read", {"file_path": "config.yaml"})], start=R)


# ---- R1.3: `</arg_value>` missing right before `</tool_call>` (Ollama PR #14656) -----------------------------

@pytest.mark.parametrize("text,expected,content", [
    pytest.param("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</tool_call>",
                 [("get_weather", {"city": "Paris"})], None, id="ollama_pr14656_single_argument"),
    pytest.param("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>days</arg_key>"
                 "<arg_value>3</tool_call>", [("get_weather", {"city": "Paris", "days": 3})], None,
                 id="ollama_pr14656_last_of_two_typed"),
    pytest.param("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</tool_call><tool_call>get_weather"
                 "<arg_key>city</arg_key><arg_value>Rome</tool_call>",
                 [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})], None,
                 id="ollama_pr14656_next_call_follows"),
    pytest.param("<tool_call>Bash<arg_key>command</arg_key><arg_value>ls -la</tool_call><|observation|>",
                 [("Bash", {"command": "ls -la"})], None, id="ollama_pr14656_end_of_turn_token"),
    pytest.param("<tool_call>Bash<arg_key>command</arg_key><arg_value>git status</tool_call>\n",
                 [("Bash", {"command": "git status"})], None, id="ollama_pr14656_trailing_newline"),
    pytest.param("<tool_call>Bash<arg_key>command</arg_key><arg_value>grep -n \"</tool_call>\" parser.py</tool_call>",
                 [("Bash", {"command": "grep -n \"</tool_call>\" parser.py"})], None,
                 id="ollama_pr14656_value_mentions_the_tag"),
    pytest.param("\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days"
                 "</arg_key>\n<arg_value>2\n</tool_call>", [("get_weather", {"city": "Paris", "days": 2})], None,
                 id="ollama_pr14656_glm45_newlines"),
    pytest.param("<tool_call>configure<arg_key>tags</arg_key><arg_value>[\"a\", \"b\"]</tool_call>\n"
                 "<tool_call>ping</tool_call>", [("configure", {"tags": ["a", "b"]}), ("ping", {})], None,
                 id="ollama_pr14656_array_then_call"),
    pytest.param("Checking.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Lima</tool_call>"
                 "</tool_call>", [("get_weather", {"city": "Lima"})], "Checking.",
                 id="ollama_pr14656_doubled_call_close"),
])
def test_value_close_missing_before_call_close(text, expected, content):
    check(text, expected, content)


def test_ollama_pr14656_after_thinking_glm5():
    check("Need the weather.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</tool_call>",
          [("get_weather", {"city": "Oslo"})], start=R)


# ---- R1.3: a second `<tool_call>` where the first `<arg_key>` belongs (agent clients) ------------------------

@pytest.mark.parametrize("text,expected,content", [
    pytest.param("<tool_call>Bash<tool_call>command</arg_key><arg_value>npm test</arg_value></tool_call>",
                 [("Bash", {"command": "npm test"})], None, id="agent_clients_glm47_inline"),
    pytest.param("\n<tool_call>Read\n<tool_call>file_path</arg_key>\n<arg_value>/a.py</arg_value>\n</tool_call>",
                 [("Read", {"file_path": "/a.py"})], None, id="agent_clients_glm45_newlines"),
    pytest.param("<tool_call>Read<tool_call>file_path</arg_key><arg_value>/a.py</arg_value><arg_key>offset</arg_key>"
                 "<arg_value>10</arg_value><arg_key>limit</arg_key><arg_value>50</arg_value></tool_call>",
                 [("Read", {"file_path": "/a.py", "offset": 10, "limit": 50})], None, id="agent_clients_more_keys"),
    pytest.param("I'll run it.<tool_call>Bash<tool_call>command</arg_key><arg_value>make</arg_value></tool_call>",
                 [("Bash", {"command": "make"})], "I'll run it.", id="agent_clients_after_content"),
    pytest.param("<tool_call>ping</tool_call><tool_call>Write<tool_call>file_path</arg_key><arg_value>out.txt"
                 "</arg_value><arg_key>content</arg_key><arg_value>hi</arg_value></tool_call>",
                 [("ping", {}), ("Write", {"file_path": "out.txt", "content": "hi"})], None,
                 id="agent_clients_in_second_call"),
    pytest.param("<tool_call>Read<tool_call>limit</arg_key></arg_key><arg_value>5</arg_value></tool_call>",
                 [("Read", {"limit": 5})], None, id="agent_clients_with_doubled_key_close"),
])
def test_second_call_open_for_key_open(text, expected, content):
    check(text, expected, content)


def test_agent_clients_after_thinking_glm47():
    check("Let me list the files.</think><tool_call>Bash<tool_call>command</arg_key><arg_value>ls</arg_value>"
          "</tool_call>", [("Bash", {"command": "ls"})], start=R)


# ---- R3.4: a JSON-quoted scalar for a typed parameter (SGLang test_schema_type_coercion) ---------------------

@pytest.mark.parametrize("tool,key,text,value", [
    pytest.param("Read", "limit", '"42"', 42, id="sglang_schema_type_coercion_integer"),
    pytest.param("Bash", "timeout", '"120000"', 120000, id="sglang_schema_type_coercion_bash_timeout"),
    pytest.param("configure", "ratio", '"2.5"', 2.5, id="sglang_schema_type_coercion_number"),
    pytest.param("Bash", "run_in_background", '"true"', True, id="sglang_schema_type_coercion_boolean"),
    pytest.param("Edit", "replace_all", '"false"', False, id="sglang_schema_type_coercion_boolean_false"),
    pytest.param("configure", "retries", '"null"', None, id="sglang_schema_type_coercion_nullable_null"),
    pytest.param("configure", "retries", '"3"', 3, id="sglang_schema_type_coercion_nullable_integer"),
    pytest.param("Read", "offset", "'7'", 7, id="sglang_schema_type_coercion_python_quotes"),
    pytest.param("Read", "offset", ' "15" ', 15, id="sglang_schema_type_coercion_padded"),
    pytest.param("configure", "tags", '"[\\"a\\", \\"b\\"]"', ["a", "b"], id="sglang_schema_type_coercion_array"),
    pytest.param("Read", "limit", '"ten"', "ten", id="sglang_schema_type_coercion_not_a_number_loses_quotes"),
])
def test_quoted_scalar_for_typed_parameter(tool, key, text, value):
    result = check(f"<tool_call>{tool}<arg_key>{key}</arg_key><arg_value>{text}</arg_value></tool_call>",
                   [(tool, {key: value})])
    assert '\\"' not in result.tool_calls[0].arguments_json  # the model's quotes never reach the client


# ---- R1.9: a value that contains `</arg_value>` (an edit of code that handles GLM's own format) -------------

REGEX = r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>"


@pytest.mark.parametrize("text,expected", [
    pytest.param(f"<tool_call>Edit<arg_key>file_path</arg_key><arg_value>parser.py</arg_value><arg_key>old_string"
                 f"</arg_key><arg_value>PAIR = None</arg_value><arg_key>new_string</arg_key><arg_value>PAIR = "
                 f"re.compile(r\"{REGEX}\")</arg_value></tool_call>",
                 [("Edit", {"file_path": "parser.py", "old_string": "PAIR = None",
                            "new_string": f"PAIR = re.compile(r\"{REGEX}\")"})], id="r1_9_self_edit_regex"),
    pytest.param("<tool_call>Write<arg_key>file_path</arg_key><arg_value>render.py</arg_value><arg_key>content"
                 "</arg_key><arg_value>def arg(k, v):\n    return f\"<arg_key>{k}</arg_key><arg_value>{v}</arg_value>\"\n"
                 "</arg_value></tool_call>",
                 [("Write", {"file_path": "render.py", "content": "def arg(k, v):\n    return f\"<arg_key>{k}"
                             "</arg_key><arg_value>{v}</arg_value>\"\n"})], id="r1_9_self_edit_renderer"),
    pytest.param("<tool_call>Write<arg_key>content</arg_key><arg_value>CLOSE = '</arg_value>'\nOPEN = '<arg_value>'"
                 "</arg_value><arg_key>file_path</arg_key><arg_value>tags.py</arg_value></tool_call>",
                 [("Write", {"content": "CLOSE = '</arg_value>'\nOPEN = '<arg_value>'", "file_path": "tags.py"})],
                 id="r1_9_self_edit_tag_constants"),
    pytest.param("<tool_call>Write<arg_key>content</arg_key><arg_value>A value ends at `</arg_value>`.</arg_value>"
                 "</tool_call>", [("Write", {"content": "A value ends at `</arg_value>`."})], id="r1_9_self_edit_docs"),
    pytest.param("\n<tool_call>Edit\n<arg_key>old_string</arg_key>\n<arg_value>end = text.find(\"</arg_value>\")"
                 "</arg_value>\n<arg_key>new_string</arg_key>\n<arg_value>end = find_close(text)</arg_value>\n"
                 "</tool_call>", [("Edit", {"old_string": "end = text.find(\"</arg_value>\")",
                                            "new_string": "end = find_close(text)"})], id="r1_9_self_edit_glm45"),
    pytest.param("<tool_call>Bash<arg_key>command</arg_key><arg_value>sed -i 's#</arg_value>\n</arg_value>x#X#' f"
                 "</arg_value></tool_call>", [("Bash", {"command": "sed -i 's#</arg_value>\n</arg_value>x#X#' f"})],
                 id="r1_9_self_edit_repeated_tag_then_text"),
    pytest.param("<tool_call>Write<arg_key>content</arg_key><arg_value>a</arg_value> b</tool_call>",
                 [("Write", {"content": "a</arg_value> b"})], id="r1_9_self_edit_with_missing_close"),
])
def test_value_holding_its_own_close_tag(text, expected):
    check(text, expected)


def test_r1_9_self_edit_streams_the_tag_once_what_follows_decides():
    """Streaming holds back at most the tag (and its whitespace) until the next character decides."""
    parser = ToolCallParser(AGENT_TOOLS)
    parser.feed("<tool_call>Write<arg_key>content</arg_key><arg_value>x = '")
    assert parser.feed("</arg_value>") == []
    assert "".join(event.text for event in parser.feed("'")) == "</arg_value>'"  # text after all
    assert parser.feed("</arg_value>\n") == []
    assert parser.feed("<arg_key>")[0] == ToolArgsDelta(0, '"')


# ---- what stays as it was (policy guards: these also pass on the code before round two) ----------------------

@pytest.mark.parametrize("text", [
    "<tool_call>nosuch<arg_key>path</arg_key></arg_key><arg_value>/a</arg_value></tool_call>",
    "<tool_call>nosuch<arg_key>path</arg_key><arg_value>/a</tool_call>",
    "<tool_call>Read<tool_call>nokey</arg_key><arg_value>/a</arg_value></tool_call>",
])
def test_recoveries_need_a_declared_name_and_parameter(text):
    result = parse(text, AGENT_TOOLS)
    assert result.tool_calls == [] and result.content == text  # content, nothing lost


def test_a_value_with_close_tags_followed_by_a_value_end_is_still_cut_and_nothing_is_lost():
    text = ("<tool_call>Write<arg_key>content</arg_key><arg_value>s = \"<arg_value>1</arg_value></tool_call>\""
            "</arg_value></tool_call>")
    result = parse(text, AGENT_TOOLS)
    assert calls(result) == [("Write", {"content": "s = \"<arg_value>1"})]
    assert result.content == "\"</arg_value></tool_call>"


def test_a_call_close_inside_a_value_followed_by_text_stays_text():
    result = parse("<tool_call>Bash<arg_key>command</arg_key><arg_value>echo </tool_call> done", AGENT_TOOLS)
    assert calls(result) == [("Bash", {"command": "echo </tool_call> done"})]
    assert result.tool_calls[0].complete is False  # never closed: the end of the output cut it off


def test_quoted_values_of_string_keys_and_undeclared_keys_stay_verbatim():
    result = parse('<tool_call>Bash<arg_key>command</arg_key><arg_value>"42"</arg_value><arg_key>extra</arg_key>'
                   '<arg_value>"7"</arg_value></tool_call>', AGENT_TOOLS)
    assert calls(result) == [("Bash", {"command": '"42"', "extra": '"7"'})]


# ---- properties ---------------------------------------------------------------------------------------------

_value_text = st.lists(st.one_of(st.sampled_from(MARKERS), st.sampled_from(["a", " ", "\n", "<", ">", "/", "\""])),
                       max_size=16).map("".join).filter(round_trips)


@given(_value_text, _value_text, st.sampled_from(["4.7", "4.5"]), st.booleans(), st.data())
def test_any_value_text_round_trips_when_nothing_is_escaped(first, second, layout, declared, data):
    """Every tag of the format may stand in a value: rendered raw, it reads back as itself, whole and streamed at
    every chunking, in a declared and an undeclared call, unless a closing tag in it is followed by what ends a
    value (`round_trips`)."""
    name = "Write" if declared else "Scribble"
    if layout == "4.7":
        text = (f"<tool_call>{name}<arg_key>file_path</arg_key><arg_value>{first}</arg_value><arg_key>content"
                f"</arg_key><arg_value>{second}</arg_value></tool_call>")
    else:
        text = (f"\n<tool_call>{name}\n<arg_key>file_path</arg_key>\n<arg_value>{first}</arg_value>\n<arg_key>"
                f"content</arg_key>\n<arg_value>{second}</arg_value>\n</tool_call>")
    result = parse(text, AGENT_TOOLS)  # streamed == whole at several chunkings, asserted inside
    assert calls(result) == [(name, {"file_path": first, "content": second})]
    assert result.content is None
    chunks = data.draw(chunkings(text))
    assert merged(stream(chunks, AGENT_TOOLS, C)) == merged(stream([text], AGENT_TOOLS, C))
