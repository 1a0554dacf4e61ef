"""The GLM-5.x chat templates of tests/formats/templates (publisher's data, see the README there), by name.

`glm-5.3-flash-effort-none` is the GLM-5.3-Flash variant whose generation prompt closes thinking for
`reasoning_effort="none"`, derived from the rebuilt 5.3 file.
"""

from __future__ import annotations

import functools
import pathlib

TEMPLATES = pathlib.Path(__file__).parents[1] / "formats" / "templates"


@functools.cache
def template_text(name: str) -> str:
    if name == "glm-5.3-flash-effort-none":
        return template_text("glm-5.3.rebuilt").replace(
            "<|assistant|>{{- '<think>' -}}",
            "<|assistant|>{{- '<think></think>' if reasoning_effort is defined and reasoning_effort == 'none' "
            "else '<think>' -}}")
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
