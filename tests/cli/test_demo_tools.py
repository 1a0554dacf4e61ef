"""The chat's local tools: fixed results, errors returned as results (never raised), and a calculator that parses
arithmetic instead of evaluating Python."""

from __future__ import annotations

import json

import pytest

from glm_plugin.command import demo_tools


def run(name: str, **arguments) -> dict:
    return json.loads(demo_tools.run_tool(name, json.dumps(arguments)))


def test_weather_table_is_fixed_and_case_insensitive():
    assert run("get_weather", city="paris") == {"city": "Paris", "temp": 18, "condition": "Cloudy"}
    assert run("get_weather", city="Paris", unit="fahrenheit")["temp"] == 64  # 18 C
    unknown = run("get_weather", city="Atlantis")
    assert "no weather for Atlantis" in unknown["error"] and "Paris" in unknown["known_cities"]


def test_clock_and_timer():
    assert demo_tools.get_time(now=lambda: 0.0)["time"].count(":") == 1
    first = run("set_timer", minutes=25, label="Tea Break")
    assert first == run("set_timer", minutes=25, label="Tea Break") and first["status"] == "Started"
    assert "integer" in run("set_timer", minutes="25", label="x")["error"]


@pytest.mark.parametrize("expression, result", [("2 + 3 * 4", 14), ("(1 + 1) ** 10", 1024), ("-7 // 2", -4),
                                                ("10 / 4", 2.5)])
def test_calculator(expression, result):
    assert run("calculate", expression=expression)["result"] == result


@pytest.mark.parametrize("expression", ["__import__('os').system('true')", "open('x')", "2 ** 1000000", "1 / 0",
                                        "x + 1", "'a' * 3"])
def test_calculator_refuses_anything_but_arithmetic(expression):
    assert "error" in run("calculate", expression=expression)


def test_bad_calls_come_back_as_results():
    assert "unknown tool" in run("rm_rf")["error"]
    assert "not JSON" in json.loads(demo_tools.run_tool("get_time", "{oops"))["error"]
    assert "bad arguments" in run("get_weather", town="Paris")["error"]


def test_schemas_declare_every_tool():
    assert set(demo_tools.SCHEMAS) == set(demo_tools.FUNCTIONS)
