"""The start-up status line: on an 80-column terminal one row per stage, each narrower than the terminal, rewritten
in place; on a log or CI, one line per stage with no carriage returns."""

from __future__ import annotations

import io
import types

from fake_glm_server import FakeGlmServer
from terminal_screen import screen_rows

from glm_plugin.command.server_process import _STAGES, ServerProcess, StatusLine


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def start_up(tmp_path, stream, seconds_per_stage: int = 5) -> list[str]:
    """Drive wait_ready through every start-up stage of a fake engine log; return the models it reports."""
    log = tmp_path / "engine-with-a-long-name-for-the-log-file.log"
    log.write_text("")
    server = ServerProcess(["unused"], "http://127.0.0.1:9", log)  # port 9: nothing answers yet
    server.proc = types.SimpleNamespace(poll=lambda: None, returncode=None)
    lines = [needle for needle, _ in _STAGES]
    tick = {"t": -1}

    with FakeGlmServer() as live:
        def clock() -> float:
            tick["t"] += 1
            stage = tick["t"] // seconds_per_stage
            if tick["t"] % seconds_per_stage == 0 and stage < len(lines):
                with open(log, "a") as handle:
                    handle.write(f"INFO 12:00:00 [core.py:1] {lines[stage]} (a long engine log line)\n")
            if stage >= len(lines):
                server.base_url = live
            return float(tick["t"])

        return server.wait_ready(timeout=1000, progress=stream, clock=clock, poll=0)


def test_an_80_column_terminal_keeps_one_row_per_stage(tmp_path):
    tty = FakeTty()
    assert start_up(tmp_path, tty) == ["fake-glm"]
    rows = screen_rows(tty.getvalue(), 80)
    stage_rows = [r for r in rows if "starting the server" in r]
    assert len(stage_rows) == len(_STAGES), rows
    assert len({r.split(":")[-1].rsplit(",", 1)[0] for r in stage_rows}) == len(stage_rows)  # no stale repeats
    assert all(len(r) < 80 for r in stage_rows) and rows[-1].startswith("glm-plugin: server ready in ")
    assert "\r" in tty.getvalue()  # the seconds were rewritten in place


def test_a_narrow_terminal_gets_shortened_rows():
    tty = FakeTty()
    status = StatusLine(tty, width=30)
    for second in range(3):
        status.stage_at("allocating the KV cache", second)
    rows = screen_rows(tty.getvalue(), 30)
    assert len(rows) == 1 and len(rows[0]) <= 29 and rows[0].endswith("...")


def test_a_log_gets_one_line_per_stage_and_no_rewrites(tmp_path):
    log = io.StringIO()
    start_up(tmp_path, log)
    text = log.getvalue()
    stage_lines = [line for line in text.splitlines() if "starting the server" in line]
    assert "\r" not in text and len(stage_lines) == len(_STAGES)
    assert text.splitlines()[0].startswith("glm-plugin: engine log: ")
