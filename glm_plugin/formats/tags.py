"""GLM's format markers and special tokens (their one home), and the one scanning primitive both parsing stages share.

Every marker starts with `<`, so a stage only ever looks at `<` positions (`str.find`, C speed) and keeps at most
one marker's length of unconsumed text between deltas: that bounded look-behind is what makes feeding a delta
cost O(len(delta)) instead of re-scanning everything received so far.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
KEY_OPEN = "<arg_key>"
KEY_CLOSE = "</arg_key>"
VALUE_OPEN = "<arg_value>"
VALUE_CLOSE = "</arg_value>"
END_OF_TEXT = "<|endoftext|>"
SYSTEM, USER, ASSISTANT, OBSERVATION = "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"
TURN_BOUNDARIES = (SYSTEM, USER, ASSISTANT, OBSERVATION)  # each starts a turn of the rendered conversation
# End-of-turn tokens: engines normally strip them, but with special tokens kept they can reach the parser.
STOP_TOKENS = (END_OF_TEXT, USER, OBSERVATION)
# The GLM special tokens the bundled tiny checkpoint has, in its id order (GLM-4.5/4.7 order, minus unused ones).
SPECIAL_TOKENS = (
    END_OF_TEXT, "[gMASK]", "<sop>", SYSTEM, USER, ASSISTANT, OBSERVATION, THINK_OPEN, THINK_CLOSE, CALL_OPEN,
    CALL_CLOSE, KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE, "<tool_response>", "</tool_response>",
)
NOTHINK = "/nothink"  # GLM-4.5's user-side switch, a special token in its tokenizer (not in the tiny checkpoint's)

MAX_NAME_CHARS = 256  # a longer "name" is prose that happened to follow a <tool_call>, not a call

PARTIAL = "partial"  # sentinel: the text ends inside something that may still become a marker


def find_marker(text: str, pos: int, markers: tuple[str, ...]) -> tuple[int, str | None]:
    """First `<` at or after `pos` that starts one of `markers`.

    Returns `(i, marker)` for a whole marker at i, `(i, PARTIAL)` when `text[i:]` is a proper prefix of a marker
    (more text is needed to decide), and `(-1, None)` when no marker can start in `text[pos:]`.
    """
    find = text.find
    end = len(text)
    while True:
        i = find("<", pos)
        if i < 0:
            return -1, None
        for marker in markers:
            if text.startswith(marker, i):
                return i, marker
        tail = end - i
        for marker in markers:
            if tail < len(marker) and marker.startswith(text[i:]):
                return i, PARTIAL
        pos = i + 1


def marker_at(text: str, i: int, markers: tuple[str, ...]) -> str | None:
    """The marker that starts exactly at `i`, PARTIAL if `text[i:]` may still become one, else None."""
    for marker in markers:
        if text.startswith(marker, i):
            return marker
    rest = text[i:]
    for marker in markers:
        if len(rest) < len(marker) and marker.startswith(rest):
            return PARTIAL
    return None


def looks_like_name(name: str) -> bool:
    """A tool name as GLM writes it: non-empty, no whitespace, no markup (R1.2: the name is one non-space run)."""
    return bool(name) and not any(c.isspace() or c in "<>" for c in name)
