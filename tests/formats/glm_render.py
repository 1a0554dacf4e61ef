"""Test helper: renders an assistant turn exactly as the GLM-4.5/4.6 and GLM-4.7 chat templates do, and
hypothesis strategies for turns with schema-typed arguments.

The rendering rules (derived from the GLM-4.5 and GLM-4.7 templates; tests/tiny_model/chat_template_goldens.json
holds GLM-4.7 renderings):
- values: strings raw, everything else `json.dumps(v, ensure_ascii=False)` (the templates' `tojson`);
- GLM-4.7: `<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value>...</tool_call>`, no separators;
  the generation prompt ends in `<think>` (thinking on) or `</think>` (off), so output starts inside it;
- GLM-4.5/4.6: `\\n<tool_call>name\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n...</tool_call>`;
  the model writes `\\n<think>...</think>` itself; with thinking off the prompt ends in `<think></think>`.
Reasoning and content are rendered `.strip()`ped, so generated turns are stripped too.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from glm_plugin.formats import ThinkingStart
from glm_plugin.formats.tags import (
    CALL_CLOSE,
    CALL_OPEN,
    KEY_CLOSE,
    KEY_OPEN,
    STOP_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    VALUE_CLOSE,
    VALUE_OPEN,
)

MARKERS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE, KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE) + STOP_TOKENS


@dataclass
class Turn:
    reasoning: str
    content: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def render_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(turn: Turn, layout: str, thinking: bool) -> tuple[str, ThinkingStart]:
    """The model's output text for `turn`, and the start state its rendered prompt implies."""
    if layout == "4.7":
        text = f"{turn.reasoning}</think>" if thinking else ""
        text += turn.content
        for name, args in turn.calls:
            text += f"<tool_call>{name}"
            for key, value in args.items():
                text += f"<arg_key>{key}</arg_key><arg_value>{render_value(value)}</arg_value>"
            text += "</tool_call>"
        return text, ThinkingStart.REASONING if thinking else ThinkingStart.CONTENT
    text = f"\n<think>{turn.reasoning}</think>" if thinking else ""
    if turn.content:
        text += "\n" + turn.content
    for name, args in turn.calls:
        text += f"\n<tool_call>{name}\n"
        for key, value in args.items():
            text += f"<arg_key>{key}</arg_key>\n<arg_value>{render_value(value)}</arg_value>\n"
        text += "</tool_call>"
    return text, ThinkingStart.MODEL if thinking else ThinkingStart.CONTENT


# ---- strategies --------------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(
    list(string.ascii_letters + string.digits + " \n\t<>&\"'\\/{}[]:,.-_=")
    + ["é", "中", "😀", "\u2028", "ß", "<b>", "</", "<tool", "arg_", "</arg", "think>", "\r\n"]
)


def _has_marker(text: str) -> bool:
    return any(m in text for m in MARKERS)


free_text = st.lists(_ALPHABET, max_size=30).map("".join).filter(lambda t: not _has_marker(t))
stripped_text = free_text.map(str.strip)
_STOPS = "|".join(re.escape(token) for token in STOP_TOKENS)
# Where a closing tag inside a value would end it (docs/formats.md R1.9, R1.3): only what follows decides.
_ENDS_A_VALUE = re.compile(
    rf"</arg_value>(?:\s*</arg_value>)*\s*(?:<arg_key>|</tool_call>|<tool_call>|{_STOPS}|\Z)"
    rf"|</tool_call>(?:\s*</tool_call>)*\s*(?:<tool_call>|{_STOPS})"
)


def round_trips(value: str) -> bool:
    """Whether a value rendered raw (nothing escaped) reads back as itself: no closing tag in it is followed by
    what would end a value there (the value's own end counts: the renderer puts `</arg_value>` after it)."""
    return _ENDS_A_VALUE.search(value) is None


