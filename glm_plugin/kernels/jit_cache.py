"""Where the JIT-built kernel libraries live, and the once-per-process, never-raising load that both builds share.

Why shared: the C++ CPU library (`build.py`) and the CUDA extension (`build_cuda.py`) are both compiled on first
use into one cache and loaded by every later process; both must keep a failed build from taking an engine down
(the dispatcher falls back and logs the reason once). One cache root and one naming rule keep a library built for
another glm_plugin, torch or Python from ever being loaded. Standard library only at import.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Callable

from glm_plugin import settings

logger = logging.getLogger("glm_plugin.kernels")

FIRST_SOURCE = "bindings.cpp"
"""A file every csrc/ has; finds the directory."""


def source_dir() -> Path:
    """csrc/ as shipped inside the package (glm_plugin/csrc: a symlink to the repository's csrc/ in a checkout,
    a copy in a wheel)."""
    packaged = Path(__file__).resolve().parent.parent / "csrc"
    if (packaged / FIRST_SOURCE).exists():
        return packaged
    return Path(__file__).resolve().parents[2] / "csrc"


def cache_root() -> Path:
    """$GLM_PLUGIN_CACHE, else $XDG_CACHE_HOME/glm_plugin, else ~/.cache/glm_plugin."""
    root = settings.value("GLM_PLUGIN_CACHE")
    if not root:
        root = os.path.join(os.path.expanduser(settings.value("XDG_CACHE_HOME")), "glm_plugin")
    return Path(root)


def library_dir(kind: str) -> Path:
    """The build directory of one torch extension: one per glm_plugin version, torch version and Python (the
    library links against libtorch's C++ ABI; within one directory ninja rebuilds whatever source changed).
    E.g. `cpu-kernels-0.1.0-torch2.13.0_cpu-py311`."""
    import torch

    from glm_plugin import __version__

    tag = f"{kind}-{__version__}-torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / tag.replace("+", "_")


_COMMAND_LINE = 400
"""Longer lines are compiler command lines (or their like), left out of an excerpt."""


def compiler_excerpt(text: str, errors: int = 8, tail: int = 12, limit: int = 3000) -> str:
    """What a failed build says, bounded: its error lines (nvcc's `file(line): error: ...`, ninja's `FAILED:`) and
    its last lines. Not its first lines: those are the compiler's command line, which teach nothing."""
    # torch's "Error building extension 'x': " runs straight into ninja's first line, the command line.
    text = re.sub(r"^(Error building extension '[^']*'): ", "\\1:\n", text.strip())
    lines = [line.rstrip() for line in text.splitlines() if line.strip() and len(line) <= _COMMAND_LINE]
    flagged = [line for line in lines if "error" in line.lower() or line.startswith("FAILED")][:errors]
    last = [line for line in lines[-tail:] if line not in flagged]
    return "\n".join(flagged + (["..."] if flagged and last else []) + last)[-limit:]


class LoadOnce:
    """One build-and-load per process that never raises: the outcome, and on failure the reason, are kept."""

    def __init__(self, what: str):
        self.what = what  # e.g. "C++ CPU kernels", as the reason and the log name them
        self._lock = threading.Lock()
        self._ok: bool | None = None
        self._reason: str | None = None

    def __call__(self, attempt: Callable[[], str | None]) -> bool:
        """Runs `attempt` the first time only: it returns None once the library is loaded, or the reason it was not
        tried (a missing prerequisite); an exception it raises is a failed build. True when loaded."""
        with self._lock:
            if self._ok is not None:
                return self._ok
            self._ok = False
            try:
                reason = attempt()
            except Exception as exc:  # a compiler error must not take the engine down: the caller falls back
                excerpt = " | ".join(compiler_excerpt(str(exc), tail=4, limit=1200).splitlines())
                reason = f"building the {self.what} failed ({type(exc).__name__}: {excerpt})"
            if reason is None:
                self._ok = True
            else:  # the dispatcher reports it (once) together with the fallback it chose
                self._reason = reason
                logger.debug("glm_plugin %s unavailable: %s", self.what, reason)
            return self._ok

    @property
    def reason(self) -> str | None:
        """Why the load failed (None if it succeeded or was not tried)."""
        return self._reason
