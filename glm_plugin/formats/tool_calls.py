"""Streaming parser for GLM tool calls, both layouts, with the field malformations recovered.

GLM-4.7 writes `<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>` inline; GLM-4.5/4.6 put
name, keys and values on separate lines. Whitespace around every marker is tolerated, so one lexer serves both.

Policies (docs/formats.md explains each, with the field-failure rule number behind it):
- A call to a declared tool streams: its name once the name region has closed (R2.3), string values as JSON
  string fragments as they arrive (R2.5), other values when their closing tag arrives.
- A call to an undeclared name is still a call (clients answer "no such tool" and the model recovers), but it is
  held until `</tool_call>` and only recoveries that need no declared name apply; if it turns out malformed, its
  raw text is returned as content. Nothing is dropped (R1.7).
- Recoveries that depend on the name (name and key run together, a stray `</arg_value>` after the name, a second
  `<tool_call>` where the first `<arg_key>` belongs) and those of a missing or repeated tag (`<arg_value>`, a
  `</arg_value>` before `</tool_call>`, a doubled `</arg_key>`) apply only to declared names (R1.3, R1.5).
- A value ends at a `</arg_value>` only where what follows it can follow a value: `<arg_key>`, `</tool_call>`,
  `<tool_call>`, an end-of-turn token or the end of the output, whitespace allowed (R1.9). Elsewhere the tag is
  value text. Deciding holds back that tag (and its repeats and the whitespace after it) until the next marker
  or other character arrives.
- A call cut off by the end of the stream ends with `complete=False`, its arguments closed to valid JSON: the
  complete arguments plus a string value streamed so far; a partial non-string value is left out (R2.6).
- Whitespace at the start and end of content, and before a call, is format, not content (templates render
  `content.strip()`); whitespace after a call is kept when content goes on around it. Whitespace before a
  `<tool_call>` that proves not to be a call is text and is kept.
- A `</think>` right after a call closes the thinking block that call was written in (vLLM #46040): format.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable

from .arguments import ToolSchemas, could_be_non_string, decode_value
from .content_edges import ContentEdges
from .events import ContentDelta, Event, ToolArgsDelta, ToolCallEnd, ToolCallStart
from .tags import (
    CALL_CLOSE,
    CALL_OPEN,
    KEY_CLOSE,
    KEY_OPEN,
    MAX_NAME_CHARS,
    PARTIAL,
    STOP_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    VALUE_CLOSE,
    VALUE_OPEN,
    find_marker,
    looks_like_name,
    marker_at,
)

_CONTENT, _NAME, _EXPECT_KEY, _KEY, _EXPECT_VALUE, _VALUE, _CLOSING = range(7)
_STREAM, _CHECK, _HOLD = range(3)  # how a value is emitted: as it arrives, held while it may be non-string, held

# In content a </think> is a second close (thinking had ended): dropped, like the end-of-turn tokens, unless it
# closes a <think> of the content's own (text: only the start of a turn opens a block).
_CONTENT_MARKERS = (CALL_OPEN, THINK_OPEN, THINK_CLOSE) + STOP_TOKENS
# Right after a call, a doubled </tool_call> (R1.5) is dropped too, and a </think> (the close of the block the call
# was written in) takes the whitespace before it along.
_AFTER_CALL_MARKERS = (CALL_OPEN, CALL_CLOSE, THINK_OPEN, THINK_CLOSE) + STOP_TOKENS
_NAME_MARKERS = (KEY_OPEN, CALL_CLOSE, KEY_CLOSE, VALUE_CLOSE, VALUE_OPEN, CALL_OPEN)
_EXPECT_KEY_MARKERS = (KEY_OPEN, CALL_CLOSE, VALUE_CLOSE, CALL_OPEN, KEY_CLOSE, VALUE_OPEN)
_KEY_MARKERS = (KEY_CLOSE, VALUE_OPEN, CALL_CLOSE, CALL_OPEN, KEY_OPEN)
_EXPECT_VALUE_MARKERS = (VALUE_OPEN, KEY_OPEN, CALL_CLOSE, CALL_OPEN, KEY_CLOSE)
# Inside a value every other marker is literal text (R1.9); these two may end it, depending on what follows them.
_VALUE_MARKERS = (VALUE_CLOSE,)
_DECLARED_VALUE_MARKERS = (VALUE_CLOSE, CALL_CLOSE)  # R1.3: `</arg_value>` missing before `</tool_call>`
# What may follow a closing tag for it to close: the same tag repeated (looked past), then one of the rest.
_AFTER_VALUE_CLOSE = (VALUE_CLOSE, KEY_OPEN, CALL_CLOSE, CALL_OPEN) + STOP_TOKENS
_AFTER_CALL_CLOSE = (CALL_CLOSE, CALL_OPEN) + STOP_TOKENS

MAX_KEY_CHARS = 256

_NEEDS_ESCAPE = re.compile(r'[\\"\x00-\x1f\ud800-\udfff]')
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def json_string_body(text: str) -> str:
    """`text` escaped as the inside of a JSON string. Escaping is per character, so pieces escape independently;
    lone surrogates become `\\uXXXX` so the JSON stays encodable as UTF-8."""
    if not _NEEDS_ESCAPE.search(text):
        return text
    body = json.dumps(text, ensure_ascii=False)[1:-1]
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", body)


def json_value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _SURROGATE.search(text) else text


class ToolCallParser:
    """Turns content text (thinking already split off) into content and tool-call events, one delta at a time."""

    def __init__(self, tools: Iterable[Any] | None = None):
        self._schemas = ToolSchemas(tools)
        self._state = _CONTENT
        self._pending = ""  # a possible marker prefix at the end of the last delta
        self._edges = ContentEdges()  # whitespace at the edges of content, and before a call, is format
        self._after_call = False
        self._think_text = False  # a <think> in content, as text, waits for its </think>
        self._index = 0
        self._reset_call()

    def _reset_call(self) -> None:
        self._name_parts: list[str] = []
        self._name_len = 0
        self._name = ""
        self._buffer: list[Event] | None = None  # events of an undeclared call, released at </tool_call>
        self._raw: list[str] | None = None  # its raw text, returned as content if it proves malformed
        self._args: dict[str, Any] = {}
        self._fragments: list[str] = []
        self._key_parts: list[str] = []
        self._key_len = 0
        self._key = ""
        self._prefix = ""
        self._mode = _STREAM
        self._vtype = None
        self._value: list[str] = []
        self._container = False
        self._held: list[str] = []  # _CLOSING: the closing tag, its repeats and whitespace, not yet decided
        self._doubled: tuple[str, str] | None = None  # (name, region) of `<tool_call>name<tool_call>` (R1.3)

    # ---- public -------------------------------------------------------------------------------------------

    def feed(self, text: str) -> list[Event]:
        if self._state == _VALUE and self._mode == _STREAM and "<" not in text and text and not self._pending:
            # the hot path: a token inside a long string value
            self._value.append(text)
            fragment = json_string_body(text)
            self._fragments.append(fragment)
            event = ToolArgsDelta(self._index, fragment)
            if self._buffer is None:
                return [event]
            self._raw.append(text)  # an undeclared tool's call: held until </tool_call>
            self._buffer.append(event)
            return []
        out: list[Event] = []
        if self._pending:
            text = self._pending + text
            self._pending = ""
        self._scan(out, text)
        return out

    def _scan(self, out: list[Event], text: str) -> None:
        pos = 0
        n = len(text)
        while pos < n:
            state = self._state
            if state == _VALUE:
                markers = _VALUE_MARKERS if self._buffer is not None else _DECLARED_VALUE_MARKERS
                pos, marker = self._text_until(out, text, pos, markers, self._value_text)
                if marker is None:
                    break
                self._held = [marker]
                self._state = _CLOSING
            elif state == _CLOSING:
                pos = self._closing_step(out, text, pos)
            elif state == _CONTENT:
                markers = _AFTER_CALL_MARKERS if self._after_call else _CONTENT_MARKERS
                pos, marker = self._text_until(out, text, pos, markers, self._content)
                if marker is None:
                    break
                if marker == CALL_OPEN:
                    self._begin_call()
                elif marker == CALL_CLOSE and not self._after_call:
                    self._content(out, marker)  # not right after a call (text came between): ordinary text
                elif marker == THINK_OPEN or (marker == THINK_CLOSE and self._think_text):
                    self._think_text = marker == THINK_OPEN
                    self._content(out, marker)
                elif marker == THINK_CLOSE and self._after_call:
                    self._edges.finish()  # whitespace before it went with the call
            elif state == _NAME:
                pos = self._name_step(out, text, pos)
            elif state == _EXPECT_KEY:
                pos = self._expect_key_step(out, text, pos)
            elif state == _KEY:
                pos = self._key_step(out, text, pos)
            else:
                pos = self._expect_value_step(out, text, pos)

    def _text_until(self, out: list[Event], text: str, pos: int, markers: tuple[str, ...],
                    emit: Callable[[list[Event], str], None]) -> tuple[int, str | None]:
        """Hand `emit` the text from `pos` up to the first of `markers`; (the position after it, the marker), or
        (len(text), None) when the text ran out first (a marker's beginning at its end is held in `_pending`)."""
        i, marker = find_marker(text, pos, markers)
        end = len(text) if i < 0 else i
        if end > pos:
            emit(out, text[pos:end])
        if i < 0:
            return len(text), None
        if marker is PARTIAL:
            self._pending = text[i:]
            return len(text), None
        return i + len(marker), marker

    def finish(self) -> list[Event]:
        """End of stream: flush held text; a call still open is ended with complete=False."""
        out: list[Event] = []
        pending, self._pending = self._pending, ""
        if self._state == _CLOSING:
            if pending:  # a marker's beginning follows the tag, not the end of the output: the tag was text
                self._literal_close(out, pending)
                pending = ""
            else:
                self._confirm_close(out)
        state = self._state
        if state == _CONTENT:
            if pending:
                self._content(out, pending)
        elif state == _NAME:
            self._release_doubled(out)
            self._content(out, CALL_OPEN + "".join(self._name_parts) + pending)
            self._reset_call()
            self._state = _CONTENT
        elif self._buffer is not None:
            self._track(pending)
            self._abort(out)
        else:
            if state == _VALUE and self._mode == _STREAM:
                if pending:
                    self._value_text(out, pending)
                self._close_value(out)
            self._end_call(out, complete=False)
        self._edges.finish()
        return out

    # ---- content ------------------------------------------------------------------------------------------

    def _content(self, out: list[Event], piece: str) -> None:
        text = self._edges.feed(piece)
        if text:
            self._after_call = False
            out.append(ContentDelta(text))

    # ---- call structure -----------------------------------------------------------------------------------

    def _begin_call(self) -> None:
        self._after_call = False
        self._reset_call()
        self._state = _NAME

    def _track(self, text: str) -> None:
        if self._raw is not None:
            self._raw.append(text)

    def _emit(self, out: list[Event], event: Event) -> None:
        (self._buffer if self._buffer is not None else out).append(event)

    def _fragment(self, out: list[Event], text: str) -> None:
        self._fragments.append(text)
        self._emit(out, ToolArgsDelta(self._index, text))

    def _start(self, out: list[Event], name: str, marker: str) -> None:
        self._name = name
        before = self._edges.finish(more_follows=True)  # whitespace before a call is format, once it is a call
        if not self._schemas.declares(name):
            self._buffer = []
            self._raw = [before, CALL_OPEN, "".join(self._name_parts), marker]
        self._emit(out, ToolCallStart(self._index, name))

    def _abort(self, out: list[Event]) -> None:
        """An undeclared call proved malformed: everything it consumed is content."""
        raw = "".join(self._raw or ())
        self._reset_call()
        self._state = _CONTENT
        self._content(out, raw)

    def _end_call(self, out: list[Event], complete: bool = True) -> None:
        self._fragment(out, "}" if self._fragments else "{}")
        arguments_json = "".join(self._fragments)
        self._emit(out, ToolCallEnd(self._index, self._name, self._args, arguments_json, complete))
        if self._buffer is not None:
            out.extend(self._buffer)
        self._index += 1
        self._reset_call()
        self._state = _CONTENT
        self._after_call = True

    def _name_step(self, out: list[Event], text: str, pos: int) -> int:
        i, marker = find_marker(text, pos, _NAME_MARKERS)
        end = len(text) if i < 0 else i
        room = MAX_NAME_CHARS - self._name_len
        if end - pos > room:  # too long to be a name: cut at a fixed length so chunking cannot matter
            self._name_parts.append(text[pos:pos + room + 1])
            self._release_doubled(out)
            self._content(out, CALL_OPEN + "".join(self._name_parts))
            self._reset_call()
            self._state = _CONTENT
            return pos + room + 1
        if end > pos:
            self._name_parts.append(text[pos:end])
            self._name_len += end - pos
        if i < 0:
            return len(text)
        if marker is PARTIAL:
            self._pending = text[i:]
            return len(text)
        return i + len(marker) if self._end_name(out, marker) else i

    def _end_name(self, out: list[Event], marker: str) -> bool:
        """Decides what the name region was, given the marker that ended it. Returns whether `marker` was consumed
        (a `<tool_call>` that is not part of this call is left for the next one)."""
        region = "".join(self._name_parts)
        name = region.strip()
        schemas = self._schemas
        if self._doubled is not None:
            first, first_region = self._doubled
            self._doubled = None
            if marker == KEY_CLOSE and schemas.declares_key(first, name):  # R1.3: <tool_call> for <arg_key>
                self._start(out, first, marker)
                self._key = name
                self._state = _EXPECT_VALUE
                return True
            self._release(out, first_region)
        if marker == CALL_OPEN and looks_like_name(name) and schemas.declares(name):
            self._doubled = (name, region)  # R1.3 if a parameter's name and `</arg_key>` follow; decided then
            self._name_parts = []
            self._name_len = 0
            return True
        if marker in (KEY_OPEN, CALL_CLOSE) and looks_like_name(name):
            self._start(out, name, marker)
            if marker == KEY_OPEN:
                self._state = _KEY
            else:
                self._end_call(out)
            return True
        if marker == VALUE_CLOSE and looks_like_name(name) and schemas.declares(name):
            self._start(out, name, marker)  # R1.3: a stray </arg_value> glued to a zero-argument name
            self._state = _EXPECT_KEY
            return True
        if marker == KEY_CLOSE:  # R1.3: the <arg_key> is missing, so name and key ran together
            split = self._split_name_and_key(name)
            if split is not None:
                self._start(out, split[0], marker)
                self._key = split[1]
                self._state = _EXPECT_VALUE
                return True
        self._reset_call()
        self._state = _CONTENT
        if marker == CALL_OPEN:
            self._content(out, CALL_OPEN + region)  # the next call starts at this marker
            return False
        self._content(out, CALL_OPEN + region + marker)
        return True

    def _release(self, out: list[Event], region: str) -> None:
        """`<tool_call>` + region was not a call: content, as if the `<tool_call>` after it had just begun one."""
        self._content(out, CALL_OPEN + region)
        self._edges.finish()  # whitespace before a call is dropped
        self._after_call = False

    def _release_doubled(self, out: list[Event]) -> None:
        if self._doubled is not None:
            self._release(out, self._doubled[1])
            self._doubled = None

    def _split_name_and_key(self, region: str) -> tuple[str, str] | None:
        parts = region.split(None, 1)
        if len(parts) == 2 and self._schemas.declares(parts[0]):
            return parts[0], parts[1].strip()
        best = ""
        for name in self._schemas.names:
            if len(name) > len(best) and len(name) < len(region) and region.startswith(name):
                best = name
        return (best, region[len(best):].strip()) if best else None

    def _junk(self, out: list[Event], piece: str) -> bool:
        """Text where only markers belong. Returns False when it ended (aborted) the current call."""
        if self._buffer is not None:
            self._track(piece)
            self._abort(out)
            return False
        self._content(out, piece)
        return True

    def _expect_key_step(self, out: list[Event], text: str, pos: int) -> int:
        i, marker = find_marker(text, pos, _EXPECT_KEY_MARKERS)
        end = len(text) if i < 0 else i
        piece = text[pos:end]
        if piece.strip():
            if not self._junk(out, piece):
                return end
        else:
            self._track(piece)
        if i < 0:
            return len(text)
        if marker is PARTIAL:
            self._pending = text[i:]
            return len(text)
        if marker == KEY_OPEN:
            self._track(marker)
            self._key_parts = []
            self._key_len = 0
            self._state = _KEY
        elif marker == CALL_CLOSE:
            self._end_call(out)
        elif marker == CALL_OPEN:  # the previous call never closed, but all its arguments did
            self._end_call(out)
            return i
        elif marker != VALUE_CLOSE or self._buffer is not None:  # a doubled </arg_value> is dropped
            self._junk(out, marker)
        return i + len(marker)

    def _key_step(self, out: list[Event], text: str, pos: int) -> int:
        i, marker = find_marker(text, pos, _KEY_MARKERS)
        end = len(text) if i < 0 else i
        if end - pos > MAX_KEY_CHARS - self._key_len:
            cut = pos + MAX_KEY_CHARS - self._key_len + 1
            self._key_parts.append(text[pos:cut])
            self._track(text[pos:cut])
            return self._bad_key(out, cut, "")
        if end > pos:
            self._key_parts.append(text[pos:end])
            self._key_len += end - pos
            self._track(text[pos:end])
        if i < 0:
            return len(text)
        if marker is PARTIAL:
            self._pending = text[i:]
            return len(text)
        if marker == KEY_CLOSE:
            self._track(marker)
            self._key = "".join(self._key_parts).strip()
            self._state = _EXPECT_VALUE
            return i + len(marker)
        if marker == VALUE_OPEN and self._buffer is None:  # </arg_key> missing: the value opens the key's end
            self._key = "".join(self._key_parts).strip()
            self._begin_value(out)
            return i + len(marker)
        return self._bad_key(out, i, marker)

    def _bad_key(self, out: list[Event], i: int, marker: str) -> int:
        """A key region that never closed properly: its text is content and the call goes on (an undeclared
        call aborts). Returns where scanning resumes: structural markers are handled again by the next state."""
        key_text = KEY_OPEN + "".join(self._key_parts)
        self._key_parts = []
        self._key_len = 0
        again = marker in (CALL_OPEN, CALL_CLOSE, KEY_OPEN)
        if self._buffer is not None:
            if not again:
                self._track(marker)
            self._abort(out)
        else:
            self._state = _EXPECT_KEY
            self._content(out, key_text if again else key_text + marker)
        return i if again else i + len(marker)

    def _expect_value_step(self, out: list[Event], text: str, pos: int) -> int:
        n = len(text)
        j = pos
        while j < n and text[j].isspace():
            j += 1
        self._track(text[pos:j])
        if j == n:
            return n
        marker = marker_at(text, j, _EXPECT_VALUE_MARKERS)
        if marker is PARTIAL:
            self._pending = text[j:]
            return n
        if marker == VALUE_OPEN:
            self._track(marker)
            self._begin_value(out)
            return j + len(marker)
        if self._buffer is not None:  # an undeclared call gets no recovery
            self._abort(out)
            return j
        if marker == KEY_CLOSE:  # R1.5: a doubled </arg_key> carries nothing
            return j + len(marker)
        if marker is not None:  # a key with no value at all: an empty string, then the marker as usual
            self._begin_value(out)
            self._close_value(out)
            return j
        self._begin_value(out)  # R1.3: <arg_value> missing; the value is the bare text up to </arg_value>
        return j

    # ---- values -------------------------------------------------------------------------------------------

    def _closing_step(self, out: list[Event], text: str, pos: int) -> int:
        """After a `</arg_value>` (or, in a declared call, a `</tool_call>`) inside a value: what follows decides
        whether it closed the value (R1.9, R1.3). Holds the tag, its repeats and whitespace; O(len(delta))."""
        n = len(text)
        j = pos
        while j < n and text[j].isspace():
            j += 1
        if j > pos:
            self._held.append(text[pos:j])
        if j == n:
            return n
        tag = self._held[0]
        marker = marker_at(text, j, _AFTER_VALUE_CLOSE if tag == VALUE_CLOSE else _AFTER_CALL_CLOSE)
        if marker is PARTIAL:
            self._pending = text[j:]
            return n
        if marker == tag:  # repeated: what follows the run decides for its first tag
            self._held.append(tag)
            return j + len(tag)
        if marker is None:
            self._literal_close(out, "")
        else:
            self._confirm_close(out)
        return j

    def _literal_close(self, out: list[Event], more: str) -> None:
        """The held tag was value text after all; scanning goes on inside the value."""
        held = "".join(self._held) + more
        self._held = []
        self._state = _VALUE
        self._value_text(out, held)

    def _confirm_close(self, out: list[Event]) -> None:
        """The held run's first tag closed the value (and, for `</tool_call>`, the call); the rest of the run
        (repeats, whitespace) is read as if it had followed a well-formed close."""
        tag, rest = self._held[0], "".join(self._held[1:])
        self._held = []
        self._track(tag)
        self._close_value(out)
        if tag == CALL_CLOSE:
            self._end_call(out)
        if rest:
            self._scan(out, rest)

    def _begin_value(self, out: list[Event]) -> None:
        key_json = json_value(self._key)
        self._prefix = ("{" if not self._fragments else ", ") + key_json + ": "
        vtype = self._schemas.value_type(self._name, self._key)
        self._vtype = vtype
        self._value = []
        self._container = False
        if vtype.is_string:
            self._mode = _STREAM
            self._fragment(out, self._prefix + '"')
        else:
            self._mode = _CHECK if vtype.may_be_string else _HOLD
        self._state = _VALUE

    def _value_text(self, out: list[Event], piece: str) -> None:
        self._value.append(piece)
        self._track(piece)
        mode = self._mode
        if mode == _STREAM:
            self._fragment(out, json_string_body(piece))
        elif mode == _CHECK and not self._container:
            held = "".join(self._value)
            if not could_be_non_string(self._vtype, held):
                self._mode = _STREAM
                self._value = [held]
                self._fragment(out, self._prefix + '"' + json_string_body(held))
            else:
                head = held.lstrip()
                self._container = bool(head) and head[0] in "[{"

    def _close_value(self, out: list[Event]) -> None:
        text = "".join(self._value)
        if self._mode == _STREAM:
            value: Any = text
            self._fragment(out, '"')
        else:
            value = decode_value(self._vtype, text)
            self._fragment(out, self._prefix + json_value(value))
        self._args[self._key] = value
        self._value = []
        self._state = _EXPECT_KEY
