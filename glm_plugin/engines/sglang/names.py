"""The names glm_plugin registers in SGLang: parser names -> our detector classes, and the architectures whose
registry entries become our model classes.

A leaf under the entry point (`__init__.register`) and `patches`, so that neither imports the package it sits in.
Standard library only.
"""

from __future__ import annotations

from glm_plugin.checkpoint import SGLANG_DRAFT_ARCHITECTURES, TARGET_ARCHITECTURES

TOOL_PARSERS = {"glm47": "Glm47ToolDetector", "glm45": "Glm45ToolDetector"}
# SGLang has no "glm47" reasoning parser; we add one so both names work in both engines.
REASONING_PARSERS = {"glm45": "GlmReasoningDetector", "glm47": "GlmReasoningDetector"}

# Architecture names whose registry entries become ours (SGLang keys its registry by class name).
MODEL_ARCHS = TARGET_ARCHITECTURES + SGLANG_DRAFT_ARCHITECTURES
