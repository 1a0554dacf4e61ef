"""The SDK examples ask the server for its model instead of assuming the bundled checkpoint's name (a real server
answers `glm-tiny` with HTTP 404)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fake_glm_server import FakeGlmServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("name", "suffix"), [("chat.py", "/v1"), ("anthropic_messages.py", "")])
def test_examples_use_the_servers_first_model(name, suffix):
    pytest.importorskip("openai" if name == "chat.py" else "anthropic")
    server = FakeGlmServer()
    with server as url:
        out = subprocess.run([sys.executable, str(EXAMPLES / name), "--base-url", url + suffix],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert server.received and {body["model"] for body in server.received} == {"fake-glm"}
