"""vLLM entry point (`vllm.general_plugins`): make vLLM's `glm45` / `glm47` parser names use glm_plugin.

vLLM calls `register()` once in every process it starts (API server, engine core, each worker). It must be cheap
there: nothing here imports vLLM at module level, and the parser registries are touched only when vLLM itself
imports them (`when_imported`), so a worker that never parses pays nothing. Our classes are registered as
`"module:Class"` strings; vLLM imports `glm_plugin.engines.vllm.tools` / `.reasoning` on the first lookup of a name.

The model part works the same way: once vLLM imports its model registry, the GLM architecture names
(`Glm4MoeForCausalLM`, `Glm4MoeLiteForCausalLM`) and GLM's MTP draft names (`Glm4MoeMTPModel`,
`Glm4MoeLiteMTPModel`) are re-registered as `"module:Class"` strings naming our subclasses; vLLM imports them only
when it builds the model, in the worker.

What each `GLM_PLUGIN_DISABLE` part keeps as vLLM's own (the same split as in SGLang, `engines/sglang`):
- `parsers`: the `glm45` / `glm47` tool and reasoning parsers, and the parser patches (`patches.py`: the prompt
  forwarded to a composed reasoning parser, streams whose prompt closed thinking still split by it, the hosted
  APIs' thinking switches);
- `model`: the GLM target and MTP draft classes, and the draft-config check that refuses `method: mtp` on a
  checkpoint without an MTP layer by name (`patches.guard_mtp_config`);
- `kernels`: the `fp8` / `compressed-tensors` quantization methods, so GLM's FP8 layers run on vLLM's kernels.
  Independent of `model`: the FP8 methods apply to vLLM's GLM classes as well as ours.
"""

from __future__ import annotations

from types import ModuleType

from glm_plugin.engines import register_parts
from glm_plugin.engines.vllm.names import (ABSTRACT_PARSER_MODULES, CHAT_PROTOCOL_MODULES, MODEL_CLASSES,
                                              MODEL_REGISTRY_MODULE, QUANTIZATION_MODULE, REASONING_PARSER_MODULE,
                                              REASONING_PARSER_NAMES, REASONING_PARSERS_MODULES,
                                              SPECULATIVE_CONFIG_MODULE, SUPPORTED_VLLM, TOOL_PARSER_MODULE,
                                              TOOL_PARSER_NAMES, TOOL_PARSERS_MODULES, device_kind, logger)

_requested: set[str] = set()


def register() -> None:
    """Entry point: idempotent; each part registers at most once per process."""
    from glm_plugin.engines.vllm import patches

    register_parts({
        "parsers": [
            (TOOL_PARSERS_MODULES, _register_tool_parsers),
            (REASONING_PARSERS_MODULES, _register_reasoning_parsers),
            (ABSTRACT_PARSER_MODULES, patches.forward_prompt_token_ids),
            (ABSTRACT_PARSER_MODULES, patches.stream_closed_prompts_through_reasoning),
            (CHAT_PROTOCOL_MODULES, patches.accept_hosted_thinking_switches),
        ],
        "model": [(MODEL_REGISTRY_MODULE, _register_models), (SPECULATIVE_CONFIG_MODULE, patches.guard_mtp_config)],
        "kernels": [(QUANTIZATION_MODULE, _register_quantization)],
    }, _requested)


def _register_tool_parsers(module: ModuleType) -> None:
    manager = module.ToolParserManager
    for name in TOOL_PARSER_NAMES:
        # An already-resolved built-in sits in the eager dict, which is looked up before the lazy one.
        manager.tool_parsers.pop(name, None)
        manager.register_lazy_module(name, TOOL_PARSER_MODULE, "GlmToolParser")
    # INFO comes from `announce_parsers`, once a parser module is imported: the API server registers before vLLM
    # has set up its log handler, so an INFO here would be lost there.
    logger.debug("glm_plugin: tool-call parsers %s registered", ", ".join(TOOL_PARSER_NAMES))


def _register_reasoning_parsers(module: ModuleType) -> None:
    manager = module.ReasoningParserManager
    for name in REASONING_PARSER_NAMES:
        manager.reasoning_parsers.pop(name, None)
        manager.register_lazy_module(name, REASONING_PARSER_MODULE, "GlmReasoningParser")
    logger.debug("glm_plugin: reasoning parsers %s registered", ", ".join(REASONING_PARSER_NAMES))


def _register_models(module: ModuleType) -> None:
    # Overriding a built-in name only replaces the registry entry (vLLM logs it at DEBUG); the string is resolved
    # by vLLM, in the process that builds the model, so no model code is imported here.
    for arch, target in MODEL_CLASSES.items():
        module.ModelRegistry.register_model(arch, target)
    logger.debug("glm_plugin: model classes registered for %s", ", ".join(MODEL_CLASSES))


def _register_quantization(module: ModuleType) -> None:
    from glm_plugin.engines.vllm import patches

    patches.register_quantization_when_whole(module, _register_fp8_configs)


def _register_fp8_configs(module: ModuleType) -> None:
    """Re-register vLLM's `fp8` and `compressed-tensors` names with our subclasses of its configs
    (glm_plugin/engines/vllm/fp8.py) where the device policy can give a GLM FP8 layer to glm_plugin: on a CPU, or
    on an accelerator the user opted in on (docs/kernels.md). Elsewhere vLLM's classes stay registered, untouched."""
    from glm_plugin.kernels import policy

    device = device_kind()
    if device != "cpu" and not policy.opted_in():
        logger.debug("glm_plugin: FP8 methods are vLLM's on %s (%s=1 tries glm_plugin's)", device or "this device",
                     policy.ENV_OPT_IN)
        return
    try:
        from glm_plugin.engines.vllm.fp8 import GlmCompressedTensorsConfig, GlmFp8Config
    except ImportError as error:  # another vLLM version moved a class we extend: serve with vLLM's methods
        logger.warning("glm_plugin: FP8 methods not registered, vLLM's are kept (this vLLM's quantization classes "
                       "are not those glm_plugin extends: %s); supported: vLLM %s. GLM_PLUGIN_DISABLE=kernels "
                       "silences this", error, SUPPORTED_VLLM)
        return
    module.register_quantization_config("fp8")(GlmFp8Config)
    module.register_quantization_config("compressed-tensors")(GlmCompressedTensorsConfig)
    logger.debug("glm_plugin: quantization methods fp8, compressed-tensors registered (GLM FP8 per device policy)")
