"""Engine mode of the parser benchmark: tool-call arguments streamed token by token through each engine's own parser
interface, in one run:

1. glm_plugin's parsers against the engine's built-in ones, a 64 KB string argument (`--size`);
2. glm_plugin's parsers alone at 8 KB, 64 KB, 256 KB and 1 MB, string and array arguments, with each engine path's
   1 MB / 8 KB cost ratio (flat = linear time; the anchor is the 8 KB run of the same process);
3. a 1 MB argument to a tool the request does not declare (held until `</tool_call>`, then released in one step)
   against the same argument to a declared tool, per token, in the same process (the anchor): at most 1.3x.

- vLLM: `ParserManager.get_parser(tool_parser_name="glm47", reasoning_parser_name="glm45", ...)`, then
  `parse_delta()` per token with the prompt ids, as `serving.py` streams a chat completion.
- SGLang: `ReasoningParser("glm45")` -> `FunctionCallParser(tools, "glm47")`, `parse_stream_chunk()` per token
  and the end-of-stream flushes, as `serving_chat.py` does.

Engines load plugins once per process, so each engine runs in a fresh interpreter with the plugin loaded the
engine's way. vLLM resolves parser names process-wide, so its built-in runs in another interpreter with
`GLM_PLUGIN_DISABLE=parsers`; SGLang's built-in detectors run in the same interpreter, alternating with ours (best
of 5 each), through SGLang's own parser classes. Tokens come from the toy GLM tokenizer of tests/support (every
marker one special-token id, about 2 characters per text token). Every run's parsed result is checked: a fast
wrong answer does not count. Streamed fragments are collected in lists: a client that grows one string with `+=`
while another reference to it is alive copies it per token, and measures itself, not the parser.

    python bench/engine_parsers.py                 # both parts
    python bench/engine_parsers.py --size 262144   # part 1 at another size
    python bench/engine_parsers.py --scaling-only  # parts 2 and 3 (vLLM's built-in takes minutes at 64 KB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from parser_workload import SIZES, TOOLS, array_argument, string_argument

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the toy tokenizer

MESSAGES = [{"role": "user", "content": "write the file"}]
KINDS = {"string": ("content", string_argument), "array": ("lines", array_argument)}
UNDECLARED = "undeclared"  # a string argument, to a tool the request does not declare: part 3
UNDECLARED_TOOL = "save_file"
GOALS = {"vllm": 1000.0, "sglang": 3.0}  # at 64 KB, x faster than the engine's built-in (docs/engines.md)
FLAT = 1.3  # the most a 1 MB argument may cost per token, relative to an 8 KB one
MIN_SECONDS = 2.0  # repeat a fast run until this much time was measured, and keep the best


def _tool_and_kind(kind: str) -> tuple[str, str]:
    return (UNDECLARED_TOOL, "string") if kind == UNDECLARED else ("write_file", kind)


def model_output(kind: str, size: int) -> str:
    tool, kind = _tool_and_kind(kind)
    key, make = KINDS[kind]
    return (f"I will write the file.</think><tool_call>{tool}<arg_key>path</arg_key><arg_value>/tmp/x.py"
            f"</arg_value><arg_key>{key}</arg_key><arg_value>{make(size)}</arg_value></tool_call>")


def _check(kind: str, size: int):
    tool, kind = _tool_and_kind(kind)
    key, make = KINDS[kind]
    value = make(size)
    expected = {"path": "/tmp/x.py", key: value if kind == "string" else json.loads(value)}

    def check(result: tuple[str, str, str]) -> None:
        reasoning, name, arguments = result
        assert reasoning == "I will write the file.", f"reasoning {reasoning[:80]!r}"
        assert name == tool, f"tool name {name!r}"
        assert json.loads(arguments) == expected, "arguments differ from the model's"
    return check


def _timed(run, check) -> tuple[float, int]:
    best, total, repeats = float("inf"), 0.0, 0
    while repeats < 10 and (repeats == 0 or total < MIN_SECONDS):
        seconds, result = run()
        check(result)
        best, total, repeats = min(best, seconds), total + seconds, repeats + 1
    return best, repeats


def vllm_worker(cases: list[tuple[str, int]]) -> list[dict]:
    import vllm.plugins
    from toy_tokenizer import token_deltas, toy_glm_tokenizer
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.parser.parser_manager import ParserManager

    vllm.plugins.load_general_plugins()
    tokenizer = toy_glm_tokenizer("glm47")
    prompt = tokenizer.encode(tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)
    parser_cls = ParserManager.get_parser(tool_parser_name="glm47", reasoning_parser_name="glm45",
                                          enable_auto_tools=True, tokenizer=tokenizer)

    def measure(kind: str, size: int) -> dict:
        steps = token_deltas(tokenizer, model_output(kind, size))

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

        best, repeats = _timed(run, _check(kind, size))
        return {"kind": kind, "size": size, "seconds": best, "repeats": repeats, "tokens": len(steps),
                "parser": parser_cls.tool_parser_cls.__name__}

    return [measure(kind, size) for kind, size in cases]


def sglang_worker(cases: list[tuple[str, int]], builtin_too: bool) -> list[dict]:
    """Ours (and, with `builtin_too`, the built-in) in one process, alternating, so both see the same machine load.

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
    tools = [Tool(**tool) for tool in TOOLS]

    def runner(steps, reasoning_cls, tool_cls):
        def run():
            # As serving_chat builds it for a request with tools (a detector without the flag is not given it).
            reasoning_parser = reasoning_cls("glm45", stream_reasoning=True, force_reasoning=True, tokenizer=tokenizer,
                                             tool_call_parser_active=True)
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

    def measure(kind: str, size: int) -> dict:
        steps = token_deltas(tokenizer, model_output(kind, size))
        check = _check(kind, size)
        runs = {"ours": runner(steps, ReasoningParser, FunctionCallParser)}
        if builtin_too:
            runs["builtin"] = runner(steps, BuiltinReasoningParser, BuiltinFunctionCallParser)
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(5):
            for label, run in runs.items():
                seconds, result = run()
                check(result)
                best[label] = min(best[label], seconds)
        parsers = {"ours": FunctionCallParser, "builtin": BuiltinFunctionCallParser}
        return {label: {"kind": kind, "size": size, "seconds": best[label], "tokens": len(steps),
                        "parser": type(parsers[label](tools, "glm47").detector).__name__} for label in runs}

    return [measure(kind, size) for kind, size in cases]


