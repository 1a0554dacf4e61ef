"""What a terminal shows after some output: carriage returns, newlines and autowrap at the width, escape sequences
dropped (colours do not move the cursor). Enough to count the rows a progress line leaves behind."""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def screen_rows(output: str, width: int) -> list[str]:
    rows: list[list[str]] = [[]]
    col, pending_wrap = 0, False
    for ch in _ESCAPE.sub("", output):
        if ch == "\r":
            col, pending_wrap = 0, False
        elif ch == "\n":
            rows.append([])
            col, pending_wrap = 0, False
        else:
            if pending_wrap:  # a character after the last column goes to the start of a new row
                rows.append([])
                col, pending_wrap = 0, False
            row = rows[-1]
            row.extend(" " * (col + 1 - len(row)))
            row[col] = ch
            col += 1
            pending_wrap = col == width
    return ["".join(row).rstrip() for row in rows if "".join(row).strip()]
