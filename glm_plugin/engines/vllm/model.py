"""GLM-4.5/4.6/4.7 (`Glm4MoeForCausalLM`) and GLM-4.7-Flash (`Glm4MoeLiteForCausalLM`) for vLLM, with EAGLE-3.

vLLM 0.32's GLM classes do not implement `SupportsEagle3`, so `--speculative-config '{"method": "eagle3", ...}'`
on a GLM target stops with "Model does not support EAGLE3 interface". These classes are vLLM's own, subclassed:
the only behaviour added is the capture of auxiliary hidden states (the residual stream after the layers the
EAGLE-3 head was trained on) and early, actionable errors for configurations vLLM would reject later with a bare
`assert` or a shape error deep inside the drafter. Weights, layers, kernels and the MoE bookkeeping stay vLLM's.

vLLM imports this module only when it resolves one of the architecture names (`register()` names it as a lazy
`"module:Class"` string), so importing vLLM here at module level costs nothing at plugin-load time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from types import ModuleType

import torch
from vllm.distributed import get_pp_group
from vllm.logger import init_logger
from vllm.model_executor.models import glm4_moe as _vllm_glm
from vllm.model_executor.models import glm4_moe_lite as _vllm_glm_lite
from vllm.model_executor.models.interfaces import EagleModelMixin, SupportsEagle3
from vllm.sequence import IntermediateTensors

from glm_plugin.checkpoint import Checkpoint, default_aux_layers, parallel_problem

logger = init_logger("vllm.glm_plugin.model")


def check_parallel_sizes(config, parallel_config) -> None:
    """Refuse tensor/expert-parallel sizes that do not split GLM's heads, experts and FP8 blocks evenly, naming the
    sizes that do (the split rule is `checkpoint.parallel_problem`, the command's too).

    vLLM finds these too, but as a bare `assert` inside an attention or MoE constructor on every worker.
    """
    expert_parallel = getattr(parallel_config, "enable_expert_parallel", False)
    dp = parallel_config.data_parallel_size

    def expert_ranks(tp: int) -> int:  # vLLM's expert-parallel group spans tensor x data parallel ranks
        return tp * dp if expert_parallel else 1

    tp = parallel_config.tensor_parallel_size
    checkpoint = Checkpoint(Path(), config.to_dict() if hasattr(config, "to_dict") else dict(vars(config)))
    problem = parallel_problem(checkpoint, tp, expert_ranks(tp))
    if problem is None:
        return
    fits = [n for n in range(1, checkpoint.attention_heads + 1)
            if parallel_problem(checkpoint, n, expert_ranks(n)) is None]
    advice = "" if expert_parallel else ", or --enable-expert-parallel for the experts"
    raise ValueError(f"{type(config).__name__}: {problem}. Use --tensor-parallel-size in {fits}{advice}.")


def check_eagle3_draft(config, vllm_config) -> None:
    """With `method: eagle3`, check that the head fits this target before any weight is loaded.

    An EAGLE-3 head concatenates target hidden states of width `target_hidden_size` (or its own `hidden_size`)
    and embeds tokens with the target's embedding; a head trained for another model fails much later, inside the
    drafter's first step, with a shape assertion that does not say which model is wrong.
    """
    spec = vllm_config.speculative_config
    if spec is None or spec.method != "eagle3" or spec.draft_model_config is None:
        return
    draft = spec.draft_model_config.hf_config
    width = getattr(draft, "target_hidden_size", None) or draft.hidden_size
    if width != config.hidden_size:
        raise ValueError(
            f"EAGLE-3 head {spec.draft_model_config.model!r} was trained on a target with hidden size {width}, "
            f"but this {config.architectures[0]} has hidden_size {config.hidden_size}. Use a head trained for "
            "this model (scripts/train_eagle3.py trains one), or serve it with its own target model.")
    layers = head_aux_layers(draft)
    if layers and not all(0 <= i <= config.num_hidden_layers for i in layers):
        raise ValueError(
            f"EAGLE-3 head {spec.draft_model_config.model!r} reads the hidden states after {list(layers)} decoder "
            f"layers, but this target has {config.num_hidden_layers} layers. The head was trained for a deeper "
            "model; use one trained for this checkpoint.")


def head_aux_layers(draft) -> tuple[int, ...] | None:
    """The layers an EAGLE-3 head's config names, as vLLM's capture index (k = the residual after k layers).

    Two conventions exist, told apart by where the ids sit. `eagle_config.eagle_aux_hidden_state_layer_ids` is
    SpecForge's and SGLang's: id i is the output of decoder layer i (SGLang captures at i + 1); SpecForge trains the
    published GLM heads with that meaning. A top-level `eagle_aux_hidden_state_layer_ids` is vLLM's own (speculators
    format): already the capture index. vLLM reads both as the capture index, so a SpecForge head that names its
    layers would get each one a layer early: drafts stay lossless but acceptance collapses, with no error.
    """
    top = getattr(draft, "eagle_aux_hidden_state_layer_ids", None)
    if top:
        return tuple(int(i) for i in top)
    nested = (getattr(draft, "eagle_config", None) or {}).get("eagle_aux_hidden_state_layer_ids")
    return tuple(int(i) + 1 for i in nested) if nested else None


_swap_lock = threading.Lock()


@contextlib.contextmanager
def _building_with(module: ModuleType, name: str, replacement: type) -> Iterator[None]:
    """While vLLM's `__init__` runs, make the inner-model name it looks up resolve to our subclass.

    vLLM's `Glm4MoeForCausalLM.__init__` builds `self.model = Glm4MoeModel(...)` from its module's globals, with no
    hook to choose the class. Re-implementing that `__init__` would fork the MoE bookkeeping it does; swapping the
    instance's class afterwards would leave vLLM's torch.compile wrapper bound to the old `forward`. So the module
    global is rebound for the duration of the constructor only (models are built one at a time, under a lock).
    """
    with _swap_lock:
        original = getattr(module, name)
        setattr(module, name, replacement)
        try:
            yield
        finally:
            setattr(module, name, original)


class _AuxHiddenStatesForward(EagleModelMixin):
    """vLLM's GLM decoder loop, plus the capture of the layers an EAGLE-3 head reads.

    Re-implemented rather than extended because the loop is where the residual stream is visible; it is the same
    loop as vLLM's `Glm4MoeModel.forward` / `Glm4MoeLiteModel.forward`, and it returns `(hidden, aux)` only when
    aux layers are set (exactly what vLLM's Llama/Qwen3 targets do), so without EAGLE-3 nothing changes.
    """

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | IntermediateTensors | tuple[torch.Tensor, list[torch.Tensor]]:
        if get_pp_group().is_first_rank:
            hidden_states = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
            residual = None
        else:
            assert intermediate_tensors is not None
            hidden_states = intermediate_tensors["hidden_states"]
            residual = intermediate_tensors["residual"]

        aux_hidden_states = self._maybe_add_hidden_state([], self.start_layer, hidden_states, residual)
        for layer_idx, layer in enumerate(islice(self.layers, self.start_layer, self.end_layer),
                                          start=self.start_layer):
            hidden_states, residual = layer(positions, hidden_states, residual)
            self._maybe_add_hidden_state(aux_hidden_states, layer_idx + 1, hidden_states, residual)

        if not get_pp_group().is_last_rank:
            return IntermediateTensors({"hidden_states": hidden_states, "residual": residual})

        hidden_states, _ = self.norm(hidden_states, residual)
        if aux_hidden_states:
            return hidden_states, aux_hidden_states
        return hidden_states


class GlmMoeModel(_AuxHiddenStatesForward, _vllm_glm.Glm4MoeModel):
    """vLLM's `Glm4MoeModel` (layers, weights, torch.compile decoration inherited) with aux-state capture."""


class GlmMoeLiteModel(_AuxHiddenStatesForward, _vllm_glm_lite.Glm4MoeLiteModel):
    """vLLM's `Glm4MoeLiteModel` (MLA layers) with aux-state capture."""


class _Eagle3Target:
    """What both GLM targets add on top of vLLM's class: early checks, the inner model with aux-state capture, and
    EAGLE-3 layer selection. Each target names vLLM's module and the inner-model global its `__init__` looks up;
    `SupportsEagle3` comes last in their bases, after vLLM's class, so `super().__init__` here is vLLM's."""

    config: object
    _vllm_module: ModuleType
    _inner_name: str
    _inner_class: type

    def __init__(self, *, vllm_config, prefix: str = ""):
        config = vllm_config.model_config.hf_config
        check_parallel_sizes(config, vllm_config.parallel_config)
        check_eagle3_draft(config, vllm_config)
        with _building_with(self._vllm_module, self._inner_name, self._inner_class):
            super().__init__(vllm_config=vllm_config, prefix=prefix)
        spec = vllm_config.speculative_config
        draft = spec.draft_model_config if spec is not None and spec.method == "eagle3" else None
        self._head_aux_layers = head_aux_layers(draft.hf_config) if draft is not None else None
        logger.info("glm_plugin: %s built by glm_plugin (vLLM's class + EAGLE-3 aux hidden states)",
                    type(self).__name__)

    def get_eagle3_default_aux_hidden_state_layers(self) -> tuple[int, ...]:
        return default_aux_layers(self.config.num_hidden_layers)

    def set_aux_hidden_state_layers(self, layers: tuple[int, ...]) -> None:
        # vLLM passes the head's ids unconverted when its config names any (see head_aux_layers).
        super().set_aux_hidden_state_layers(self._head_aux_layers or layers)

    # The name vLLM's DeepSeek target and older vLLM releases ask for.
    def get_eagle3_aux_hidden_state_layers(self) -> tuple[int, ...]:
        return self.get_eagle3_default_aux_hidden_state_layers()


class Glm4MoeForCausalLM(_Eagle3Target, _vllm_glm.Glm4MoeForCausalLM, SupportsEagle3):
    """GLM-4.5/4.6/4.7: vLLM's class, built around `GlmMoeModel`, usable as an EAGLE-3 target."""

    _vllm_module, _inner_name, _inner_class = _vllm_glm, "Glm4MoeModel", GlmMoeModel


class Glm4MoeLiteForCausalLM(_Eagle3Target, _vllm_glm_lite.Glm4MoeLiteForCausalLM, SupportsEagle3):
    """GLM-4.7-Flash (MLA attention): vLLM's class, built around `GlmMoeLiteModel`, usable as an EAGLE-3 target."""

    _vllm_module, _inner_name, _inner_class = _vllm_glm_lite, "Glm4MoeLiteModel", GlmMoeLiteModel
