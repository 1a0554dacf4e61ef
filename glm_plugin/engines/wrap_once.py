"""Replacing an engine's method or function at most once per process: the marker both engines' patches use.

An engine may import a patched module again, or our `register()` may run in a process where another path already
installed a patch; a wrapper must then not wrap our own wrapper. Standard library only.
"""

from __future__ import annotations

from typing import Any, Callable

MARK = "glm_plugin"


def already_wrapped(function: Any) -> bool:
    """Whether `function` is a replacement glm_plugin installed."""
    return getattr(function, MARK, False) is True


def install(owner: Any, name: str, replacement: Callable) -> None:
    """Put `replacement` at `owner.name`, marked as ours."""
    setattr(replacement, MARK, True)
    setattr(owner, name, replacement)
