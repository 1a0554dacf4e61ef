"""vLLM entry point (`vllm.general_plugins`): make vLLM's `glm45` / `glm47` parser names use glm_plugin.

vLLM calls `register()` once in every process it starts (API server, engine core, each worker). It must be cheap
there: nothing here imports vLLM at module level, and the parser registries are touched only when vLLM itself
imports them (`when_imported`), so a worker that never parses pays nothing. Our classes are registered as
`"module:Class"` strings; vLLM imports `glm_plugin.engines.vllm.parsers` on the first lookup of a name.
`GLM_PLUGIN_DISABLE=parsers` keeps vLLM's built-ins.

The model part works the same way: once vLLM imports its model registry, the GLM architecture names
(`Glm4MoeForCausalLM`, `Glm4MoeLiteForCausalLM`) and GLM's MTP draft names (`Glm4MoeMTPModel`,
`Glm4MoeLiteMTPModel`) are re-registered as `"module:Class"` strings naming our subclasses; vLLM imports them only
when it builds the model, in the worker. It also puts a check in front of vLLM's draft-config conversion, so that
`method: mtp` on a checkpoint without an MTP layer is refused by name. `GLM_PLUGIN_DISABLE=model` keeps vLLM's.
"""

from __future__ import annotations

import logging
from types import ModuleType

from glm_plugin.engines import register_parts

logger = logging.getLogger("vllm.glm_plugin")  # under "vllm" so vLLM's log handler shows it

PARSER_MODULE = "glm_plugin.engines.vllm.parsers"
TOOL_PARSER_NAMES = ("glm45", "glm47")
REASONING_PARSER_NAMES = ("glm45", "glm47")
MODEL_REGISTRY_MODULE = "vllm.model_executor.models.registry"
MODEL_CLASSES = {  # vLLM architecture name -> our class (vLLM's names: vllm/model_executor/models/registry.py)
    "Glm4MoeForCausalLM": "glm_plugin.engines.vllm.model:Glm4MoeForCausalLM",
    "Glm4MoeLiteForCausalLM": "glm_plugin.engines.vllm.model:Glm4MoeLiteForCausalLM",
    "Glm4MoeMTPModel": "glm_plugin.engines.vllm.mtp:Glm4MoeMTP",  # what `method: mtp` asks for on a GLM target
    "Glm4MoeLiteMTPModel": "glm_plugin.engines.vllm.mtp:Glm4MoeLiteMTP",  # ... and on GLM-4.7-Flash
}

SPECULATIVE_CONFIG_MODULE = "vllm.config.speculative"
MTP_DRAFT_NAMES = tuple(name for name in MODEL_CLASSES if name.endswith("MTPModel"))
# named in the refusal of `method: mtp` on a checkpoint without an MTP layer
MTP_FLAG = "--speculative-config '{\"method\": \"mtp\"}'"
_VLLM_OVERRIDE = "glm_plugin_vllm_hf_config_override"  # where vLLM's own hf_config_override is kept

_requested: set[str] = set()


def register() -> None:
    """Entry point: idempotent; each part registers at most once per process."""
    register_parts({
        "parsers": [("vllm.tool_parsers", _register_tool_parsers), ("vllm.reasoning", _register_reasoning_parsers)],
        "model": [(MODEL_REGISTRY_MODULE, _register_models), (SPECULATIVE_CONFIG_MODULE, _guard_mtp_config)],
        "kernels": [("vllm.model_executor.layers.quantization", _register_quantization)],
    }, _requested)


def _register_tool_parsers(module: ModuleType) -> None:
    manager = module.ToolParserManager
    for name in TOOL_PARSER_NAMES:
        # An already-resolved built-in sits in the eager dict, which is looked up before the lazy one.
        manager.tool_parsers.pop(name, None)
        manager.register_lazy_module(name, PARSER_MODULE, "GlmToolParser")
    # INFO comes from the parsers module, once it is imported: the API server registers before vLLM has set up
    # its log handler, so an INFO here would be lost there.
    logger.debug("glm_plugin: tool-call parsers %s registered", ", ".join(TOOL_PARSER_NAMES))


