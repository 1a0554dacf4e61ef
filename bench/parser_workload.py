"""The parser benchmarks' workload: one GLM-4.7 `write_file` tool, and string and array arguments of a given size.

Shared by bench/parsers.py (core mode) and bench/engine_parsers.py (engine mode), so both stream the same text.
"""

from __future__ import annotations

import json

TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "content": {"type": "string"}, "lines": {"type": "array", "items": {"type": "string"}},
}}}}]
SIZES = [8 << 10, 64 << 10, 256 << 10, 1 << 20]


def string_argument(size: int) -> str:
    line = 'def f(x):\n    return x < 3 and "a" or \'b\'  # <tag> & more\n'
    return (line * (size // len(line) + 1))[:size]


def array_argument(size: int) -> str:
    items, total = [], 2
    while total < size:
        item = f"line {len(items)}: <value> & \"quoted\""
        items.append(item)
        total += len(json.dumps(item)) + 2
    return json.dumps(items)
