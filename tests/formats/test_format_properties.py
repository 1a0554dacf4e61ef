"""Property tests of the wire-format core: round trip, chunking invariance, valid argument JSON, nothing lost."""

from __future__ import annotations

import json
import re
from collections import Counter

from glm_render import MARKERS, chunkings, expected, render, tools_and_turn
from hypothesis import given
from hypothesis import strategies as st

from glm_plugin.formats import (
    ContentDelta,
    ReasoningDelta,
    ThinkingStart,
    ToolArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    collect_events,
)
from whole_output import GlmOutputParser, parse_output


def stream(text_chunks, tools, start):
    parser = GlmOutputParser(tools, start)
    events = []
    for chunk in text_chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    return events


def merged(events):
    """Adjacent deltas of one kind (and call) joined: the shape that must not depend on chunking."""
    out = []
    for event in events:
        if out and type(event) is type(out[-1]) and type(event) in (ReasoningDelta, ContentDelta):
            out[-1] = type(event)(out[-1].text + event.text)
        elif out and type(event) is ToolArgsDelta and type(out[-1]) is ToolArgsDelta and event.index == out[-1].index:
            out[-1] = ToolArgsDelta(event.index, out[-1].text + event.text)
        else:
            out.append(event)
    return out


layouts = st.sampled_from([("4.7", True), ("4.7", False), ("4.5", True), ("4.5", False)])


@given(tools_and_turn(), layouts)
def test_parse_inverts_render(case, layout):
    """Property 1: parse(render(x)) == x, for both template layouts and thinking on/off."""
    tools, turn = case
    text, start = render(turn, *layout)
    result = parse_output(text, tools, start)
    reasoning, content, calls = expected(turn, layout[1])
    assert result.reasoning == reasoning
    assert result.content == content
    assert [(c.name, c.arguments) for c in result.tool_calls] == calls
    assert all(c.complete for c in result.tool_calls)


@given(tools_and_turn(), layouts, st.data())
def test_every_chunking_gives_the_same_events(case, layout, data):
    """Property 2 and 3: any split into deltas gives the whole text's events; fragments form the final JSON."""
    tools, turn = case
    text, start = render(turn, *layout)
    whole = stream([text], tools, start)
    chunks = data.draw(chunkings(text))
    events = stream(chunks, tools, start)
    assert merged(events) == merged(whole)
    assert collect_events(events) == parse_output(text, tools, start)
    fragments: dict[int, list[str]] = {}
    for event in events:
        if type(event) is ToolCallStart:
            assert event.index not in fragments, "a name is emitted once"
            fragments[event.index] = []
        elif type(event) is ToolArgsDelta:
            fragments[event.index].append(event.text)
        elif type(event) is ToolCallEnd:
            joined = "".join(fragments[event.index])
            assert joined == event.arguments_json
            assert json.loads(joined) == event.arguments


# ---- arbitrary (mostly malformed) text ---------------------------------------------------------------------

FUZZ_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                         "tags": {"type": ["array", "string"]}}}}},
    {"name": "ping", "parameters": {"type": "object", "properties": {}}},
]
_pieces = st.one_of(
    st.sampled_from(MARKERS),
    st.sampled_from(["get_weather", "ping", "nope", "city", "days", "tags", "3", "[1, 2]", "true", " ", "\n"]),
    st.sampled_from([m[:k] for m in MARKERS for k in range(1, len(m))]),  # partial markers at every length
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=4),  # lone surrogates included
)
fuzz_text = st.lists(_pieces, max_size=40).map("".join)
starts = st.sampled_from(list(ThinkingStart))


@given(fuzz_text, starts, st.data())
def test_malformed_text_never_raises_and_chunking_never_matters(text, start, data):
    whole = stream([text], FUZZ_TOOLS, start)
    chunks = data.draw(chunkings(text))
    events = stream(chunks, FUZZ_TOOLS, start)
    assert merged(events) == merged(whole)
    for event in events:
        if type(event) is ToolCallEnd:
            assert json.loads(event.arguments_json) == event.arguments


_MARKER_RE = re.compile("|".join(re.escape(m) for m in MARKERS))


def _visible(text: str) -> Counter:
    """Non-whitespace characters outside markers. Removal runs to a fixpoint on both sides, because dropping
    a stop token can join two halves of another marker (`</arg_value<|user|>>`)."""
    while True:
        shorter = _MARKER_RE.sub("", text)
        if shorter == text:
            return Counter(c for c in text if not c.isspace())
        text = shorter


STRING_TOOLS = [
    {"type": "function", "function": {"name": "write", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "body": {"type": "string"}}}}},
]
_lossless_pieces = st.one_of(
    st.sampled_from(MARKERS),
    st.sampled_from(["write", "path", "body", "other", " ", "\n", "<", ">", "&", "é", "中"]),
    st.sampled_from([m[:k] for m in MARKERS for k in range(1, len(m))]),
    st.text(alphabet="abc xyz<>/&_", max_size=5),
)


@given(st.lists(_lossless_pieces, max_size=40).map("".join), starts)
def test_no_character_is_lost(text, start):
    """Property 4: every non-whitespace character outside format markers lands in reasoning, content, a tool
    name, an argument key or an argument value; only a call cut off by the end of the stream may lose its
    unfinished key or value."""
    result = parse_output(text, STRING_TOOLS, start)
    out = _visible(result.reasoning or "") + _visible(result.content or "")
    for call in result.tool_calls:
        out += _visible(call.name)
        for key, value in call.arguments.items():
            out += _visible(key) + _visible(value if isinstance(value, str) else json.dumps(value))
    source = _visible(text)
    if all(call.complete for call in result.tool_calls):
        assert out == source
    else:
        assert out <= source
