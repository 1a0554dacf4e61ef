"""`glm-plugin`: serve GLM (or the bundled tiny checkpoint), run the demo, chat, check an endpoint, set up Claude Code.

Each subcommand lives in its own module. `serve`'s two (serve_command, cpu_server: standard library only) are
imported with this one; `demo`, `chat`, `check` and `claude-code`, which pull in HTTP clients, only when chosen, so
`glm-plugin --help` stays instant and no engine is imported here. `serve` builds the command and hands the process
over to the engine with exec, so the engine's own signals and logs behave as if the user had typed the command.
"""

from __future__ import annotations

import argparse
import os
import sys

from glm_plugin import settings
from glm_plugin.command import serve_command as sc
from glm_plugin.command.cpu_server import (DEMO_MODEL_NAME, bundled_model_dir, cpu_environment, cpu_step_flags,
                                           demo_server_command, disabled_note)

DEMO_URL = "http://127.0.0.1:8000"  # where `glm-plugin serve` listens by default
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ALL_INTERFACES = ("0.0.0.0", "::")


def _demo_only_options(args: argparse.Namespace) -> list[str]:
    """Options that mean something for `--model DIR` only; given for the demo, they would be ignored silently."""
    given = {"--engine": args.engine != "vllm", "--gpus": args.gpus is not None, "--nodes": args.nodes != 1,
             "--node-rank": args.node_rank != 0, "--head-address": args.head_address is not None,
             "--no-speculative": args.no_speculative, "--speculative-tokens": args.speculative_tokens is not None,
             "--served-model-name": args.served_model_name is not None}
    return [name for name, set_ in given.items() if set_]


