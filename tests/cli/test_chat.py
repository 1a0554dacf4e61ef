"""`glm-plugin chat --script` against the fake endpoint: the tool loop runs the local tool, sends its result and the
call turn's reasoning back, and shows thinking, the call, the result and the answer; slash commands apply."""

from __future__ import annotations

import io

from fake_glm_server import REASONING, FakeGlmServer

from glm_plugin.command import chat
from glm_plugin.command.endpoint import api_root


def run_script(tmp_path, lines: str, **kw) -> tuple[str, list[dict]]:
    """Replay `lines` through `chat.main` against a fake endpoint: (what was printed, the request bodies)."""
    script = tmp_path / "script.txt"
    script.write_text(lines)
    server = FakeGlmServer()
    with server as url:
        out = io.StringIO()
        assert chat.main(url, None, str(script), file=out, **kw) == 0
    return out.getvalue(), server.received


def test_tool_round_trip_sends_reasoning_back(tmp_path):
    text, received = run_script(tmp_path, "# comment lines are skipped\nSet a timer for 25 minutes called Tea Break.\n",
                                max_tokens=64)
    assert "fake-glm" in text
    assert f"thinking: {REASONING}" in text
    assert 'tool call: set_timer {"minutes": 25, "label": "Tea Break"}' in text
    assert "tool result:" in text and "glm: Timer " in text and "is set." in text
    first, second = received
    assert first["max_tokens"] == 64 and first["stream"] is True
    assert first["chat_template_kwargs"] == {"enable_thinking": True}
    assistant, tool = second["messages"][1], second["messages"][2]
    assert assistant["reasoning_content"] == REASONING  # GLM-4.7's preserved thinking
    assert assistant["tool_calls"][0]["function"] == {"name": "set_timer",
                                                      "arguments": '{"minutes": 25, "label": "Tea Break"}'}
    assert tool["role"] == "tool" and tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert '"status": "Started"' in tool["content"]


def test_slash_commands(tmp_path):
    script = "/thinking off\n/tools none\nHello!\n/tools nope\n/reset\n/quit\nnever sent\n"
    text, received = run_script(tmp_path, script)
    assert [len(body["messages"]) for body in received] == [1]
    body = received[0]
    assert body["chat_template_kwargs"] == {"enable_thinking": False} and "tools" not in body
    assert "thinking:" not in text and "glm: Hello! How can I help you today?" in text
    assert "unknown tools ['nope']" in text and "conversation cleared" in text


def test_unreachable_server_exits_2_with_what_to_check():
    with FakeGlmServer() as url:
        pass
    out = io.StringIO()
    assert chat.main(url, None, None, file=out) == 2
    text = " ".join(out.getvalue().split())
    assert f"nothing is listening at {url}" in text and "glm-plugin serve" in text


def test_a_model_the_server_does_not_have_is_named(tmp_path):
    with FakeGlmServer() as url:
        out = io.StringIO()
        assert chat.main(url, "glm-4.7", None, file=out) == 2
    assert "serves fake-glm, not 'glm-4.7'" in " ".join(out.getvalue().split())


def test_api_root_accepts_every_form():
    assert api_root("http://h:8000/v1/") == api_root("http://h:8000") == api_root("h:8000") == "http://h:8000"
    assert api_root("https://h/v1") == "https://h"
