"""Where a turn's output starts (the rules both adapters call) and the trimming of content's edges."""

from __future__ import annotations

import pytest

from glm_plugin.formats import (
    ThinkingStart,
    ends_reasoning,
    start_after_prefill,
    start_from_flags,
    start_of_turn,
    thinking_start_from_prompt,
)
from glm_plugin.formats.content_edges import ContentEdges

R, C, M = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL


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
    assert thinking_start_from_prompt("[gMASK]<sop><|user|>hi<|assistant|>" + turn) is start


def test_start_after_prefill():
    assert start_after_prefill(R, "") is R
    assert start_after_prefill(R, "still thinking") is R
    assert start_after_prefill(R, "done</think>Answer") is C
    assert start_after_prefill(M, "<think>hmm") is R
    assert start_after_prefill(M, "Answer") is C
    assert start_after_prefill(C, "<think>") is C


def test_a_prompt_without_an_assistant_turn_is_judged_by_its_tail():
    assert thinking_start_from_prompt("fragment <think>\n") is R
    assert thinking_start_from_prompt("fragment </think>") is C
    assert thinking_start_from_prompt("fragment") is M


def test_ends_reasoning_is_the_splitters_rule():
    assert ends_reasoning("done</think>")
    assert ends_reasoning("<tool_call>get_weather<arg_key>city</arg_key>")  # a call inside thinking (R4.1)
    assert not ends_reasoning("I could use <tool_call> here, but the user asked nothing")  # prose (R4.2)
    assert not ends_reasoning("still thinking")
    assert ends_reasoning("Answer", M)


def test_start_from_flags():
    assert start_from_flags(None) is R
    assert start_from_flags({"enable_thinking": False}) is C
    assert start_from_flags({"thinking": False}) is C
