"""The engine-neutral pieces the adapters share: post-import hooks, content edges, where a turn starts."""

from __future__ import annotations

import sys

import pytest

from glm_plugin.formats.content_edges import ContentEdges
from glm_plugin.engines.import_hooks import when_imported
from glm_plugin.engines.toy_tokenizer import toy_glm_tokenizer
from glm_plugin.engines.turn_start import (
    default_start,
    start_after_prefill,
    start_from_prompt_text,
    start_from_template,
    start_of_turn,
)
from glm_plugin.formats import ThinkingStart

R, C, M = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL


def test_callback_runs_once_after_the_module_executes(tmp_path, monkeypatch):
    (tmp_path / "glm_hook_probe.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("glm_hook_probe", lambda module: seen.append(module.VALUE))
    assert seen == []
    import glm_hook_probe  # noqa: F401

    assert seen == [42]
    del sys.modules["glm_hook_probe"]
    import glm_hook_probe  # noqa: F401,F811  (a re-import does not call again)

    assert seen == [42]
    del sys.modules["glm_hook_probe"]


def test_callback_runs_at_once_for_an_imported_module():
    seen = []
    when_imported("json", lambda module: seen.append(module.__name__))
    assert seen == ["json"]


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["\n\n", "Hello", " ", "world", "\n"], "Hello world"),
        (["  Hi  ", "  "], "Hi"),
        (["", " ", ""], ""),
        (["a\n", "\n", "b"], "a\n\nb"),
    ],
)
def test_content_edges(deltas, expected):
    edges = ContentEdges()
    out = "".join(edges.feed(d) for d in deltas) + edges.finish()
    assert out == expected


def test_content_edges_release_trailing_space_when_more_content_follows_elsewhere():
    edges = ContentEdges()
    assert edges.feed("Hello ") == "Hello"
    assert edges.finish(more_follows=True) == " "


@pytest.mark.parametrize(
    ("turn", "start"),
    [("<think>", R), ("", M), ("\n", M), ("</think>", C), ("\n<think></think>", C), ("<think>partial", R),
     ("Sure, ", C)],
)
def test_start_of_turn(turn, start):
    assert start_of_turn(turn) is start
    assert start_from_prompt_text("[gMASK]<sop><|user|>hi<|assistant|>" + turn) is start


def test_start_after_prefill():
    assert start_after_prefill(R, "") is R
    assert start_after_prefill(R, "still thinking") is R
    assert start_after_prefill(R, "done</think>Answer") is C
    assert start_after_prefill(M, "<think>hmm") is R
    assert start_after_prefill(M, "Answer") is C
    assert start_after_prefill(C, "<think>") is C


def test_start_from_the_template_and_the_request_flags():
    tok47, tok45 = toy_glm_tokenizer("glm47"), toy_glm_tokenizer("glm45")
    assert start_from_template(tok47, {}) is R
    assert start_from_template(tok47, {"enable_thinking": False}) is C
    assert start_from_template(tok45, None) is M
    assert start_from_template(tok45, {"enable_thinking": False}) is C
    assert start_from_template(None, {}) is None
    assert default_start(None, {}) is R
    assert default_start(None, {"thinking": False}) is C
