"""Engine adapters. This module holds the one thing both engines share: which parts `GLM_PLUGIN_DISABLE` turns off.

`GLM_PLUGIN_DISABLE` is a comma list of `parsers`, `model`, `kernels` (or `all`). It is read when an engine
process loads the plugin, so it must be set in the environment the engine starts in (both engines pass their
environment on to every process they spawn). Standard library only: this runs at plugin-load time in every process.

A part off means the same in both engines (each engine package's docstring says how):
- `parsers`: the engine's own `glm45` / `glm47` tool-call and reasoning parsers, and none of our parser patches;
- `model`: the engine's own GLM target and MTP draft classes;
- `kernels`: GLM's FP8 layers on the engine's kernels, not glm_plugin's ops.
Each part's patches of engine classes are installed with it (`engines/<engine>/patches.py`).
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

from glm_plugin import settings

ENV_VAR = "GLM_PLUGIN_DISABLE"
PARTS = ("parsers", "model", "kernels")

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def disabled_parts(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The parts switched off by `GLM_PLUGIN_DISABLE`; an unknown name is warned about once, then ignored."""
    raw = settings.value(ENV_VAR, environ)
    names = {part.strip().lower() for part in raw.split(",") if part.strip()}
    if "all" in names:
        return frozenset(PARTS)
    unknown = sorted(names.difference(PARTS, _warned))
    if unknown:
        _warned.update(unknown)
        logger.warning(
            "%s=%r: unknown part(s) %s ignored; use a comma list of %s, or all",
            ENV_VAR, raw, ", ".join(unknown), ", ".join(PARTS),
        )
    return frozenset(names.intersection(PARTS))


def part_enabled(part: str, environ: Mapping[str, str] | None = None) -> bool:
    if part not in PARTS:
        raise ValueError(f"unknown glm_plugin part {part!r}; the parts are {', '.join(PARTS)}")
    return part not in disabled_parts(environ)


def register_parts(hooks: Mapping[str, Sequence[tuple[str | tuple[str, ...], Callable]]], requested: set[str]) -> None:
    """Both engines' `register()`: for each enabled part not yet registered in this process, arrange that each
    (module, callback) pair's callback runs once the engine imports that module (at once if it already has); a
    tuple of module names is one module at each place the engine has kept it (`import_hooks.when_imported`)."""
    from glm_plugin.engines.import_hooks import when_imported

    for part, pairs in hooks.items():
        if part in requested or not part_enabled(part):
            continue
        requested.add(part)
        for module, callback in pairs:
            when_imported(module, callback)