def run_worker(engine: str, cases: list[tuple[str, int]], builtin: bool, timeout: float) -> list[dict] | dict:
    """One engine in a fresh interpreter; a list of results, or {"error": ...}."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLM_PLUGIN_DISABLE", "VLLM_PLUGINS", "SGLANG_PLUGINS")}
    if builtin and engine == "vllm":
        env["GLM_PLUGIN_DISABLE"] = "parsers"
    command = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--cases", json.dumps(cases)]
    if builtin:
        command.append("--builtin")
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s", "seconds": timeout, "lower_bound": True}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _us_per_token(result: dict) -> float:
    return result["seconds"] / result["tokens"] * 1e6


def compare_with_builtins(size: int, timeout: float) -> bool:
    """Part 1. True if every run worked."""
    print(f"1. glm_plugin vs the engine's built-in: one tool call with a {size // 1024} KB string argument")
    ok = True
    for engine in ("vllm", "sglang"):
        if engine == "vllm":  # ParserManager resolves names process-wide: the built-in needs its own process
            ours = run_worker(engine, [("string", size)], builtin=False, timeout=timeout)
            builtin = run_worker(engine, [("string", size)], builtin=True, timeout=timeout)
            ours, builtin = (r[0] if isinstance(r, list) else r for r in (ours, builtin))
        else:
            both = run_worker(engine, [("string", size)], builtin=True, timeout=timeout)
            ours, builtin = (both[0]["ours"], both[0]["builtin"]) if isinstance(both, list) else (both, both)
        for label, result in (("glm_plugin", ours), ("built-in", builtin)):
            if "error" in result and not result.get("lower_bound"):
                print(f"  {engine:6s} {label:10s} FAILED: {result['error']}")
                continue
            detail = result.get("error") or (f"{result['tokens']} tokens, {_us_per_token(result):8.2f} us/token, "
                                             f"{result['parser']}")
            print(f"  {engine:6s} {label:10s} {result['seconds']:10.4f} s   {detail}")
        if "error" in ours or ("error" in builtin and not builtin.get("lower_bound")):
            ok = False
            continue
        ratio = builtin["seconds"] / ours["seconds"]
        bound = ">= " if builtin.get("lower_bound") else ""
        verdict = "meets" if ratio >= GOALS[engine] else "MISSES"
        print(f"  {engine:6s} ratio built-in / glm_plugin: {bound}{ratio:.1f}x  "
              f"({verdict} the {GOALS[engine]:g}x goal)")
    return ok


def scaling(timeout: float) -> bool:
    """Part 2. True if every run worked and every engine path stayed flat."""
    print(f"2. glm_plugin through each engine's path, us/token by argument size (flat: 1 MB / 8 KB <= {FLAT}x)")
    cases = [(kind, size) for kind in KINDS for size in SIZES]
    ok = True
    for engine in ("vllm", "sglang"):
        results = _ours(engine, cases, timeout)
        if results is None:
            ok = False
            continue
        for kind in KINDS:
            row = {r["size"]: _us_per_token(r) for r in results if r["kind"] == kind}
            ratio = row[SIZES[-1]] / row[SIZES[0]]
            flat = ratio <= FLAT
            ok = ok and flat
            cells = "  ".join(f"{size >> 10:>5}KB {row[size]:6.2f}" for size in SIZES)
            print(f"  {engine:6s} {kind:6s} {cells}   1MB/8KB {ratio:4.2f}x {'flat' if flat else 'NOT FLAT'}")
    return ok


def _ours(engine: str, cases: list, timeout: float) -> list[dict] | None:
    """glm_plugin's rows for `cases` through `engine`'s parser path, or None when the run failed (said here)."""
    results = run_worker(engine, cases, builtin=False, timeout=timeout)
    if isinstance(results, dict):
        print(f"  {engine:6s} FAILED: {results['error']}")
        return None
    return [r["ours"] for r in results] if engine == "sglang" else results


def undeclared(timeout: float) -> bool:
    """Part 3. True if every run worked and the undeclared tool's call cost per token stayed within FLAT."""
    size = SIZES[-1]
    print(f"3. a {size >> 10} KB string argument to an undeclared tool vs a declared one, us/token "
          f"(flat: undeclared / declared <= {FLAT}x)")
    ok = True
    for engine in ("vllm", "sglang"):
        results = _ours(engine, [("string", size), (UNDECLARED, size)], timeout)
        if results is None:
            ok = False
            continue
        declared, held = (_us_per_token(r) for r in results)
        ratio = held / declared
        flat = ratio <= FLAT
        ok = ok and flat
        print(f"  {engine:6s} declared {declared:6.2f}  undeclared {held:6.2f}   undeclared/declared {ratio:4.2f}x "
              f"{'flat' if flat else 'NOT FLAT'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64 << 10, help="part 1's argument size in characters (64 KB)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per engine process")
    parser.add_argument("--scaling-only", action="store_true", help="skip part 1 (the built-in parsers)")
    parser.add_argument("--undeclared-only", action="store_true", help="part 3 alone")
    parser.add_argument("--worker", choices=("vllm", "sglang"), help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--builtin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engines", action="store_true", help=argparse.SUPPRESS)  # from `bench/parsers.py --engines`
    args = parser.parse_args(argv)
    if args.worker:
        cases = [tuple(case) for case in json.loads(args.cases)]
        results = vllm_worker(cases) if args.worker == "vllm" else sglang_worker(cases, args.builtin)
        print(json.dumps(results))
        return 0
    if args.undeclared_only:
        return 0 if undeclared(args.timeout) else 1
    ok = args.scaling_only or compare_with_builtins(args.size, args.timeout)
    ok = scaling(args.timeout) and ok
    ok = undeclared(args.timeout) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
