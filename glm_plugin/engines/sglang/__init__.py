"""SGLang entry point (`sglang.srt.plugins`): make SGLang's `glm45` / `glm47` parser names use glm_plugin.

`sglang.srt.plugins.load_plugins()` calls `register()` in the launcher, the main process (tokenizer manager and
OpenAI serving) and the scheduler, detokenizer and DP-controller processes. SGLang's registries are plain class
dicts (`FunctionCallParser.ToolCallParserEnum`, `ReasoningParser.DetectorMap`) that take classes, not import
strings, and a `HookRegistry` REPLACE does not reach dict values, so we write into the dicts; but only once SGLang
itself imports those modules (`when_imported`), so processes that never parse pay nothing. What we patch in
SGLang's classes is in `patches.py`.

What each `GLM_PLUGIN_DISABLE` part keeps as SGLang's own (the same split as in vLLM, `engines/vllm`):
- `parsers`: the `glm45` / `glm47` tool-call and reasoning detectors (SGLang has no `glm47` reasoning name then),
  and the parser patches (`patches.py`: the request handed to our reasoning detector, the hosted APIs' thinking
  switches);
- `model`: the GLM target and NextN draft classes, with their refusal of a draft without its MTP layer;
- `kernels`: the FP8 routed experts run on SGLang's MoE runner. The hook that moves them to glm_plugin's op is
  bound to the MoE layers of our model classes when they are built, so `model` off also keeps SGLang's runner
  (vLLM's `kernels` part does not need our model classes).
"""

from __future__ import annotations

import logging
from types import ModuleType

from glm_plugin.engines import register_parts
from glm_plugin.engines.sglang.names import MODEL_ARCHS, REASONING_PARSERS, TOOL_PARSERS

logger = logging.getLogger(__name__)


_requested: set[str] = set()


def register() -> None:
    """Entry point: idempotent; each part registers at most once per process."""
    from glm_plugin.engines.sglang import patches

    register_parts({
        "parsers": [
            ("sglang.srt.function_call.function_call_parser", _register_tool_parsers),
            ("sglang.srt.parser.reasoning_parser", _register_reasoning_parsers),
            ("sglang.srt.parser.reasoning_parser", patches.pass_request_to_detector),
            ("sglang.srt.parser.reasoning_parser_names", _register_reasoning_names),
            ("sglang.srt.entrypoints.openai.serving_chat", patches.accept_hosted_thinking_switches),
        ],
        "model": [
            ("sglang.srt.models.registry", _register_models),
        ],
    }, _requested)  # "kernels": read where our model classes are built (engines/sglang/model.py)


def _register_tool_parsers(module: ModuleType) -> None:
    from glm_plugin.engines.sglang import tools

    registry = module.FunctionCallParser.ToolCallParserEnum
    for name, cls in TOOL_PARSERS.items():
        registry[name] = getattr(tools, cls)
    logger.info(
        "glm_plugin: tool-call parsers %s are glm_plugin's (GLM_PLUGIN_DISABLE=parsers restores SGLang's)",
        ", ".join(TOOL_PARSERS),
    )


def _register_reasoning_names(module: ModuleType) -> None:
    # `--reasoning-parser` choices come from this dependency-free list unless the registry is already imported
    # (SGLang's server_args.py); our names must be there for the CLI to accept them.
    for name in REASONING_PARSERS:
        if name not in module.REASONING_PARSER_NAMES:
            module.REASONING_PARSER_NAMES.append(name)


def _register_reasoning_parsers(module: ModuleType) -> None:
    from glm_plugin.engines.sglang import reasoning

    registry = module.ReasoningParser.DetectorMap
    for name, cls in REASONING_PARSERS.items():
        registry[name] = getattr(reasoning, cls)
    logger.info(
        "glm_plugin: reasoning parsers %s are glm_plugin's (GLM_PLUGIN_DISABLE=parsers restores SGLang's)",
        ", ".join(REASONING_PARSERS),
    )


_model_import_failure: list[str] = []


def _register_models(module: ModuleType) -> None:
    """Point SGLang's `ModelRegistry.models` at our GLM classes once SGLang imports its registry.

    The registry holds classes, not import strings, and every process that builds a model (scheduler / TP
    workers, the EAGLE draft worker) resolves names through it; importing the registry already imports all of
    SGLang's model modules, so importing ours there adds no cost. Where SGLang's GLM modules cannot be imported
    (a missing CUDA-built dependency), SGLang's registry lacks them too: log once why and leave it as it is.
    """
    try:
        from glm_plugin.engines.sglang import model
    except Exception as error:  # noqa: BLE001 - any import failure must leave SGLang usable
        if not _model_import_failure:
            import sys

            _model_import_failure.append(f"{type(error).__name__}: {error}")
            # SGLang's own GLM module imported but ours did not: that is our bug, worth a warning.
            ours_only = "sglang.srt.models.glm4_moe" in sys.modules
            logger.log(logging.WARNING if ours_only else logging.INFO,
                       "glm_plugin: GLM model classes not registered in SGLang (their import fails: %s); "
                       "SGLang's registry is left as it is", _model_import_failure[0])
        return
    registry = module.ModelRegistry.models
    ours = {cls.__name__: cls for cls in model.EntryClass if cls.__name__ in MODEL_ARCHS}
    registry.update(ours)
    logger.info("glm_plugin: model architectures %s are glm_plugin's (GLM_PLUGIN_DISABLE=model restores SGLang's)",
                ", ".join(sorted(ours)))
