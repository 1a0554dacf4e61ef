"""`glm-plugin claude-code`: Claude Code against a GLM server, directly (`/v1/messages`) or through
claude-code-router, with the max-output-tokens trap closed in both.

Why: Claude Code asks for `max_tokens` far beyond what fits next to its ~47k-token first request (claude-code-router
1.0.73 forwards Claude Code's 128000), and vLLM answers HTTP 400 when prompt + max_tokens exceed the served context.
`CLAUDE_CODE_MAX_OUTPUT_TOKENS` (read by Claude Code in both set-ups) and the router's `maxtoken` transformer cap it
at what the server's context leaves. The served model name and context length are read from `/v1/models`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from glm_plugin.command.endpoint import EndpointError, api_root, list_models, pick_model

CLAUDE_CODE_PROMPT_TOKENS = 49152  # its system prompt and tool definitions: ~47k tokens measured, rounded up
OUTPUT_CAP = 32000  # enough for any one turn of code; more only shrinks what the prompt may use
DEFAULT_OUTPUT = 16384  # when the server does not say its context length
PROVIDER = "glm-local"
NO_KEY = "EMPTY"  # what clients send to a server without --api-key (any value is accepted)


def max_output_tokens(context: int | None) -> int:
    """What is left of the context after Claude Code's prompt, capped; at least 1024."""
    if not context:
        return DEFAULT_OUTPUT
    return max(1024, min(OUTPUT_CAP, context - CLAUDE_CODE_PROMPT_TOKENS))


def direct_env(url: str, model: str, max_output: int, api_key: str | None = None) -> dict[str, str]:
    """Claude Code talks to the server's `/v1/messages` itself."""
    return {
        "ANTHROPIC_BASE_URL": api_root(url),
        "ANTHROPIC_AUTH_TOKEN": api_key or NO_KEY,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,  # Claude Code's background calls use the "fast" model
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(max_output),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def router_config(url: str, model: str, max_output: int, api_key: str | None = None) -> dict:
    """`~/.claude-code-router/config.json` in the deployment guide's format, plus the max_tokens cap."""
    return {
        "Providers": [{
            "name": PROVIDER,
            "api_base_url": api_root(url) + "/v1/chat/completions",
            "api_key": api_key or NO_KEY,
            "models": [model],
            "transformer": {"use": [["maxtoken", {"max_tokens": max_output}]]},
        }],
        "Router": {"default": f"{PROVIDER},{model}", "background": f"{PROVIDER},{model}",
                   "think": f"{PROVIDER},{model}", "longContext": f"{PROVIDER},{model}"},
    }


def export_lines(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def _write_json(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    note = ""
    if path.exists():
        old = path.read_text()
        if old.strip() and json.loads(old or "{}") != data:
            backup = path.with_name(path.name + ".bak")
            backup.write_text(old)
            note = f" (previous kept as {backup})"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return note


def write_files(home: Path, env: dict[str, str], config: dict) -> list[str]:
    """Write the router config, the env file for the direct set-up and the output cap in Claude Code's settings.

    Only CLAUDE_CODE_MAX_OUTPUT_TOKENS goes into ~/.claude/settings.json: Claude Code applies that file's `env`
    over the process environment, so an ANTHROPIC_BASE_URL there would bypass claude-code-router."""
    done = []
    router = home / ".claude-code-router" / "config.json"
    done.append(f"wrote {router}{_write_json(router, config)}")
    router.chmod(0o600)  # it holds the server's API key

    settings_path = home / ".claude" / "settings.json"
    settings = json.loads(settings_path.read_text() or "{}") if settings_path.exists() else {}
    settings.setdefault("env", {})["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]
    done.append(f"wrote {settings_path}{_write_json(settings_path, settings)}")

    env_file = home / ".config" / "glm-plugin" / "claude-code.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(export_lines(env))
    env_file.chmod(0o600)
    done.append(f"wrote {env_file}")
    return done


def main(url: str, model: str | None = None, max_output: int | None = None, write: bool = False,
         home: str | None = None, api_key: str | None = None, out=None, err=None) -> int:
    """Print (and with `write`, write) both set-ups for the model the server really serves; exit 1 and write
    nothing when the server cannot tell (no answer, wrong URL, wrong key, or `model` not served)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        served = pick_model(list_models(url, api_key), model, api_root(url))
    except EndpointError as problem:
        print(f"glm-plugin claude-code: {problem}. Nothing was {'written' if write else 'printed'}: the set-up "
              "needs the served model's name and context from /v1/models", file=err)
        return 1
    model, context = served["id"], served.get("max_model_len")
    max_output = max_output or max_output_tokens(context)
    if context and context < CLAUDE_CODE_PROMPT_TOKENS + 1024:
        print(f"# warning: the server's context is {context} tokens; Claude Code's first request alone is about "
              f"47k. Restart it with a longer context, e.g. `glm-plugin serve ... --max-model-len 65536`", file=out)
    env = direct_env(url, model, max_output, api_key)
    config = router_config(url, model, max_output, api_key)
    print("# 1. Claude Code directly against the server's /v1/messages:", file=out)
    print(export_lines(env), end="", file=out)
    print("claude", file=out)
    print("\n# 2. Through claude-code-router: ~/.claude-code-router/config.json", file=out)
    print(json.dumps(config, indent=2), file=out)
    print(f"# then: export CLAUDE_CODE_MAX_OUTPUT_TOKENS={max_output}; ccr restart; ccr code", file=out)
    if write:
        for line in write_files(Path(home or os.path.expanduser("~")), env, config):
            print(f"# {line}", file=out)
        print("# direct: source ~/.config/glm-plugin/claude-code.env && claude   |   router: ccr restart && ccr code",
              file=out)
    return 0