# Declared strings may hold any text, every marker of the format included, that does not end a value early.
string_value = st.lists(st.one_of(_ALPHABET, st.sampled_from(MARKERS)), max_size=20).map("".join).filter(round_trips)
# A string for a key whose type also admits non-strings: one that cannot be read as JSON of another type.
union_string = string_value.map(lambda t: "s" + t)
identifier = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)

_scalar = st.one_of(
    st.integers(-10**12, 10**12), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.text(max_size=8),
)
json_value = st.recursive(
    _scalar, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
).filter(lambda v: round_trips(json.dumps(v, ensure_ascii=False)))

# (schema, value strategy): the value is what the client should get back.
PARAM_KINDS = [
    ({"type": "string"}, string_value),
    ({"type": "integer"}, st.integers(-10**15, 10**15)),
    ({"type": "number"}, st.floats(allow_nan=False, allow_infinity=False)),
    ({"type": "boolean"}, st.booleans()),
    ({"type": "array", "items": {"type": "string"}}, st.lists(st.text(max_size=6), max_size=4)),
    ({"type": "object"}, st.dictionaries(st.text(max_size=5), json_value, max_size=3)),
    ({"type": ["string", "null"]}, st.one_of(st.none(), union_string)),
    ({"anyOf": [{"type": "string"}, {"type": "array"}]}, st.one_of(union_string, st.lists(json_value, max_size=3))),
    ({"allOf": [{"type": "string"}]}, string_value),
    ({"enum": ["red", "green", "0042"]}, st.sampled_from(["red", "green", "0042"])),
    ({"$ref": "#/$defs/count"}, st.integers(0, 10**6)),
    ({}, st.one_of(union_string, st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3))),
]


@st.composite
def tools_and_turn(draw, max_calls: int = 4):
    """A request's tools and a turn calling them (sometimes an undeclared name, sometimes undeclared keys)."""
    names = draw(st.lists(identifier, min_size=1, max_size=3, unique=True))
    tools, value_strategies = [], {}
    for name in names:
        keys = draw(st.lists(identifier, max_size=4, unique=True))
        props, strategies = {}, {}
        for key in keys:
            schema, values = draw(st.sampled_from(PARAM_KINDS))
            props[key], strategies[key] = schema, values
        params = {"type": "object", "properties": props, "$defs": {"count": {"type": "integer"}}}
        tools.append({"type": "function", "function": {"name": name, "parameters": params}})
        value_strategies[name] = strategies
    calls = []
    for _ in range(draw(st.integers(0, max_calls))):
        undeclared = draw(st.integers(0, 9)) == 0
        if undeclared:
            name = draw(identifier.filter(lambda n: n not in value_strategies))
            strategies = {k: PARAM_KINDS[-1][1] for k in draw(st.lists(identifier, max_size=2, unique=True))}
        else:
            name = draw(st.sampled_from(names))
            strategies = dict(value_strategies[name])
            if draw(st.integers(0, 9)) == 0:
                extra = draw(identifier.filter(lambda k: k not in strategies))
                strategies[extra] = PARAM_KINDS[-1][1]  # a key the schema does not declare
        args = {key: draw(values) for key, values in strategies.items()}
        calls.append((name, args))
    turn = Turn(reasoning=draw(stripped_text), content=draw(stripped_text), calls=calls)
    return tools, turn


def expected(turn: Turn, thinking: bool) -> tuple[str | None, str | None, list[tuple[str, dict]]]:
    reasoning = (turn.reasoning or None) if thinking else None
    content = turn.content if turn.content else (None if turn.calls else "")
    return reasoning, content, turn.calls


@st.composite
def chunkings(draw, text: str) -> list[str]:
    """A split of `text` into deltas: per character, random cuts, or whole."""
    mode = draw(st.sampled_from(["char", "random", "whole", "pairs"]))
    if mode == "char":
        return list(text)
    if mode == "whole" or not text:
        return [text]
    if mode == "pairs":
        return [text[i:i + 2] for i in range(0, len(text), 2)]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=12))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]
