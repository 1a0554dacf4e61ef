"""A served round trip: vLLM (CPU) serving the bundled tiny GLM checkpoint with our model class, our parsers and MTP
speculative decoding, driven by the OpenAI and Anthropic SDKs exactly as users drive a GLM server.

The server is started the way `glm-plugin serve --demo` starts it (`python -m vllm.entrypoints.openai.api_server`,
with `--tool-call-parser glm47 --reasoning-parser glm45`); our plugin is installed, so those names are ours.
Every test runs twice: on one CPU worker and with `--tensor-parallel-size 2` (one worker per core: the demo command
sets `VLLM_CPU_OMP_THREADS_BIND=0|1` itself), where every worker must build our classes and greedy output must be
TP=1's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

from glm_plugin.command.cpu_server import DEMO_MODEL_NAME, cpu_environment  # noqa: E402
from glm_plugin.command.conformance import schema_errors  # noqa: E402
from greedy_parity import BF16_NOISE_LIMIT, assert_same_within_noise  # noqa: E402
from served import mtp_args, serve_demo  # noqa: E402

pytestmark = pytest.mark.e2e

MODEL = DEMO_MODEL_NAME
TIMER = {"type": "function", "function": {"name": "set_timer", "description": "Start a named timer", "parameters": {
    "type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
    "required": ["minutes", "label"]}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                          "required": ["city"]}}}
TOOLS = [TIMER, WEATHER]
ASK = "Set a timer for 25 minutes called Tea Break."
RESULT = json.dumps({"timer_id": 4821, "status": "Started"})
TRANSCRIPTS: dict = {}  # tensor-parallel size -> greedy transcript (test_greedy_output_is_tp1s)


@pytest.fixture(scope="module", params=[1, 2], ids=["tp1", "tp2"])
def server(request, demo_server, tmp_path_factory):
    """TP=1: the shared demo server (conftest.py: `glm-plugin serve --demo`, MTP x1); TP=2: the same command with
    `--tensor-parallel-size 2` (one worker per core: the CLI sets `VLLM_CPU_OMP_THREADS_BIND=0|1` itself)."""
    tp = request.param
    if tp == 1:
        yield demo_server
        return
    if len(os.sched_getaffinity(0)) < tp:
        pytest.skip(f"TP={tp} on a CPU needs {tp} cores (one per worker)")
    with serve_demo(tmp_path_factory.mktemp(f"server-tp{tp}"), engine_args=mtp_args(tp), tp=tp) as served:
        yield served


def check_schema_types(tool: dict, arguments: dict) -> None:
    assert not schema_errors(tool, arguments), (arguments, schema_errors(tool, arguments))


def _chat(client, messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0,
                                          max_tokens=160, **kw)


def _reasoning(message) -> str | None:
    extra = message.model_extra or {}
    return extra.get("reasoning") or extra.get("reasoning_content")


def _stream(client, messages, **kw):
    reasoning, content, calls = [], [], {}
    for chunk in _chat(client, messages, stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        reasoning.append(extra.get("reasoning") or extra.get("reasoning_content") or "")
        content.append(delta.content or "")
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            if call.function and call.function.name:
                assert not entry["name"], "a tool name is streamed once, complete"
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
    return "".join(reasoning) or None, "".join(content) or None, [calls[i] for i in sorted(calls)]


def test_openai_tool_round_trip_streaming_agrees(server):
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="x")
    messages = [{"role": "user", "content": ASK}]
    first = _chat(client, messages)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert _reasoning(message), "thinking is on by default and must come back as reasoning"
    assert message.tool_calls, f"no tool call: {message}"
    call = message.tool_calls[0]
    assert call.function.name == "set_timer"
    arguments = json.loads(call.function.arguments)
    check_schema_types(TIMER, arguments)

    reasoning, content, streamed = _stream(client, messages)
    assert reasoning == _reasoning(message)
    assert content == (message.content or None)
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == [
        (c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": RESULT},
    ]
    answer = _chat(client, messages).choices[0].message
    assert not answer.tool_calls and answer.content, "after the tool result the model answers in content"


def test_openai_call_copies_arguments_and_answer_uses_the_result(server):
    """The client sends the call turn's reasoning back (GLM-4.7's interleaved thinking; vLLM hands an
    assistant message's `reasoning` to the template). The bundled model has only seen call turns with
    their thinking kept, so this is the conversation it can answer (docs/tiny-model.md)."""
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="x")
    messages = [{"role": "user", "content": ASK}]
    message = _chat(client, messages).choices[0].message
    call = message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"minutes": 25, "label": "Tea Break"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)],
         "reasoning": _reasoning(message)},
        {"role": "tool", "tool_call_id": call.id, "content": RESULT},
    ]
    assert "4821" in (_chat(client, messages).choices[0].message.content or "")


def test_thinking_disabled_gives_no_reasoning(server):
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="x")
    kw = {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    message = _chat(client, [{"role": "user", "content": ASK}], **kw).choices[0].message
    assert not _reasoning(message)
    assert message.tool_calls
    check_schema_types(TIMER, json.loads(message.tool_calls[0].function.arguments))
    reasoning, _, streamed = _stream(client, [{"role": "user", "content": ASK}], **kw)
    assert reasoning is None and streamed[0]["name"] == "set_timer"


@pytest.mark.parametrize("dialect", [{"thinking": {"type": "disabled"}}, {"enable_thinking": False}],
                         ids=["zai", "dashscope"])
def test_hosted_api_thinking_switches_turn_thinking_off(server, dialect):
    """Clients written for Z.ai or DashScope switch thinking the way those APIs do, and get what they asked."""
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="x")
    message = _chat(client, [{"role": "user", "content": ASK}], extra_body=dialect).choices[0].message
    assert not _reasoning(message) and message.tool_calls
    on = _chat(client, [{"role": "user", "content": ASK}], extra_body={"thinking": {"type": "enabled"}})
    assert _reasoning(on.choices[0].message)
    with pytest.raises(openai.BadRequestError, match="thinking"):
        _chat(client, [{"role": "user", "content": ASK}], extra_body={"thinking": {"type": "sometimes"}})


def test_anthropic_messages_give_thinking_and_tool_use(server):
    client = anthropic.Anthropic(base_url=server.base, api_key="x")
    tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
              "input_schema": t["function"]["parameters"]} for t in TOOLS]
    messages = [{"role": "user", "content": ASK}]
    reply = client.messages.create(model=MODEL, max_tokens=160, messages=messages, tools=tools,
                                   extra_body={"temperature": 0})
    kinds = [block.type for block in reply.content]
    assert "thinking" in kinds and "tool_use" in kinds, kinds
    assert reply.stop_reason == "tool_use"
    use = next(b for b in reply.content if b.type == "tool_use")
    assert use.name == "set_timer"
    check_schema_types(TIMER, use.input)
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": RESULT}]},
    ]
    answer = client.messages.create(model=MODEL, max_tokens=160, messages=messages, tools=tools,
                                   extra_body={"temperature": 0})
    text = "".join(b.text for b in answer.content if b.type == "text")
    assert "4821" in text and answer.stop_reason == "end_turn", answer.content


def test_server_runs_our_parsers():
    """The round trip above must have gone through glm_plugin, not the engine's built-in parsers: the parser names
    resolve to ours in a process set up as the server's is (the same probe for both sizes, so it runs once)."""
    env = cpu_environment()
    env.pop("GLM_PLUGIN_DISABLE", None)
    probe = (
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "make_arg_parser(FlexibleArgumentParser())\n"
        "from vllm.tool_parsers import ToolParserManager\n"
        "from vllm.reasoning import ReasoningParserManager\n"
        "print(ToolParserManager.get_tool_parser('glm47').__module__,"
        " ReasoningParserManager.get_reasoning_parser('glm45').__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=180)
    assert out.stdout.split()[-2:] == ["glm_plugin.engines.vllm.tools", "glm_plugin.engines.vllm.reasoning"], \
        out.stderr[-2000:]


def test_server_runs_our_model_and_mtp_drafts(server):
    """The round trip ran on glm_plugin's model and MTP classes, in every worker, with drafts proposed and accepted."""
    import urllib.request

    log = server.log.read_text()
    for built in ("Glm4MoeForCausalLM built by glm_plugin", "MTP draft Glm4MoeMTP built by glm_plugin"):
        workers = re.findall(r"^\((\w+) pid=\d+\).*" + re.escape(built), log, re.MULTILINE)
        assert len(set(workers)) == len(workers) == server.tp, (built, workers)
    metrics = urllib.request.urlopen(server.base + "/metrics", timeout=10).read().decode()

    def total(name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    drafted = total("vllm:spec_decode_num_draft_tokens_total")
    accepted = total("vllm:spec_decode_num_accepted_tokens_total")
    assert drafted > 0 and accepted > 0, (drafted, accepted)
    print(f"served MTP acceptance (TP={server.tp}): {accepted:.0f}/{drafted:.0f} = {accepted / drafted:.2f}")


def test_greedy_output_is_tp1s(server):
    """The chats of the round trip, token by token: TP=2 says what TP=1 says (equal, or parting only at a top-2 tie
    within the measured noise between the two servers)."""
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="x")
    runs = {"tokens": [], "logits": []}  # per chat: token strings, and each step's top-2 logprobs
    for ask in (ASK, "What is the weather in Lisbon?"):
        choice = _chat(client, [{"role": "user", "content": ask}], logprobs=True, top_logprobs=2).choices[0]
        assert choice.message.tool_calls, f"TP={server.tp}: no tool call for {ask!r}"
        runs["tokens"].append([step.token for step in choice.logprobs.content])
        runs["logits"].append([{alt.token: alt.logprob for alt in step.top_logprobs}
                               for step in choice.logprobs.content])
    TRANSCRIPTS[server.tp] = runs
    if server.tp == 1:
        return
    if 1 not in TRANSCRIPTS:
        pytest.skip("the TP=1 server did not run in this session; nothing to compare with")
    assert_same_within_noise(TRANSCRIPTS[1], runs, "".join, f"TP={server.tp} vs TP=1", BF16_NOISE_LIMIT)
