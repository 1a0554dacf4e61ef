"""Forget the FP8 dispatch's cached choices and its logged-once warnings, so that a test which changes the
environment sees a fresh choice. The package itself never needs this: an engine process chooses once."""

from __future__ import annotations

from glm_plugin.kernels import dispatch


def reset_choices() -> None:
    with dispatch._lock:
        dispatch._chosen.clear()
        dispatch._warned.clear()
