"""The local tools `glm-plugin chat` offers the model: a fixed weather table, the clock, a pretend timer, a calculator.

Why these: they are safe to run on anyone's machine (no network, no files, no `eval`), and their schemas are the
ones the bundled tiny checkpoint was trained on (`get_weather {city, unit}`, `get_time {}`,
`set_timer {minutes, label}`; docs/tiny-model.md), so the demo's round trip works with it; a real GLM uses them
just as well.
"""

from __future__ import annotations

import ast
import json
import operator
import time
import zlib
from typing import Any, Callable

# A fixed table: the demo is reproducible, and a city that is not in it gets an error the model can read.
WEATHER = {
    "Paris": (18, "Cloudy"), "Tokyo": (24, "Sunny"), "Lisbon": (21, "Clear"), "Oslo": (7, "Rain"),
    "Berlin": (12, "Windy"), "Cairo": (33, "Sunny"), "Lima": (19, "Fog"), "Seoul": (15, "Clear"),
}


def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


SCHEMAS = {
    "get_weather": _function("get_weather", "Current weather for a city",
                             {"city": {"type": "string"},
                              "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
    "get_time": _function("get_time", "Current local time", {}, []),
    "set_timer": _function("set_timer", "Start a named timer",
                           {"minutes": {"type": "integer"}, "label": {"type": "string"}}, ["minutes", "label"]),
    # "Evaluate arithmetic": with a longer description the tiny model copied its words into answers.
    "calculate": _function("calculate", "Evaluate arithmetic", {"expression": {"type": "string"}}, ["expression"]),
}


def get_weather(city: str, unit: str = "celsius") -> dict:
    known = {name.lower(): name for name in WEATHER}
    name = known.get(str(city).strip().lower())
    if name is None:
        return {"error": f"no weather for {city}", "known_cities": sorted(WEATHER)}
    celsius, condition = WEATHER[name]
    temp = celsius if unit != "fahrenheit" else round(celsius * 9 / 5 + 32)
    return {"city": name, "temp": temp, "condition": condition}


def get_time(now: Callable[[], float] = time.time) -> dict:
    return {"time": time.strftime("%H:%M", time.localtime(now()))}


def set_timer(minutes: int, label: str) -> dict:
    """A pretend timer (nothing runs): the id is a hash of the label, so a replayed demo prints the same."""
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 < minutes <= 24 * 60:
        return {"error": f"minutes must be an integer from 1 to 1440, got {minutes!r}"}
    return {"timer_id": 1000 + zlib.crc32(str(label).encode()) % 9000, "status": "Started"}


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
              ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers and + - * / // % ** ( ) are allowed")


def calculate(expression: str) -> dict:
    """Arithmetic on numbers only: the expression is parsed, never evaluated as Python."""
    try:
        return {"expression": expression, "result": _evaluate(ast.parse(str(expression), mode="eval"))}
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as err:
        return {"expression": expression, "error": str(err) or type(err).__name__}


FUNCTIONS: dict[str, Callable[..., dict]] = {"get_weather": get_weather, "get_time": get_time,
                                             "set_timer": set_timer, "calculate": calculate}


def run_tool(name: str, arguments: str) -> str:
    """Run one call and return its result as the JSON text of a tool message; errors become results too,
    so the model can read what went wrong instead of the conversation stopping."""
    function = FUNCTIONS.get(name)
    if function is None:
        return json.dumps({"error": f"unknown tool {name}", "tools": sorted(FUNCTIONS)})
    try:
        kwargs: Any = json.loads(arguments or "{}")
    except ValueError:
        return json.dumps({"error": f"arguments are not JSON: {arguments[:200]}"})
    if not isinstance(kwargs, dict):
        return json.dumps({"error": "arguments must be a JSON object"})
    try:
        return json.dumps(function(**kwargs))
    except TypeError as err:
        return json.dumps({"error": f"bad arguments for {name}: {err}"})
