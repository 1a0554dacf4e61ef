"""`glm-plugin check` against a fake endpoint: a correct one passes with exit 0; each failure class fails the check
that names it, and only that one, with exit 1."""

from __future__ import annotations

import io

import pytest
from fake_glm_server import FakeGlmServer

from glm_plugin.command import cli, conformance


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


def closed_url() -> str:
    with FakeGlmServer(None) as url:
        pass  # closed again: nothing listens there now
    return url


@pytest.mark.parametrize(("make_url", "kw", "advice"), [
    (lambda url: closed_url(), {}, "nothing is listening at"),  # no server: start one, or fix the port
    (lambda url: url + "/not-the-api", {}, "not an OpenAI-compatible server's root"),  # wrong URL
    (lambda url: url, {"model": "glm-4.7"}, "serves fake-glm, not 'glm-4.7': pass --model fake-glm"),
])
def test_each_unusable_endpoint_gets_its_own_advice_and_exit_2(capsys, make_url, kw, advice):
    with FakeGlmServer() as url:
        assert conformance.main(make_url(url), max_tokens=16, **kw) == 2
    err = capsys.readouterr().err
    assert advice in err and "pass --model\n" not in err
    if "nothing is listening" in advice:
        assert "glm-plugin serve" in err and "--host 0.0.0.0" in err


def test_an_api_key_is_asked_for_and_then_used(capsys):
    with FakeGlmServer(api_key="sekret") as url:
        assert cli.main(["check", url]) == 2
        assert "wants an API key (HTTP 401): pass --api-key" in capsys.readouterr().err
        assert cli.main(["check", url, "--api-key", "sekret"]) == 0


def test_a_url_without_a_scheme_is_plain_http(capsys):
    with FakeGlmServer() as url:
        assert cli.main(["check", url.removeprefix("http://"), "--max-tokens", "16"]) == 0
    assert "all 9 checks passed" in capsys.readouterr().out


def test_help_lists_every_check_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, _ in conformance.Conformance(None).checks():
        assert " ".join(name.split(", 2 calls")[0].split()) in text
    assert "0 every check passed" in text and "1 at least one check failed" in text and "2 the server" in text
