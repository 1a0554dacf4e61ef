"""The late-`</think>` rule where calls are not parsed (formats/late_close.py): a second close is dropped, a pair the
content opened itself stays text, and every chunking gives what the whole text gives."""

from __future__ import annotations

import pytest
from glm_render import chunkings
from hypothesis import given
from hypothesis import strategies as st

from glm_plugin.formats.late_close import LateCloseFilter


def filtered(chunks) -> str:
    late = LateCloseFilter()
    return "".join(late.feed(chunk) for chunk in chunks) + late.finish()


@pytest.mark.parametrize("text, expected", [
    ("1+1=2.</think>1+1=2.", "1+1=2.1+1=2."),  # vLLM #48201, after the budget's forced close
    ("It is 2.\n</think>\n\nIt is 2.", "It is 2.\n\n\nIt is 2."),
    ("Wrap it in <think></think> tags.", "Wrap it in <think></think> tags."),
    ("<think>a</think></think>b", "<think>a</think>b"),
    ("no tags, a < b and </thin", "no tags, a < b and </thin"),
])
def test_cases(text, expected):
    assert filtered([text]) == expected
    assert filtered(list(text)) == expected


def reference(text: str) -> str:
    out, opened, pos = [], False, 0
    while pos < len(text):
        for tag in ("<think>", "</think>"):
            if text.startswith(tag, pos):
                if tag == "<think>" or opened:
                    out.append(tag)
                opened = tag == "<think>"
                pos += len(tag)
                break
        else:
            out.append(text[pos])
            pos += 1
    return "".join(out)


@given(st.data(), st.lists(st.sampled_from(["a", " ", "\n", "<", "</", "<think>", "</think>", "</thi", ">"]),
                           max_size=24))
def test_every_chunking_gives_the_whole_result(data, pieces):
    text = "".join(pieces)
    assert filtered(data.draw(chunkings(text))) == filtered([text]) == reference(text)
