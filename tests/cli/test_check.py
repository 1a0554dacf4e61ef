"""`glm-plugin check` against a fake endpoint: a correct one passes with exit 0; each failure class fails the check
that names it, and only that one, with exit 1."""

from __future__ import annotations

import io

import pytest
from fake_glm_server import FakeGlmServer

from glm_plugin import cli, conformance


def run_check(fault):
    with FakeGlmServer(fault) as url:
        out = io.StringIO()
        status = conformance.main(url, max_tokens=64, file=out)
        endpoint = conformance.ChatEndpoint(url)
        outcomes = conformance.Conformance(endpoint, 64).run()
        endpoint.close()
    return status, {o.name: o for o in outcomes}, out.getvalue()


def test_a_correct_endpoint_passes_every_check():
    status, outcomes, table = run_check(None)
    assert status == 0, table
    assert {o.status for o in outcomes.values()} == {"PASS"}
    assert "all 9 checks passed" in table and "fake-glm" in table


# fault -> (the checks that must fail, a phrase the failure's detail must contain)
FAILURES = {
    "invalid_json": ({"tool call: valid, schema-typed JSON", "parallel tool calls", "answer after the tool result"},
                     "not valid JSON"),
    "reasoning_leak": ({"reasoning separated, thinking on", "tool call: valid, schema-typed JSON",
                        "parallel tool calls", "answer after the tool result"}, "reasoning leaked into content"),
    "stream_disagrees": ({"streaming equals non-streaming", "streaming equals non-streaming, 2 calls"},
                         "streamed tool calls differ"),
    "string_for_integer": ({"tool call: valid, schema-typed JSON", "parallel tool calls",
                            "answer after the tool result", "Anthropic /v1/messages"},
                           'minutes="25" is not a JSON integer'),
    "runaway_answer": ({"answer after the tool result"}, "finish_reason 'length'"),
    "no_usage": ({"usage in the last streamed chunk"}, "no usage"),
    "reasoning_when_off": ({"no reasoning, thinking off"}, "reasoning returned with thinking off"),
    "name_in_pieces": ({"streaming equals non-streaming", "streaming equals non-streaming, 2 calls"},
                       "name came in 2 chunks"),
}


@pytest.mark.parametrize("fault", sorted(FAILURES))
def test_each_failure_class_is_named(fault):
    status, outcomes, table = run_check(fault)
    must_fail, phrase = FAILURES[fault]
    failed = {name for name, o in outcomes.items() if o.status == "FAIL"}
    assert status == 1, table
    assert failed == must_fail, table
    for name in must_fail:
        assert phrase in outcomes[name].detail, outcomes[name].detail
    assert f"{len(must_fail)} of 9 checks failed" in table


def test_missing_anthropic_api_is_skipped_not_failed():
    status, outcomes, _ = run_check("no_anthropic")
    assert status == 0
    assert outcomes["Anthropic /v1/messages"].status == "SKIP"


def test_unreachable_endpoint_exits_2(capsys):
    with FakeGlmServer(None) as url:
        pass  # closed again: nothing listens there now
    assert cli.main(["check", url]) == 2
    assert "cannot use" in capsys.readouterr().err
