"""vLLM's request features that read the reasoning and tool parsers, served: with glm_plugin's parsers each gives
what the client asked for, in the fields it asked for, and the same kind of answer as vLLM's own GLM parsers give.

- `thinking_token_budget`: vLLM ends thinking after N tokens, with the end token the reasoning parser names; the
  reasoning stops there, the rest is content, and no markup is left in either.
- `tool_choice` "required" and a named function: GLM's calls are not JSON, so vLLM leaves them to the tool parser
  (`supports_required_and_named = False`), generated under its GLM structural tag; the calls come back parsed.
- `response_format` after thinking: the grammar starts once the reasoning parser says thinking has ended.
- `include_reasoning: false`: no reasoning field, the content of the same request with it.
- vLLM's default structural tag for GLM tool calls (`structural_tag_model = "glm_4_7"`, strict level `function`),
  which vLLM reads off the tool parser class: with `tool_choice: auto` the model may only call a declared tool.

Servers: `ours` is the shared demo server (conftest.py); `vllm` is the same command with `GLM_PLUGIN_DISABLE=parsers`,
started once for this module (about 100 s on 2 cores, the one engine start this file adds). Every request runs
streaming and not; the `vllm` run compares each answer's kind with what `ours` gave.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from glm_plugin.command.cpu_server import DEMO_MODEL_NAME, demo_server_command  # noqa: E402
from glm_plugin.command.demo import free_port  # noqa: E402
from glm_plugin.command.server_process import ServerProcess  # noqa: E402
from served import mtp_args  # noqa: E402

pytestmark = pytest.mark.e2e

TIMER = {"type": "function", "function": {"name": "set_timer", "description": "Start a named timer", "parameters": {
    "type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
    "required": ["minutes", "label"]}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = [TIMER, WEATHER]
ASK_TIMER = [{"role": "user", "content": "Set a timer for 25 minutes called Tea Break."}]
SMALL_TALK = [{"role": "user", "content": "Hello there, how are you?"}]
LISBON = [{"role": "user", "content": "What is the weather in Lisbon?"}]
MARKUP = re.compile(r"</?think>|</?tool_call>|</?arg_(key|value)>|<\|\w+\|>")
BUDGET = 4
KINDS: dict[str, object] = {}  # request id -> the kind of answer `ours` gave (compared on the `vllm` run)


class Server(NamedTuple):
    parsers: str  # "ours" or "vllm"
    base: str


@pytest.fixture(scope="module", params=["ours", "vllm"])
def server(request, demo_server, tmp_path_factory) -> Server:
    if request.param == "ours":
        yield Server("ours", demo_server.base)
        return
    port = free_port("127.0.0.1")
    cmd, env = demo_server_command(port=port, extra=list(mtp_args()))
    env["GLM_PLUGIN_DISABLE"] = "parsers"  # vLLM's own glm45 / glm47 parsers
    log = tmp_path_factory.mktemp("server-vllm-parsers") / "vllm.log"
    with ServerProcess(cmd, f"http://127.0.0.1:{port}", log, env) as process:
        process.wait_ready(timeout=600, progress=None)
        assert "are glm_plugin's" not in log.read_text(), "GLM_PLUGIN_DISABLE=parsers did not reach the server"
        yield Server("vllm", f"http://127.0.0.1:{port}")


def ask(server: Server, stream: bool, messages: list, **kw) -> dict:
    """One chat request, streamed or not, as {reasoning, content, calls: [(name, arguments)], finish, usage}."""
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="x")
    kw = {"model": DEMO_MODEL_NAME, "messages": messages, "temperature": 0, "max_tokens": 160, **kw}
    if not stream:
        choice = (reply := client.chat.completions.create(**kw)).choices[0]
        extra = choice.message.model_extra or {}
        return {"reasoning": extra.get("reasoning") or extra.get("reasoning_content"),
                "content": choice.message.content, "finish": choice.finish_reason, "usage": reply.usage,
                "calls": [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]}
    reasoning, content, calls, finish = [], [], {}, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        delta, finish = chunk.choices[0].delta, chunk.choices[0].finish_reason or finish
        extra = delta.model_extra or {}
        reasoning.append(extra.get("reasoning") or extra.get("reasoning_content") or "")
        content.append(delta.content or "")
        for call in delta.tool_calls or []:
            name, args = calls.get(call.index, ("", ""))
            calls[call.index] = (name + (call.function.name or ""), args + (call.function.arguments or ""))
    return {"reasoning": "".join(reasoning) or None, "content": "".join(content) or None, "finish": finish,
            "usage": None, "calls": [calls[i] for i in sorted(calls)]}


def same_kind_as_ours(server: Server, request_id: str, kind: object) -> None:
    """`ours` records the kind of its answer; `vllm` (vLLM's own parsers, run second) must give the same kind."""
    if server.parsers == "vllm":
        if request_id not in KINDS:
            pytest.skip("glm_plugin's parsers did not answer this in this session; nothing to compare with")
        assert kind == KINDS[request_id], f"{request_id}: vLLM's parsers {kind}, glm_plugin's {KINDS[request_id]}"
    else:
        KINDS[request_id] = kind


def unmarked(*texts: str | None) -> bool:
    return not any(MARKUP.search(text or "") for text in texts)


def arguments_object(arguments: str) -> bool:
    try:
        return isinstance(json.loads(arguments), dict)
    except ValueError:
        return False


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_thinking_budget_ends_reasoning_and_the_rest_is_content(server, stream):
    got = ask(server, stream, ASK_TIMER, tools=TOOLS, extra_body={"thinking_token_budget": BUDGET})
    assert got["reasoning"] and got["content"], got
    assert unmarked(got["reasoning"], got["content"]), got
    if not stream:
        assert got["usage"].completion_tokens_details.reasoning_tokens == BUDGET, got["usage"]
    whole = ask(server, False, ASK_TIMER, tools=TOOLS)
    assert whole["reasoning"].startswith(got["reasoning"]) and len(got["reasoning"]) < len(whole["reasoning"]), \
        "the budget cut the reasoning the unbudgeted request gives"
    same_kind_as_ours(server, f"budget-{stream}", (bool(got["reasoning"]), bool(got["content"]), got["calls"]))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_thinking_budget_leaves_no_markup_when_the_model_closes_thinking_again(server, stream):
    """Cut off by the budget, the model later writes its own `</think>` (as GLM does: vLLM #48201); both parsers
    drop it (ours: a `</think>` after thinking ended is structure, docs/formats.md "Boundaries")."""
    got = ask(server, stream, LISBON, extra_body={"thinking_token_budget": BUDGET})
    assert got["reasoning"] and got["content"] and unmarked(got["reasoning"], got["content"]), got


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_choice_required_gives_parsed_calls_of_declared_tools(server, stream):
    """Small talk, which the model answers without a call, forced to call: it calls declared tools until
    max_tokens (the tiny model has no sensible arguments for them). Ours returns only whole calls with JSON-object
    arguments; vLLM's own streams the last, cut-off call's arguments as far as they got."""
    got = ask(server, stream, SMALL_TALK, tools=TOOLS, tool_choice="required")
    assert "no tool is needed" in (got["reasoning"] or ""), got
    names = {tool["function"]["name"] for tool in TOOLS}
    assert got["calls"] and all(name in names for name, _ in got["calls"]), got
    whole = got["calls"][:-1] if server.parsers == "vllm" and got["finish"] == "length" else got["calls"]
    assert all(arguments_object(arguments) for _, arguments in whole), got
    assert not (got["content"] or "").strip() and unmarked(got["reasoning"], got["content"]), got
    same_kind_as_ours(server, f"required-{stream}", got["calls"][0][0])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_named_tool_choice_calls_that_tool(server, stream):
    named = {"type": "function", "function": {"name": "get_weather"}}
    got = ask(server, stream, ASK_TIMER, tools=TOOLS, tool_choice=named)  # it would call set_timer
    assert got["calls"] and all(name == "get_weather" and arguments_object(a) for name, a in got["calls"]), got
    assert "city" in json.loads(got["calls"][0][1]), got
    assert not (got["content"] or "").strip() and unmarked(got["reasoning"], got["content"]), got
    same_kind_as_ours(server, f"named-{stream}", [name for name, _ in got["calls"]])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_response_format_applies_after_thinking(server, stream):
    schema = {"type": "string", "enum": ["fine", "busy"]}
    got = ask(server, stream, SMALL_TALK,
              response_format={"type": "json_schema", "json_schema": {"name": "mood", "schema": schema}})
    assert got["reasoning"] and unmarked(got["reasoning"]), "thinking stays free prose before the grammar starts"
    assert json.loads(got["content"]) in schema["enum"], got
    same_kind_as_ours(server, f"response_format-{stream}", (bool(got["reasoning"]), json.loads(got["content"])))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_include_reasoning_false_drops_the_reasoning_only(server, stream):
    full = ask(server, stream, SMALL_TALK)
    got = ask(server, stream, SMALL_TALK, extra_body={"include_reasoning": False})
    assert full["reasoning"] and not got["reasoning"], (full, got)
    assert got["content"] == full["content"] and got["content"] and unmarked(got["content"]), (full, got)
    same_kind_as_ours(server, f"include_reasoning-{stream}", got["content"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_vllms_glm_structural_tag_keeps_auto_calls_to_declared_tools(server, stream):
    """Only get_weather is declared and the user asks for a timer: the model's reasoning says it will call
    set_timer, but the structural tag vLLM builds from our parser's `structural_tag_model` allows declared names
    only, so the call is get_weather (without the tag, the undeclared set_timer would come back as a call)."""
    got = ask(server, stream, ASK_TIMER, tools=[WEATHER])
    assert "set_timer" in (got["reasoning"] or ""), got
    assert [name for name, _ in got["calls"]] == ["get_weather"] and arguments_object(got["calls"][0][1]), got
    same_kind_as_ours(server, f"structural_tag-{stream}", [name for name, _ in got["calls"]])
