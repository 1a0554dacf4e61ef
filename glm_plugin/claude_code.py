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
import sys
import urllib.request
from pathlib import Path

from glm_plugin.chat_client import api_root

CLAUDE_CODE_PROMPT_TOKENS = 49152  # its system prompt and tool definitions: ~47k tokens measured, rounded up
OUTPUT_CAP = 32000  # enough for any one turn of code; more only shrinks what the prompt may use
DEFAULT_OUTPUT = 16384  # when the server does not say its context length
PROVIDER = "glm-local"


def served_models(url: str, timeout: float = 3.0) -> list[dict]:
    """`[{"id", "max_model_len"?}]` from the server, or [] when it is not reachable."""
    try:
        with urllib.request.urlopen(api_root(url) + "/v1/models", timeout=timeout) as reply:
            return list(json.load(reply).get("data", []))
    except (OSError, ValueError):
        return []


def max_output_tokens(context: int | None) -> int:
    """What is left of the context after Claude Code's prompt, capped; at least 1024."""
    if not context:
        return DEFAULT_OUTPUT
    return max(1024, min(OUTPUT_CAP, context - CLAUDE_CODE_PROMPT_TOKENS))


def direct_env(url: str, model: str, max_output: int) -> dict[str, str]:
    """Claude Code talks to the server's `/v1/messages` itself."""
    return {
        "ANTHROPIC_BASE_URL": api_root(url),
        "ANTHROPIC_AUTH_TOKEN": "EMPTY",  # vLLM without --api-key accepts any token
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,  # Claude Code's background calls use the "fast" model
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(max_output),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def router_config(url: str, model: str, max_output: int) -> dict:
    """`~/.claude-code-router/config.json` in the deployment guide's format, plus the max_tokens cap."""
    return {
        "Providers": [{
            "name": PROVIDER,
            "api_base_url": api_root(url) + "/v1/chat/completions",
            "api_key": "EMPTY",
            "models": [model],
            "transformer": {"use": [["maxtoken", {"max_tokens": max_output}]]},
        }],
        "Router": {"default": f"{PROVIDER},{model}", "background": f"{PROVIDER},{model}",
                   "think": f"{PROVIDER},{model}", "longContext": f"{PROVIDER},{model}"},
    }


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

    settings_path = home / ".claude" / "settings.json"
    settings = json.loads(settings_path.read_text() or "{}") if settings_path.exists() else {}
    settings.setdefault("env", {})["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]
    done.append(f"wrote {settings_path}{_write_json(settings_path, settings)}")

    env_file = home / ".config" / "glm-plugin" / "claude-code.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    done.append(f"wrote {env_file}")
    return done


def main(url: str, model: str | None = None, max_output: int | None = None, write: bool = False,
         home: str | None = None, out=None) -> int:
    out = out or sys.stdout
    models = served_models(url)
    served = next((m for m in models if not model or m.get("id") == model), None)
    if model is None:
        model = served["id"] if served else "glm-tiny"
    context = served.get("max_model_len") if served else None
    max_output = max_output or max_output_tokens(context)
    if not models:
        print(f"# note: {api_root(url)} did not answer /v1/models; using model {model!r} and "
              f"CLAUDE_CODE_MAX_OUTPUT_TOKENS={max_output}", file=out)
    elif context and context < CLAUDE_CODE_PROMPT_TOKENS + 1024:
        print(f"# warning: the server's context is {context} tokens; Claude Code's first request alone is about "
              f"47k. Restart it with a longer context, e.g. `glm-plugin serve ... --max-model-len 65536`", file=out)
    env = direct_env(url, model, max_output)
    config = router_config(url, model, max_output)
    print("# 1. Claude Code directly against the server's /v1/messages:", file=out)
    for key, value in env.items():
        print(f"export {key}={value}", file=out)
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