def _serve(args: argparse.Namespace, extra: list[str]) -> int:
    key = ["--api-key", args.api_key] if args.api_key else []
    if args.model is None or args.demo:
        if args.model and args.demo:
            raise sc.ServeError("pass either --demo or --model DIR, not both")
        ignored = _demo_only_options(args)
        if ignored:
            raise sc.ServeError(f"{', '.join(ignored)}: only with --model DIR (a GLM checkpoint); the bundled demo "
                                "checkpoint is always served by vLLM on this CPU")
        cmd, env = demo_server_command(args.host, args.port, args.max_model_len, key + extra)
        model, served, engine, gpus = bundled_model_dir(), DEMO_MODEL_NAME, "vllm", 0
    else:
        checkpoint = sc.read_checkpoint(args.model)
        engine = args.engine
        gpus = sc.detect_gpus() * args.nodes if args.gpus is None else args.gpus
        model, served = checkpoint.path, args.served_model_name or sc.default_served_name(checkpoint.path)
        flags = sc.engine_flags(engine, checkpoint, gpus, speculative=not args.no_speculative,
                                draft_tokens=args.speculative_tokens, nodes=args.nodes, node_rank=args.node_rank,
                                head_address=args.head_address)
        if args.max_model_len:
            flags += ["--context-length" if engine == "sglang" else "--max-model-len", str(args.max_model_len)]
        if gpus == 0 and engine == "vllm":
            flags += cpu_step_flags(extra)
        cmd = sc.server_command(engine, model, host=args.host, port=args.port, served_name=served,
                                flags=flags + key, extra=extra)
        env = cpu_environment(extra=flags + extra) if gpus == 0 and engine == "vllm" else dict(os.environ)
    sc.refuse_conflicts(engine, cmd[:len(cmd) - len(extra)], extra)
    from_env = args.api_key and args.api_key == settings.value("GLM_API_KEY")
    hidden = {args.api_key: '"$GLM_API_KEY"'} if from_env else {}
    print(f"glm-plugin: {sc.shell_line(cmd, env, dict(os.environ), hidden)}", flush=True)
    note = disabled_note(env)
    for line in ([note] if note else []) + _reach_notes(args.host, args.port, bool(args.api_key), args.node_rank):
        print(f"glm-plugin: {line}", flush=True)
    if args.dry_run:
        return 0
    sc.require_engine(engine, gpus)
    sc.require_free_port(args.host, args.port)
    print(f"glm-plugin: serving {model} as {served} with {engine} on {'CPU' if gpus == 0 else f'{gpus} GPUs'} "
          "(OpenAI /v1, Anthropic /v1/messages); stop with Ctrl-C", flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def _reach_notes(host: str, port: int, has_key: bool, node_rank: int = 0) -> list[str]:
    """Who can connect, and the URL to give them: loopback serves this machine only, a GPU box serves others."""
    if node_rank > 0:
        return [f"node {node_rank} joins node 0's server; clients connect to node 0"]
    local = f"http://{'127.0.0.1' if host in ALL_INTERFACES else host}:{port}"
    notes = [f"on this machine: `glm-plugin chat --url {local}` or `glm-plugin check {local}`"]
    if host in LOOPBACK:
        notes.append(f"listening on {host} only, so other machines cannot connect; for a server that a laptop uses, "
                     "pass --host 0.0.0.0 (all interfaces) and --api-key KEY")
        return notes
    addresses = sc.lan_addresses() if host in ALL_INTERFACES else [host]
    urls = ", ".join(f"http://{a}:{port}" for a in addresses) or f"http://THIS-MACHINE:{port}"
    notes.append(f"from another machine: {urls} (if a firewall is in between, open port {port})")
    if not has_key:
        notes.append(f"no --api-key: anyone who can reach port {port} can use this server")
    return notes


def _split_engine_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Everything after a bare `--` goes to the engine untouched."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


EXIT_CODES = "exit status: 0 {ok}; 1 {failed}; 2 the server could not be used (the message says what to fix)"
CHECK_HELP = """One small greedy request per property against an OpenAI-compatible GLM endpoint, one table row each:
  reasoning separated, thinking on      thinking in reasoning/reasoning_content, not in content
  no reasoning, thinking off            enable_thinking=false gives no reasoning
  tool call: valid, schema-typed JSON   arguments are JSON of the types the tool's schema declares
  parallel tool calls                   two calls in one answer
  answer after the tool result          the call turn and the result go back; the model answers and stops
  streaming equals non-streaming        streamed deltas concatenate to the whole answer (one and two calls)
  usage in the last streamed chunk      stream_options.include_usage
  Anthropic /v1/messages                tool_use blocks with typed input (SKIP where not offered)
"""


def build_parser() -> argparse.ArgumentParser:
    env_key = settings.value("GLM_API_KEY") or None  # every subcommand's --api-key default
    parser = argparse.ArgumentParser(prog="glm-plugin", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", allow_abbrev=False,
                           help="serve a GLM checkpoint with vLLM or SGLang; no --model: the bundled tiny "
                                "checkpoint on this CPU",
                           description="Print and run the engine command for a GLM checkpoint (GLM-4.5/4.6/4.7, "
                                       "GLM-4.7-Flash, GLM-5). Engine arguments go after a bare --, e.g. "
                                       "`glm-plugin serve --model DIR -- --kv-cache-dtype fp8`.")
    serve.add_argument("--demo", action="store_true", help="serve the bundled tiny checkpoint (the default)")
    serve.add_argument("--model", help="a local GLM checkpoint directory")
    serve.add_argument("--engine", choices=sc.ENGINES, default="vllm")
    serve.add_argument("--gpus", type=int, help="GPUs in all (default: all visible, times --nodes); sets TP/EP")
    serve.add_argument("--nodes", type=int, default=1, help="machines the server spans (more than 8 GPUs); run the "
                                                            "same command on each with its own --node-rank")
    serve.add_argument("--node-rank", type=int, default=0, help="this machine's rank; 0 serves HTTP")
    serve.add_argument("--head-address", help="multi-node: node 0's address, IP or IP:PORT, on every node")
    serve.add_argument("--dry-run", action="store_true",
                       help="print the command (with the environment it sets) and start nothing")
    serve.add_argument("--no-speculative", action="store_true", help="leave out MTP/EAGLE speculative decoding")
    serve.add_argument("--speculative-tokens", type=int,
                       help="draft depth, 0 = off (default: vLLM MTP 1, GLM-5 3; SGLang EAGLE 3 steps / 4 tokens)")
    serve.add_argument("--served-model-name",
                       help="the name clients send (default: the checkpoint's name in lower case)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on (default 127.0.0.1: this machine only); 0.0.0.0 for a "
                            "server other machines use, with --api-key")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=env_key,
                       help="clients must send it as a bearer token (default: $GLM_API_KEY, else none)")
    serve.add_argument("--max-model-len", type=int, help="default: the checkpoint's own limit")

    demo = sub.add_parser("demo", allow_abbrev=False,
                          help="serve the bundled checkpoint, run a scripted agent chat, stop (make demo)")
    demo.add_argument("--script", help="a chat script (default: the built-in weather + timer conversation)")
    demo.add_argument("--port", type=int, help="default: a free port")
    demo.add_argument("--log-dir", help="where the server log goes (default: a temporary directory)")

    chat = sub.add_parser("chat", allow_abbrev=False,
                          help="streaming terminal chat with thinking, tool calls and local demo tools",
                          epilog=EXIT_CODES.format(ok="the chat ended", failed="a request failed mid-chat"))
    chat.add_argument("--url", default=DEMO_URL, help=f"the server (default {DEMO_URL}; http:// may be left out)")
    chat.add_argument("--model", help="default: the server's first model")
    chat.add_argument("--api-key", default=env_key, help="default: $GLM_API_KEY")
    chat.add_argument("--script", help="replay a file of typed lines ('-' for stdin) instead of reading input")
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--temperature", type=float, default=0.0)

    check = sub.add_parser("check", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                           help="conformance run against an OpenAI-compatible GLM endpoint",
                           description=CHECK_HELP,
                           epilog=EXIT_CODES.format(ok="every check passed (or was skipped)",
                                                    failed="at least one check failed"))
    check.add_argument("url", nargs="?", default=DEMO_URL,
                       help=f"the server (default {DEMO_URL}; http:// may be left out)")
    check.add_argument("--model", help="default: the server's first model")
    check.add_argument("--api-key", default=env_key, help="default: $GLM_API_KEY")
    check.add_argument("--max-tokens", type=int, default=256)

    claude = sub.add_parser("claude-code", allow_abbrev=False,
                            help="Claude Code set-up for a GLM server (direct and claude-code-router)",
                            epilog="exit status: 0 printed (and written); 1 the server's /v1/models did not answer "
                                   "or does not serve --model: nothing is written")
    claude.add_argument("--url", default=DEMO_URL, help=f"the server (default {DEMO_URL}; http:// may be left out)")
    claude.add_argument("--model", help="default: the server's first model")
    claude.add_argument("--api-key", default=env_key,
                        help="the server's --api-key (default: $GLM_API_KEY, else none)")
    claude.add_argument("--max-output-tokens", type=int, default=None,
                        help="CLAUDE_CODE_MAX_OUTPUT_TOKENS (default: the served context minus 49,152 tokens for "
                             "Claude Code's prompt, between 1,024 and 32,000; 16,384 if the server does not say "
                             "its context)")
    claude.add_argument("--write", action="store_true",
                        help="write ~/.claude-code-router/config.json, env.CLAUDE_CODE_MAX_OUTPUT_TOKENS in "
                             "~/.claude/settings.json and ~/.config/glm-plugin/claude-code.env")
    claude.add_argument("--home", help="the HOME to write into (default: $HOME)")
    parser.subcommands = sub.choices  # for _unknown's "did you mean"
    return parser


