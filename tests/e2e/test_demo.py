"""`make demo`'s code path (`python -m glm_plugin.command.cli demo`) from start to exit: the server comes up with
progress lines, the scripted chat shows thinking, typed tool calls, the local tools' results and answers that use
them, the server is stopped and the command exits 0."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

pytestmark = pytest.mark.e2e


def test_demo_runs_an_agent_round_trip_and_exits_0(tmp_path):
    out = subprocess.run([sys.executable, "-m", "glm_plugin.command.cli", "demo", "--log-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert re.search(r"glm-plugin: server ready in \d+ s \(glm-tiny\)", text), text[-2000:]
    stages = re.findall(r"glm-plugin: starting the server: ([a-zA-Z ]+), \d+ s\n", text)
    assert stages and len(stages) == len(set(stages)), stages  # one line per stage (polled each second), not the log
    assert "Loading safetensors" not in text and (tmp_path / "server.log").stat().st_size > 0

    chat = out.stdout
    assert "thinking: The user asks for the weather in Paris. I will call get_weather." in chat
    assert 'tool call: get_weather {"city": "Paris"}' in chat
    assert 'tool result: {"city": "Paris", "temp": 18, "condition": "Cloudy"}' in chat
    assert "glm: It is 18 degrees and Cloudy in Paris." in chat
    assert 'tool call: set_timer {"minutes": 25, "label": "Tea Break"}' in chat  # an integer, typed
    timer_id = re.search(r'tool result: \{"timer_id": (\d+), "status": "Started"\}', chat).group(1)
    assert f"glm: Timer {timer_id} is set for 25 minutes." in chat
    assert "glm-plugin demo: stopping the server" in chat and "glm-plugin demo: done." in chat

    port = int(re.search(r"at http://127\.0\.0\.1:(\d+)", text).group(1))
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the demo left its server running"
