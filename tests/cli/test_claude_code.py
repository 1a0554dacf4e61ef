"""`glm-plugin claude-code`: the max-output cap follows the served context, the router config has the guide's shape
plus the cap, and --write leaves other settings alone and keeps the previous router config."""

from __future__ import annotations

import io
import json

import pytest
from fake_glm_server import FakeGlmServer

from glm_plugin.command import claude_code, cli


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


def test_short_context_warns():
    out = io.StringIO()
    with FakeGlmServer(max_model_len=4096) as url:
        assert claude_code.main(url, out=out) == 0
    assert "context is 4096 tokens" in out.getvalue() and "--max-model-len 65536" in out.getvalue()


def test_output_cap_follows_the_served_context():
    out = io.StringIO()
    with FakeGlmServer(max_model_len=65536) as url:
        assert claude_code.main(url, out=out) == 0
    assert f"export CLAUDE_CODE_MAX_OUTPUT_TOKENS={65536 - claude_code.CLAUDE_CODE_PROMPT_TOKENS}" in out.getvalue()


def test_nothing_is_written_when_the_server_does_not_answer(tmp_path):
    with FakeGlmServer() as url:
        pass  # closed: nothing listens there now
    out, err = io.StringIO(), io.StringIO()
    assert claude_code.main(url, write=True, home=str(tmp_path), out=out, err=err) == 1
    assert not list(tmp_path.iterdir()) and out.getvalue() == ""
    assert "nothing is listening" in err.getvalue() and "Nothing was written" in err.getvalue()


def test_a_model_the_server_does_not_serve_is_refused(tmp_path):
    err = io.StringIO()
    with FakeGlmServer() as url:
        assert claude_code.main(url, "glm-4.7", write=True, home=str(tmp_path), out=io.StringIO(), err=err) == 1
    assert "serves fake-glm, not 'glm-4.7'" in err.getvalue() and not list(tmp_path.iterdir())


def test_the_api_key_reaches_both_set_ups_and_stays_private(tmp_path):
    with FakeGlmServer(api_key="sekret") as url:
        err = io.StringIO()
        assert claude_code.main(url, write=True, home=str(tmp_path), out=io.StringIO(), err=err) == 1
        assert "wants an API key" in err.getvalue()
        assert cli.main(["claude-code", "--url", url, "--api-key", "sekret", "--write", "--home", str(tmp_path)]) == 0
    router = tmp_path / ".claude-code-router" / "config.json"
    env_file = tmp_path / ".config" / "glm-plugin" / "claude-code.env"
    assert json.loads(router.read_text())["Providers"][0]["api_key"] == "sekret"
    assert "export ANTHROPIC_AUTH_TOKEN=sekret\n" in env_file.read_text()
    assert router.stat().st_mode & 0o777 == 0o600 and env_file.stat().st_mode & 0o777 == 0o600


def test_help_says_what_the_code_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["claude-code", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"minus {claude_code.CLAUDE_CODE_PROMPT_TOKENS:,} tokens" in text
    assert f"between 1,024 and {claude_code.OUTPUT_CAP:,}" in text and f"{claude_code.DEFAULT_OUTPUT:,}" in text
    for written in ("~/.claude-code-router/config.json", "~/.claude/settings.json",
                    "~/.config/glm-plugin/claude-code.env"):
        assert written in "".join(text.split())  # argparse may wrap a path at its hyphen
    assert "--api-key" in text
