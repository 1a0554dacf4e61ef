"""Every change glm_plugin makes to vLLM's own classes, each with the vLLM quirk it answers.

`register()` (`__init__.py`) installs each one through `register_parts`, under the part it belongs to, once vLLM
imports the module it changes; importing our parser or model modules patches nothing. Standard library only at
module level: this module is imported at plugin-load time in every vLLM process. Each patch is idempotent, steps
aside where vLLM already does what it adds, and says when it can be removed.

- part `parsers`: `forward_prompt_token_ids` (`DelegatingParser.set_prompt_token_ids`),
  `stream_closed_prompts_through_reasoning` (`DelegatingParser.parse_delta`),
  `accept_hosted_thinking_switches` (`ChatCompletionRequest.build_chat_params`);
- part `model`: `guard_mtp_config` (`SpeculativeConfig.hf_config_override`);
- part `kernels`: `register_quantization_when_whole`, which may install `register_on_first_lookup`
  (`quantization.get_quantization_config`, until its first call).

Not here, because they are scoped to one call rather than installed: `model.py`'s `_building_with` rebinds vLLM's
inner-model class only while our model's constructor runs.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Callable, Sequence

from glm_plugin.engines.vllm.names import MTP_DRAFT_NAMES, MTP_FLAG, PARSER_MODULES
from glm_plugin.engines.wrap_once import already_wrapped, install

_VLLM_OVERRIDE = "glm_plugin_vllm_hf_config_override"  # where vLLM's own hf_config_override is kept


def forward_prompt_token_ids(module: ModuleType) -> None:
    """Make `DelegatingParser.set_prompt_token_ids` reach a reasoning parser that wants the prompt.

    Quirk (vLLM 0.32): the non-streaming parser gets the prompt through `Parser.set_prompt_token_ids`, which
    `DelegatingParser` leaves a no-op, so a composed reasoning parser never sees it (streaming has
    `adjust_initial_state_from_prompt`). Patched only while vLLM has not implemented it itself; other parsers
    are unaffected (they have no `set_prompt_token_ids`).

    Remove when: vLLM's `DelegatingParser` forwards `set_prompt_token_ids` itself (the patch already steps aside).
    """
    delegating = module.DelegatingParser
    if delegating.set_prompt_token_ids is not module.Parser.set_prompt_token_ids:
        return

    def set_prompt_token_ids(self, prompt_token_ids: Sequence[int]) -> None:
        hook = getattr(self._reasoning_parser, "set_prompt_token_ids", None)
        if hook is not None:
            hook(prompt_token_ids)

    delegating.set_prompt_token_ids = set_prompt_token_ids


def stream_closed_prompts_through_reasoning(module: ModuleType) -> None:
    """Let a GLM reasoning parser see a stream whose prompt already closed thinking.

    Quirk (vLLM 0.32): `DelegatingParser.parse_delta` asks `is_reasoning_end(prompt)` once and, when the prompt
    closed thinking (`enable_thinking: false`), never calls the reasoning parser: deltas go to the tool parser or
    straight to content. GLM models at times write a think block anyway (zai-org/GLM-4.5 #142, vLLM PR #31788), whose
    tags and reasoning then reached streamed content while the non-streaming path split them off. `is_reasoning_end`
    must stay True for such prompts (structured output is constrained from the first token), so the first
    `parse_delta` changes instead: for a reasoning parser that sets `splits_closed_prompts`, the prompt only sets
    where the output starts, and the parser reports the end of reasoning itself (with its first text, unless that
    opens a block). Other parsers are untouched; where vLLM's stream state has no `prompt_reasoning_checked`, vLLM's
    own behaviour stays.

    Remove when: vLLM calls the reasoning parser for streams whose prompt closed thinking.
    """
    delegating = module.DelegatingParser
    original = delegating.parse_delta
    if already_wrapped(original):
        return
    fields = getattr(getattr(module, "StreamState", None), "__dataclass_fields__", {})
    if "prompt_reasoning_checked" not in fields:
        return

    def parse_delta(self, delta_text, delta_token_ids, request, prompt_token_ids=None, *, finished):
        reasoning = self._reasoning_parser
        state = self._stream_state
        if (prompt_token_ids is not None and not state.prompt_reasoning_checked
                and getattr(reasoning, "splits_closed_prompts", False)):
            state.prompt_reasoning_checked = True
            reasoning.adjust_initial_state_from_prompt(prompt_token_ids)
        return original(self, delta_text, delta_token_ids, request, prompt_token_ids, finished=finished)

    install(delegating, "parse_delta", parse_delta)


def accept_hosted_thinking_switches(module: ModuleType) -> None:
    """Read Z.ai's `thinking: {"type": ...}` and DashScope's top-level `enable_thinking` as the template's switch.

    Quirk: vLLM keeps unknown request fields (`model_extra`) but reads only `chat_template_kwargs`; both the parser
    set-up and the renderer get the kwargs from `ChatCompletionRequest.build_chat_params`, so we fill them in
    there, once per request. Only in servers running the GLM parsers: vLLM imports our parser modules at its first
    lookup of their names, at start-up, so a process where neither is imported serves other parsers.

    Remove when: vLLM maps hosted `thinking` / `enable_thinking` fields to `chat_template_kwargs` itself.
    """
    from glm_plugin.engines.thinking_dialects import merged_template_kwargs

    request_class = module.ChatCompletionRequest
    original = request_class.build_chat_params
    if already_wrapped(original):
        return

    def build_chat_params(self, *args: Any, **kwargs: Any) -> Any:
        if any(name in sys.modules for name in PARSER_MODULES):
            merged = merged_template_kwargs(self.chat_template_kwargs, self.model_extra or {})
            if merged is not self.chat_template_kwargs:
                self.chat_template_kwargs = merged
        return original(self, *args, **kwargs)

    install(request_class, "build_chat_params", build_chat_params)


def guard_mtp_config(module: ModuleType) -> None:
    """Put `mtp_hf_config_override` in front of vLLM's draft-config conversion.

    Quirk (vLLM 0.32): `method: mtp` on a GLM checkpoint without an MTP layer stops the API process, while it builds
    the speculative config, with "ZeroDivisionError: integer modulo by zero" (num_speculative_tokens % 0): before
    any model class, ours included, could say what is wrong. vLLM turns the target's config into the draft's in
    `SpeculativeConfig.hf_config_override` (a static method looked up at each call); ours in its place lets the
    refusal that the MTP classes also make come first.

    Remove when: vLLM's speculative config refuses a target without an MTP layer by name.
    """
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


def register_quantization_when_whole(module: ModuleType, register: Callable[[ModuleType], None]) -> None:
    """Run `register(module)` on the quantization package now, or at its first lookup while vLLM is mid-import.

    Where vLLM imports the package from inside its own import chain (vLLM 0.33+), registering waits for vLLM's
    first config lookup (`register_on_first_lookup`); where the package is imported on its own (vLLM 0.32, a
    worker, a test) it is done at once, before anything can look a name up. The one registration path.

    Remove when: vLLM no longer imports its quantization package from inside `vllm.config`'s own import.
    """
    if _vllm_importing():
        register_on_first_lookup(module, register)
    else:
        register(module)


def _vllm_importing() -> bool:
    """True while some vLLM module is still executing (this callback then runs inside vLLM's own import chain)."""
    return any(name.partition(".")[0] == "vllm" and getattr(getattr(mod, "__spec__", None), "_initializing", False)
               for name, mod in list(sys.modules.items()))


def register_on_first_lookup(module: ModuleType, register: Callable[[ModuleType], None]) -> None:
    """Run `register(module)` at the first call of the quantization package's `get_quantization_config`.

    Quirk (vLLM 0.33): the package is imported from inside `vllm.config` (config/quantization.py) while that is
    half-initialised, and our configs' modules need it whole. The wrapper puts vLLM's function back at its first
    call; modules that import the function by name (weight_utils) do so after the package has executed, so they
    get the wrapper, which after its first call only forwards.

    Remove with `register_quantization_when_whole`.
    """
    original = module.get_quantization_config
    if already_wrapped(original):
        return

    pending = [module]

    def get_quantization_config(quantization: str):
        if pending:
            module.get_quantization_config = original  # later lookups through the package are vLLM's own
            register(pending.pop())
        return original(quantization)

    install(module, "get_quantization_config", get_quantization_config)
