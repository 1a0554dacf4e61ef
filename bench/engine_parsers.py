"""Engine mode of the parser benchmark: a 64 KB tool-call argument streamed token by token through each engine's
own parser interface, glm_plugin's parsers against the engine's built-in ones, in one run.

- vLLM: `ParserManager.get_parser(tool_parser_name="glm47", reasoning_parser_name="glm45", ...)`, then
  `parse_delta()` per token with the prompt ids, as `serving.py` streams a chat completion.
- SGLang: `ReasoningParser("glm45")` -> `FunctionCallParser(tools, "glm47")`, `parse_stream_chunk()` per token
  and the end-of-stream flushes, as `serving_chat.py` does.

Engines load plugins once per process, so each engine runs in a fresh interpreter with the plugin loaded the
engine's way. vLLM resolves parser names process-wide, so its built-in runs in another interpreter with
`GLM_PLUGIN_DISABLE=parsers`; SGLang's built-in detectors run in the same interpreter, alternating with ours (best
of 5 each), through SGLang's own parser classes. Tokens come from the toy GLM tokenizer
(every marker one special-token id, about 2 characters per text token). Every run's parsed result is checked:
a fast wrong answer does not count. The ratio is built-in time / our time, measured in the same run.

    python bench/engine_parsers.py                 # 64 KB
    python bench/engine_parsers.py --size 262144   # another size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "content": {"type": "string"},
}}}}]
MESSAGES = [{"role": "user", "content": "write the file"}]
GOALS = {"vllm": 1000.0, "sglang": 3.0}  # at 64 KB, x faster than the engine's built-in (docs/engines.md)
MIN_SECONDS = 2.0  # repeat a fast run until this much time was measured, and keep the best


def string_argument(size: int) -> str:
    line = 'def f(x):\n    return x < 3 and "a" or \'b\'  # <tag> & more\n'
    return (line * (size // len(line) + 1))[:size]


def model_output(size: int) -> str:
    return ("I will write the file.</think><tool_call>write_file<arg_key>path</arg_key><arg_value>/tmp/x.py"
            f"</arg_value><arg_key>content</arg_key><arg_value>{string_argument(size)}</arg_value></tool_call>")


def _timed(run, check) -> tuple[float, int]:
    best, total, repeats = float("inf"), 0.0, 0
    while repeats < 10 and (repeats == 0 or total < MIN_SECONDS):
        seconds, result = run()
        check(result)
        best, total, repeats = min(best, seconds), total + seconds, repeats + 1
    return best, repeats


def _check(size: int):
    expected = {"path": "/tmp/x.py", "content": string_argument(size)}

    def check(result: tuple[str, str, str]) -> None:
        reasoning, name, arguments = result
        assert reasoning == "I will write the file.", f"reasoning {reasoning[:80]!r}"
        assert name == "write_file", f"tool name {name!r}"
        assert json.loads(arguments) == expected, "arguments differ from the model's"
    return check


def vllm_worker(size: int) -> dict:
    import vllm.plugins
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser.parser_manager import ParserManager

    from toy_tokenizer import token_deltas, toy_glm_tokenizer

    vllm.plugins.load_general_plugins()
    tokenizer = toy_glm_tokenizer("glm47")
    prompt = tokenizer.encode(tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)
    steps = token_deltas(tokenizer, model_output(size))
    parser_cls = ParserManager.get_parser(tool_parser_name="glm47", reasoning_parser_name="glm45",
                                          enable_auto_tools=True, tokenizer=tokenizer)

    def run():
        request = ChatCompletionRequest(model="glm", messages=MESSAGES, tools=TOOLS)
        parser = parser_cls(tokenizer, request.tools, chat_template_kwargs={})
        request = parser.adjust_request(request)
        reasoning, name, arguments = [], "", []
        last = len(steps) - 1
        start = time.perf_counter()
        for i, (text, ids) in enumerate(steps):
            message = parser.parse_delta(text, ids, request, prompt_token_ids=prompt, finished=i == last)
            if message is not None:
                reasoning.append(message.reasoning or "")
                for call in message.tool_calls:
                    name = name or (call.function.name or "")
                    arguments.append(call.function.arguments or "")
        seconds = time.perf_counter() - start
        return seconds, ("".join(reasoning), name, "".join(arguments))

    best, repeats = _timed(run, _check(size))
    return {"seconds": best, "repeats": repeats, "tokens": len(steps), "parser": parser_cls.tool_parser_cls.__name__}


def sglang_worker(size: int) -> dict:
    """Ours and the built-in in one process, alternating, so both see the same machine load.

    The built-in is reached through SGLang's own `FunctionCallParser` / `ReasoningParser` code, subclassed only to
    look names up in a copy of the registry that still holds SGLang's detectors.
    """
    import sglang.srt.plugins
    from sglang.srt.entrypoints.openai.protocol import Tool
    from sglang.srt.function_call.function_call_parser import FunctionCallParser
    from sglang.srt.function_call.glm47_moe_detector import Glm47MoeDetector
    from sglang.srt.parser.reasoning_parser import Glm45Detector, ReasoningParser

    from toy_tokenizer import token_deltas, toy_glm_tokenizer

    sglang.srt.plugins.load_plugins()

    class BuiltinFunctionCallParser(FunctionCallParser):
        ToolCallParserEnum = {**FunctionCallParser.ToolCallParserEnum, "glm47": Glm47MoeDetector}

    class BuiltinReasoningParser(ReasoningParser):
        DetectorMap = {**ReasoningParser.DetectorMap, "glm45": Glm45Detector}

    tokenizer = toy_glm_tokenizer("glm47")
    steps = token_deltas(tokenizer, model_output(size))
    tools = [Tool(**tool) for tool in TOOLS]

    def runner(reasoning_cls, tool_cls):
        def run():
            reasoning_parser = reasoning_cls("glm45", stream_reasoning=True, force_reasoning=True, tokenizer=tokenizer)
            tool_parser = tool_cls(tools, "glm47", tokenizer=tokenizer)
            reasoning, name, arguments = [], "", []
            last = len(steps) - 1
            start = time.perf_counter()
            for i, (text, _) in enumerate(steps):
                thought, normal = reasoning_parser.parse_stream_chunk(text)
                if i == last:
                    end_thought, end_normal = reasoning_parser.parse_stream_end()
                    thought, normal = (thought or "") + (end_thought or ""), (normal or "") + (end_normal or "")
                reasoning.append(thought or "")
                _, calls = tool_parser.parse_stream_chunk(normal or "")
                if i == last:
                    calls = list(calls) + tool_parser.parse_stream_end()[1]
                for call in calls:
                    name = name or (call.name or "")
                    arguments.append(call.parameters)
            seconds = time.perf_counter() - start
            return seconds, ("".join(reasoning), name, "".join(arguments))
        return run

    check = _check(size)
    ours, builtin = runner(ReasoningParser, FunctionCallParser), runner(BuiltinReasoningParser, BuiltinFunctionCallParser)
    best = {"ours": float("inf"), "builtin": float("inf")}
    for _ in range(5):
        for label, run in (("ours", ours), ("builtin", builtin)):
            seconds, result = run()
            check(result)
            best[label] = min(best[label], seconds)
    return {
        "ours": {"seconds": best["ours"], "tokens": len(steps),
                 "parser": type(FunctionCallParser(tools, "glm47").detector).__name__},
        "builtin": {"seconds": best["builtin"], "tokens": len(steps),
                    "parser": type(BuiltinFunctionCallParser(tools, "glm47").detector).__name__},
    }


WORKERS = {"vllm": vllm_worker, "sglang": sglang_worker}


def run_worker(engine: str, size: int, builtin: bool, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLM_PLUGIN_DISABLE", "VLLM_PLUGINS", "SGLANG_PLUGINS")}
    if builtin:
        env["GLM_PLUGIN_DISABLE"] = "parsers"
    command = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--size", str(size)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s", "seconds": timeout, "lower_bound": True}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64 << 10, help="argument size in characters (default 64 KB)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per built-in run")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--engines", action="store_true", help=argparse.SUPPRESS)  # from `bench/parsers.py --engines`
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.size)))
        return 0

    print(f"engine mode: one tool call with a {args.size // 1024} KB string argument, streamed token by token")
    failed = False
    for engine in ("vllm", "sglang"):
        if engine == "vllm":  # ParserManager resolves names process-wide: the built-in needs its own process
            ours = run_worker(engine, args.size, builtin=False, timeout=args.timeout)
            builtin = run_worker(engine, args.size, builtin=True, timeout=args.timeout)
        else:
            both = run_worker(engine, args.size, builtin=False, timeout=args.timeout)
            ours, builtin = (both["ours"], both["builtin"]) if "ours" in both else (both, both)
        for label, result in (("glm_plugin", ours), ("built-in", builtin)):
            if "error" in result and not result.get("lower_bound"):
                print(f"  {engine:6s} {label:10s} FAILED: {result['error']}")
                continue
            detail = result.get("error") or (f"{result['tokens']} tokens, "
                                             f"{result['seconds'] / result['tokens'] * 1e6:8.2f} us/token, "
                                             f"{result['parser']}")
            print(f"  {engine:6s} {label:10s} {result['seconds']:10.4f} s   {detail}")
        if "error" in ours or ("error" in builtin and not builtin.get("lower_bound")):
            failed = True
            continue
        ratio = builtin["seconds"] / ours["seconds"]
        bound = ">= " if builtin.get("lower_bound") else ""
        verdict = "meets" if ratio >= GOALS[engine] else "MISSES"
        print(f"  {engine:6s} ratio built-in / glm_plugin: {bound}{ratio:.1f}x  ({verdict} the {GOALS[engine]:g}x goal)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