def _register_reasoning_parsers(module: ModuleType) -> None:
    manager = module.ReasoningParserManager
    for name in REASONING_PARSER_NAMES:
        manager.reasoning_parsers.pop(name, None)
        manager.register_lazy_module(name, PARSER_MODULE, "GlmReasoningParser")
    logger.debug("glm_plugin: reasoning parsers %s registered", ", ".join(REASONING_PARSER_NAMES))


def _register_models(module: ModuleType) -> None:
    # Overriding a built-in name only replaces the registry entry (vLLM logs it at DEBUG); the string is resolved
    # by vLLM, in the process that builds the model, so no model code is imported here.
    for arch, target in MODEL_CLASSES.items():
        module.ModelRegistry.register_model(arch, target)
    logger.debug("glm_plugin: model classes registered for %s", ", ".join(MODEL_CLASSES))


def _register_quantization(module: ModuleType) -> None:
    # Re-register vLLM's `fp8` and `compressed-tensors` names with our subclasses of its configs
    # (glm_plugin/engines/vllm/fp8.py): GLM FP8 layers run through glm_plugin's FP8 ops, every other model keeps
    # vLLM's methods. The subclasses need vLLM's quantization modules, so they are imported here, once vLLM itself
    # has imported its quantization registry.
    try:
        from glm_plugin.engines.vllm.fp8 import GlmCompressedTensorsConfig, GlmFp8Config
    except ImportError as error:  # another vLLM version moved a class we extend: serve with vLLM's methods
        logger.warning("glm_plugin: FP8 methods not registered, vLLM's are kept (%s); set GLM_PLUGIN_DISABLE=kernels "
                       "to silence this, or install the vLLM version glm_plugin supports", error)
        return
    module.register_quantization_config("fp8")(GlmFp8Config)
    module.register_quantization_config("compressed-tensors")(GlmCompressedTensorsConfig)
    logger.debug("glm_plugin: quantization methods fp8, compressed-tensors registered (GLM FP8 via our ops)")


def _guard_mtp_config(module: ModuleType) -> None:
    # `method: mtp` on a GLM checkpoint without an MTP layer stops vLLM 0.32 in the API process, while it builds the
    # speculative config, with "ZeroDivisionError: integer modulo by zero" (num_speculative_tokens % 0): before any
    # model class, ours included, could say what is wrong. vLLM turns the target's config into the draft's in
    # `SpeculativeConfig.hf_config_override` (a static method looked up at each call); putting ours in its place lets
    # the refusal that the MTP classes also make come first.
    config_class = module.SpeculativeConfig
    if _VLLM_OVERRIDE in vars(config_class):
        return
    setattr(config_class, _VLLM_OVERRIDE, vars(config_class)["hf_config_override"])
    config_class.hf_config_override = staticmethod(mtp_hf_config_override)


def mtp_hf_config_override(hf_config):
    """vLLM's draft-config override, then the no-MTP-layer refusal for GLM targets.

    Module level, not a closure: vLLM pickles the draft's model config, this function included, to its engine
    process, which resolves it by name (and may not have patched the class: then vLLM's own is what it wraps).
    """
    from vllm.config.speculative import SpeculativeConfig

    from glm_plugin.engines.checkpoint_names import check_has_nextn_layer

    original = vars(SpeculativeConfig).get(_VLLM_OVERRIDE) or vars(SpeculativeConfig)["hf_config_override"]
    target = (getattr(hf_config, "architectures", None) or [None])[0]
    hf_config = original.__func__(hf_config)
    if (getattr(hf_config, "architectures", None) or [None])[0] in MTP_DRAFT_NAMES:
        check_has_nextn_layer({"architectures": [target],
                               "num_nextn_predict_layers": getattr(hf_config, "num_nextn_predict_layers", 0)},
                              engine_flag=MTP_FLAG)
    return hf_config
