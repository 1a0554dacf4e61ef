"""`glm-plugin claude-code`: the max-output cap follows the served context, the router config has the guide's shape
plus the cap, and --write leaves other settings alone and keeps the previous router config."""

from __future__ import annotations

import io
import json

from fake_glm_server import FakeGlmServer

from glm_plugin import claude_code


def test_output_cap_leaves_room_for_claude_codes_prompt():
    assert claude_code.max_output_tokens(65536) == 65536 - claude_code.CLAUDE_CODE_PROMPT_TOKENS
    assert claude_code.max_output_tokens(202752) == claude_code.OUTPUT_CAP
    assert claude_code.max_output_tokens(4096) == 1024
    assert claude_code.max_output_tokens(None) == claude_code.DEFAULT_OUTPUT


def test_router_config_shape():
    config = claude_code.router_config("http://10.0.0.5:8000/v1", "glm-4.7", 16384)
    provider = config["Providers"][0]
    assert provider["api_base_url"] == "http://10.0.0.5:8000/v1/chat/completions"
    assert provider["models"] == ["glm-4.7"] and provider["api_key"] == "EMPTY"
    assert provider["transformer"] == {"use": [["maxtoken", {"max_tokens": 16384}]]}
    assert config["Router"]["default"] == "glm-local,glm-4.7"


def test_write_into_a_fresh_and_an_existing_home(tmp_path):
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"theme": "dark", "env": {"FOO": "1"}}))
    router = tmp_path / ".claude-code-router" / "config.json"
    router.parent.mkdir()
    router.write_text('{"Providers": []}')
    with FakeGlmServer() as url:
        out = io.StringIO()
        assert claude_code.main(url, write=True, home=str(tmp_path), out=out) == 0
    text = out.getvalue()
    assert "export ANTHROPIC_BASE_URL=" + url in text and "export ANTHROPIC_MODEL=fake-glm" in text
    written = json.loads(settings.read_text())
    assert written["theme"] == "dark" and written["env"] == {"FOO": "1", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "16384"}
    assert "ANTHROPIC_BASE_URL" not in written["env"]  # it would route around claude-code-router
    assert json.loads(router.read_text())["Providers"][0]["models"] == ["fake-glm"]
    assert (router.parent / "config.json.bak").read_text() == '{"Providers": []}'
    env_file = (tmp_path / ".config" / "glm-plugin" / "claude-code.env").read_text()
    assert f"export ANTHROPIC_BASE_URL={url}\n" in env_file and "CLAUDE_CODE_MAX_OUTPUT_TOKENS=16384" in env_file


def test_short_context_warns(monkeypatch):
    monkeypatch.setattr(claude_code, "served_models", lambda url: [{"id": "glm-tiny", "max_model_len": 4096}])
    out = io.StringIO()
    claude_code.main("http://127.0.0.1:8000", out=out)
    assert "context is 4096 tokens" in out.getvalue() and "--max-model-len 65536" in out.getvalue()
