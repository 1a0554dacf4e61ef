"""Field cases, round two (tests/formats/test_field_round2.py), through both engines' own parser entry points.

Each shape's cases run every path of test_engine_formats (vLLM `parse()` / `parse_delta()`, SGLang
`parse_non_stream()` / `parse_stream_chunk()`, at one token, three tokens and one delta): all must give the
expected turn, byte for byte the core's arguments JSON. Names carry the public report of the shape.
"""

from __future__ import annotations

import pytest
from drivers import requires_engine
from fixtures import CONTENT, REASONING, Case, tool
from test_engine_formats import PATHS, check, plugins_loaded  # noqa: F401 (a module-scoped autouse fixture)

requires_engine("vllm")
requires_engine("sglang")
pytestmark = pytest.mark.no_model

AGENT_TOOLS = [
    tool("Bash", {"command": {"type": "string"}, "timeout": {"type": "integer"}}),
    tool("Read", {"file_path": {"type": "string"}, "limit": {"type": "integer"}}),
    tool("Edit", {"file_path": {"type": "string"}, "old_string": {"type": "string"},
                  "new_string": {"type": "string"}, "replace_all": {"type": "boolean"}}),
]
REGEX = r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>"

CASES = [
    Case("vllm_pr54971_doubled_key_close_glm47",
         "Reading it.</think><tool_call>Read<arg_key>file_path</arg_key></arg_key><arg_value>/src/app.py</arg_value>"
         "<arg_key>limit</arg_key></arg_key><arg_value>40</arg_value></tool_call>", REASONING, "Reading it.", None,
         [("Read", {"file_path": "/src/app.py", "limit": 40})], tools=AGENT_TOOLS),
    Case("vllm_pr54971_doubled_key_close_thinking_off",
         "<tool_call>Bash<arg_key>command</arg_key></arg_key><arg_value>ls</arg_value></tool_call>", CONTENT, None,
         None, [("Bash", {"command": "ls"})], tools=AGENT_TOOLS),
    Case("ollama_pr14656_value_close_missing_at_end",
         "Run it.</think><tool_call>Bash<arg_key>command</arg_key><arg_value>make test</tool_call>", REASONING,
         "Run it.", None, [("Bash", {"command": "make test"})], tools=AGENT_TOOLS),
    Case("ollama_pr14656_value_close_missing_then_next_call",
         "Two files.</think><tool_call>Read<arg_key>file_path</arg_key><arg_value>a.py</tool_call><tool_call>Read"
         "<arg_key>file_path</arg_key><arg_value>b.py</arg_value></tool_call>", REASONING, "Two files.", None,
         [("Read", {"file_path": "a.py"}), ("Read", {"file_path": "b.py"})], tools=AGENT_TOOLS),
    Case("agent_clients_call_open_for_key_open",
         "Listing.</think><tool_call>Bash<tool_call>command</arg_key><arg_value>ls -la</arg_value></tool_call>",
         REASONING, "Listing.", None, [("Bash", {"command": "ls -la"})], tools=AGENT_TOOLS),
    Case("agent_clients_call_open_for_key_open_thinking_off",
         "<tool_call>Read<tool_call>file_path</arg_key><arg_value>x.md</arg_value><arg_key>limit</arg_key>"
         "<arg_value>5</arg_value></tool_call>", CONTENT, None, None, [("Read", {"file_path": "x.md", "limit": 5})],
         tools=AGENT_TOOLS),
    Case("sglang_schema_type_coercion_quoted_integer",
         "Wait long.</think><tool_call>Bash<arg_key>command</arg_key><arg_value>sleep 1</arg_value><arg_key>timeout"
         "</arg_key><arg_value>\"42\"</arg_value></tool_call>", REASONING, "Wait long.", None,
         [("Bash", {"command": "sleep 1", "timeout": 42})], tools=AGENT_TOOLS),
    Case("sglang_schema_type_coercion_quoted_boolean",
         "<tool_call>Edit<arg_key>replace_all</arg_key><arg_value>\"true\"</arg_value></tool_call>", CONTENT, None,
         None, [("Edit", {"replace_all": True})], tools=AGENT_TOOLS),
    Case("r1_9_self_edit_value_holding_the_close_tag",
         "Editing the parser.</think><tool_call>Edit<arg_key>file_path</arg_key><arg_value>parser.py</arg_value>"
         f"<arg_key>new_string</arg_key><arg_value>PAIR = re.compile(r\"{REGEX}\")</arg_value><arg_key>old_string"
         "</arg_key><arg_value>PAIR = None</arg_value></tool_call>", REASONING, "Editing the parser.", None,
         [("Edit", {"file_path": "parser.py", "new_string": f"PAIR = re.compile(r\"{REGEX}\")",
                    "old_string": "PAIR = None"})], tools=AGENT_TOOLS),
    Case("r1_9_self_edit_close_tag_then_newline",
         "<tool_call>Edit<arg_key>old_string</arg_key><arg_value>a = \"</arg_value>\"\nb = 1</arg_value>\n"
         "</tool_call>", CONTENT, None, None, [("Edit", {"old_string": "a = \"</arg_value>\"\nb = 1"})],
         tools=AGENT_TOOLS),
]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_round_two_case_through_engine(case, path):
    check(case, PATHS[path](case))
