"""Every script in examples/ run against vLLM serving the bundled tiny checkpoint, its printed output asserted; then
`glm-plugin check` and `glm-plugin chat --script` against the same server: the shared `glm-plugin serve --demo` server (conftest.py). The assertions are what the tiny model reliably answers (docs/tiny-model.md): the
greeting, the timer call with its exact typed arguments, and the answer quoting the tool result's id.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("openai")
pytest.importorskip("anthropic")

from glm_plugin.command import chat, conformance  # noqa: E402

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GREETING = "Hello! How can I help you today?"


@pytest.fixture(scope="module")
def server(demo_server) -> str:
    return demo_server.base


def run_example(name: str, base_url: str) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / name), "--base-url", base_url],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def lines_starting(text: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in text.splitlines() if line.startswith(prefix)]


def test_completion_splits_the_thinking_off_by_hand(server):
    out = run_example("completion.py", server + "/v1")
    reasoning, answer = lines_starting(out, "reasoning:")[0], lines_starting(out, "answer:")[0]
    assert reasoning and "</think>" not in reasoning and "<think>" not in answer
    assert answer == GREETING
    assert lines_starting(out, "finish_reason:") == ["stop"]
    assert re.search(r"usage: \d+ prompt \+ \d+ completion tokens", out)


def test_chat_separates_reasoning_and_answer(server):
    out = run_example("chat.py", server + "/v1")
    assert lines_starting(out, "reasoning:")[0] not in ("", "None")
    assert lines_starting(out, "answer:") == [GREETING]
    assert lines_starting(out, "finish_reason:") == ["stop"]


def test_streaming_prints_thinking_then_answer_then_usage(server):
    out = run_example("streaming.py", server + "/v1")
    sections = [line for line in out.splitlines() if line.startswith("====")]
    assert [s.strip("= ") for s in sections] == ["thinking", "answer", "usage"]
    body = out.split("\n")
    assert body[body.index(next(s for s in body if "answer" in s and s.startswith("="))) + 1] == GREETING
    usage = re.search(r"prompt_tokens=(\d+) completion_tokens=(\d+)", out)
    assert usage and int(usage.group(1)) > 0 and int(usage.group(2)) > 0


def test_thinking_modes(server):
    out = run_example("thinking_modes.py", server + "/v1")
    reasoning = lines_starting(out, "  reasoning:")
    assert reasoning[0] not in ("", "None") and reasoning[1] == "None"
    assert lines_starting(out, "  answer:") == [GREETING, GREETING]


def test_openai_tools_round_trip(server):
    out = run_example("openai_tools.py", server + "/v1")
    assert lines_starting(out, "reasoning:")[0] not in ("", "None")
    assert lines_starting(out, "tool call:") == ["set_timer {'minutes': 25, 'label': 'Tea Break'}"]
    # streamed argument fragments printed back to back are exactly one JSON text (issue 17's stray spaces)
    streamed = lines_starting(out, "streamed:")[0]
    name, _, arguments = streamed.partition(" ")
    assert name == "set_timer" and json.loads(arguments) == {"minutes": 25, "label": "Tea Break"}
    assert arguments == '{"minutes": 25, "label": "Tea Break"}'
    answer = lines_starting(out, "answer:")[0]
    assert "4821" in answer and len(answer) < 200, answer  # uses the result; no runaway repetition
    assert lines_starting(out, "thinking off, reasoning:") == ["None"]
    assert lines_starting(out, "thinking off, tool call:")[0].startswith("set_timer {'minutes': 25")


def test_anthropic_messages_round_trip(server):
    out = run_example("anthropic_messages.py", server)
    assert lines_starting(out, "thinking:")[0]
    assert lines_starting(out, "tool_use:") == ['set_timer {"minutes": 25, "label": "Tea Break"}']
    assert lines_starting(out, "stop_reason:") == ["tool_use"]
    answer = lines_starting(out, "answer:")[0]
    assert "4821" in answer and len(answer) < 200, answer


def test_check_passes_against_the_served_checkpoint(server):
    out = io.StringIO()
    status = conformance.main(server, max_tokens=128, file=out)
    assert status == 0, out.getvalue()
    assert "all 9 checks passed" in out.getvalue()


def test_chat_script_runs_the_tool_loop_and_sends_reasoning_back(server, tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("# a comment\nWhat is the weather in Tokyo?\n/thinking off\n/reset\n"
                      "Set a timer for 10 minutes called Pasta Break.\n")
    out = io.StringIO()
    assert chat.main(server, None, str(script), max_tokens=128, file=out) == 0
    text = out.getvalue()
    assert 'tool call: get_weather {"city": "Tokyo"}' in text
    assert 'tool result: {"city": "Tokyo", "temp": 24, "condition": "Sunny"}' in text
    assert "glm: It is 24 degrees and Sunny in Tokyo." in text
    after_off = text.split("thinking off", 1)[1]
    assert "thinking:" not in after_off
    assert 'tool call: set_timer {"minutes": 10, "label": "Pasta Break"}' in after_off