def _unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """An unknown option is an error that names a close match; engine options go after `--`."""
    import difflib
    import re

    usage = parser.subcommands[command].format_help()
    flag = next((u for u in unknown if u.startswith("-")), unknown[0]).split("=", 1)[0]
    close = difflib.get_close_matches(flag, sorted(set(re.findall(r"--[a-z][a-z-]*", usage))), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    after = f"; engine arguments go after a bare --: glm-plugin serve ... -- {' '.join(unknown)}" \
        if command == "serve" else ""
    parser.error(f"{command}: unrecognized arguments: {' '.join(unknown)}{hint}{after}")


def main(argv: list[str] | None = None) -> int:
    ours, engine_args = _split_engine_args(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args, unknown = parser.parse_known_args(ours)
    if unknown:
        _unknown(parser, args.command, unknown)
    if args.command == "serve":
        return _serve(args, engine_args)
    if args.command == "demo":
        from glm_plugin.command import demo

        return demo.run(args.script, args.port, args.log_dir)
    if args.command == "chat":
        from glm_plugin.command import chat

        return chat.main(args.url, args.model, args.script, args.api_key, args.max_tokens, args.temperature)
    if args.command == "check":
        from glm_plugin.command import conformance

        return conformance.main(args.url, args.model, args.api_key, args.max_tokens)
    if args.command == "claude-code":
        from glm_plugin.command import claude_code

        return claude_code.main(args.url, args.model, args.max_output_tokens, args.write, args.home, args.api_key)
    return 2


if __name__ == "__main__":
    sys.exit(main())
