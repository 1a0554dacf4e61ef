"""Log a note at most once per process: the adapters' per-layer and per-call decisions would repeat it per token.

Standard library only.
"""

from __future__ import annotations

import logging
import threading

_logged: set[tuple[str, str]] = set()
_lock = threading.Lock()


def log_once(logger: logging.Logger, key: str, level: int, msg: str, *args) -> None:
    """`logger.log(level, msg, *args)` the first time `key` is logged on this logger, nothing after that."""
    with _lock:
        if (logger.name, key) in _logged:
            return
        _logged.add((logger.name, key))
    logger.log(level, msg, *args)
