"""A served engine as a child process: started with its logs in a file, waited for with one progress line, stopped.

Why: `make demo` and the end-to-end tests both need "start vLLM, wait until it answers, use it, stop it", and a new
user should see one short line per start-up stage, not hundreds of engine log lines. The log file is named once at
the start and in every failure, and its tail is printed when the engine exits early, because that is where the
reason is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from glm_plugin.command.endpoint import served_model_ids

# Log lines that tell a waiting user which stage the engine is in (matched as substrings, first match wins).
# vLLM's wording as of 0.32; an unknown log only means the line stays at its last stage.
_STAGES = (
    ("Resolved architecture", "reading the checkpoint config"),
    ("Initializing a V1 LLM engine", "starting the engine process"),
    ("Starting to load model", "loading the weights"),
    ("Loading weights took", "weights loaded"),
    ("KV cache", "allocating the KV cache"),
    ("init engine", "starting the HTTP server"),
    ("Application startup complete", "ready"),
)


class ServerFailed(RuntimeError):
    """The engine exited or did not answer in time; the message carries the log's tail."""


def log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stage(path: Path, last: str) -> str:
    text = log_tail(path, 20000)
    found, where = last, -1
    for needle, label in _STAGES:
        at = text.rfind(needle)
        if at > where:
            found, where = label, at
    return found


class StatusLine:
    """Start-up progress: on a terminal, one row per stage whose seconds are rewritten in place, never as wide as
    the terminal (a wider row wraps, and each rewrite then leaves a stale row behind); elsewhere (a log, CI), one
    line per stage, written once."""

    def __init__(self, stream: TextIO | None, width: int | None = None):
        self.stream, self.stage, self.row = stream, None, ""
        self.tty = bool(stream) and stream.isatty()
        if width is None and self.tty:
            try:
                width = os.get_terminal_size(stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                width = None
        self.width = width or 80

    def _fit(self, text: str) -> str:
        room = self.width - 1  # the last column would make some terminals wrap
        return text if len(text) <= room else text[:max(0, room - 3)] + "..."

    def stage_at(self, stage: str, elapsed: float) -> None:
        if not self.stream:
            return
        text = f"glm-plugin: starting the server: {stage}, {elapsed:.0f} s"
        if not self.tty:
            if stage != self.stage:
                self.stream.write(text + "\n")
        else:
            if stage != self.stage and self.row:
                self.stream.write("\n")  # the finished stage keeps its row
                self.row = ""
            line = self._fit(text)
            self.stream.write("\r" + line + " " * max(0, len(self.row) - len(line)))
            self.row = line
        self.stage = stage
        self.stream.flush()

    def line(self, text: str) -> None:
        """A line of its own below the stage rows."""
        if not self.stream:
            return
        if self.row:
            self.stream.write("\n")
            self.row = ""
        self.stream.write(text + "\n")  # written once: a long path may wrap, it is never rewritten
        self.stream.flush()


class ServerProcess:
    """Runs `cmd` with stdout/stderr in `log_path`; `wait_ready()` polls `/v1/models`; `stop()` ends it."""

    def __init__(self, cmd: list[str], base_url: str, log_path: Path, env: dict[str, str] | None = None):
        self.cmd, self.base_url, self.log_path, self.env = cmd, base_url, Path(log_path), env
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            # A new session, so that stop() can end the engine's own children (vLLM spawns an engine core).
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 300.0, progress: TextIO | None = sys.stderr,
                   clock: Callable[[], float] = time.monotonic, poll: float = 1.0) -> list[str]:
        """Block until the server lists its models, showing the stage on `progress` (see StatusLine)."""
        assert self.proc is not None, "start() first"
        started, stage = clock(), "starting"
        status = StatusLine(progress)
        status.line(f"glm-plugin: engine log: {self.log_path}")
        while True:
            models = served_model_ids(self.base_url)
            elapsed = clock() - started
            if models:
                status.line(f"glm-plugin: server ready in {elapsed:.0f} s ({', '.join(models)})")
                return models
            if self.proc.poll() is not None:
                status.line("glm-plugin: the engine exited")
                raise ServerFailed(f"the engine exited with code {self.proc.returncode} before it was ready; "
                                   f"log {self.log_path}:\n{log_tail(self.log_path)}")
            if elapsed > timeout:
                raise ServerFailed(f"the engine did not answer {self.base_url}/v1/models within {timeout:.0f} s; "
                                   f"log {self.log_path}:\n{log_tail(self.log_path)}")
            stage = _stage(self.log_path, stage)
            status.stage_at(stage, elapsed)
            time.sleep(poll)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the engine's process group, then SIGKILL it if it has not exited after `grace` seconds."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
