"""GLM-4.5/4.6/4.7 (`Glm4MoeForCausalLM`), GLM-4.7-Flash (`Glm4MoeLiteForCausalLM`) and their NextN (EAGLE / MTP)
drafts for SGLang: SGLang's own classes, subclassed, with the routed experts of FP8 checkpoints computed by
`torch.ops.glm_plugin.fp8_moe_experts` and the NextN draft refusing checkpoints it cannot draft with.

How the experts are routed (see docs/engines.md, "SGLang model registration"): SGLang's `FusedMoE.forward_impl`
is dispatch -> `run_moe_core` (the quantisation method's expert compute) -> combine -> all-reduce. We replace only
`run_moe_core`, per MoE layer instance, after SGLang built the layer; dispatch, combine, the TP all-reduce, routing
and the shared expert stay SGLang's. The replacement checks on each call (so after weights are loaded or updated)
that the layer holds plain FP8 experts in the op's layout (`checkpoint.op_expert_weights`); anything else
(bf16 weights, expert parallelism, a backend that re-encoded the scales) keeps SGLang's path, the reason logged once.
Whose kernel runs is also the device policy's (glm_plugin/kernels/policy.py): ours on CPU; on a GPU SGLang's own
runner unless GLM_PLUGIN_GPU_KERNELS=1. `GLM_PLUGIN_DISABLE=kernels` leaves every layer unhooked.

SGLang imports this module only when its model registry is imported (`glm_plugin.engines.sglang.register`), which
already imports every SGLang model module; importing SGLang here at module level costs nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
from sglang.srt.layers.moe.token_dispatcher.standard import StandardCombineInput
from sglang.srt.layers.moe.topk import TopKOutputChecker
from sglang.srt.models import glm4_moe as _sgl_glm
from sglang.srt.models import glm4_moe_nextn as _sgl_nextn

from glm_plugin import checkpoint
from glm_plugin.engines import part_enabled
from glm_plugin.engines.log_once import log_once
from glm_plugin.kernels import policy

logger = logging.getLogger("sglang.glm_plugin.model")

# SGLang's GLM MoE blocks (glm4_moe, glm4_moe_lite) multiply the routed experts' sum by routed_scaling_factor
# themselves only when `not _is_cuda and not _use_aiter` (CPU and other devices); on CUDA and ROCm-aiter they
# expect the experts' runner to have applied it.
_RUNNER_SCALES = bool(getattr(_sgl_glm, "_is_cuda", False) or getattr(_sgl_glm, "_use_aiter", False))

NEXTN_FLAG = "--speculative-algorithm EAGLE (NextN)"  # named in a draft's refusal of a checkpoint without MTP


def _op_path(layer: FusedMoE, dispatch_output) -> tuple[str, tuple] | str:
    """The op's layout and weights for this call, or why SGLang's own expert compute must run instead."""
    if getattr(layer, "moe_ep_size", 1) != 1:
        return "expert parallelism (the op computes all experts of a rank; SGLang's EP dispatch owns the ids)"
    if getattr(layer.moe_runner_config, "no_combine", False):
        return "no_combine is set"
    if not dispatch_output.format.is_standard():
        return f"dispatch format {dispatch_output.format} is not the standard one"
    if dispatch_output.hidden_states_scale is not None or \
            getattr(dispatch_output, "hidden_states_pre_quant", None) is not None:
        return "the activations arrive pre-quantised"
    if not TopKOutputChecker.format_is_standard(dispatch_output.topk_output):
        return "the top-k output is not the standard (weights, ids) pair"
    # Read on every call (a few attribute and shape checks), not cached: SGLang's weight updates
    # (update_weights_from_disk / _tensor) may replace the parameters after the first forward.
    found = checkpoint.op_expert_weights(layer)
    if isinstance(found, str):
        return found
    # The device policy (docs/kernels.md): on an accelerator SGLang's tuned runner stays, unless opted in.
    w2 = found[1][2]  # [E, H, I]: the sizes our kernel may refuse (tensor parallelism splits I)
    decision = policy.resolve("sglang", _device_kind(dispatch_output.hidden_states), "experts", found[0],
                              shape=(w2.shape[1], w2.shape[2]))
    return found if decision.ours else decision.reason


def _device_kind(tensor: torch.Tensor) -> str:
    """The policy's device name: ROCm tensors also say "cuda", so torch's HIP build tells them apart."""
    return "rocm" if tensor.device.type == "cuda" and torch.version.hip else tensor.device.type


def _run_moe_core(layer: FusedMoE, original, dispatch_output):
    found = _op_path(layer, dispatch_output)
    if isinstance(found, str):
        log_once(logger, f"fallback:{found}", logging.INFO,
                 "glm_plugin: GLM routed experts use SGLang's MoE runner: %s", found)
        return original(dispatch_output)
    layout, (w13, w13_scale, w2, w2_scale) = found
    hidden = dispatch_output.hidden_states
    weights, ids = dispatch_output.topk_output.topk_weights, dispatch_output.topk_output.topk_ids
    log_once(logger, f"op:{layout}", logging.INFO,
             "glm_plugin: GLM routed experts run on glm_plugin::fp8_moe_experts (%s scales)", layout)
    from glm_plugin import kernels

    out = kernels.fp8_moe_experts(hidden, w13, w13_scale, w2, w2_scale, weights, ids, layout)
    # Return what SGLang's runner would: scaled by routed_scaling_factor wherever the GLM block does not scale
    # itself (unless the top-k weights already carry the factor).
    factor = layer.moe_runner_config.routed_scaling_factor
    if _RUNNER_SCALES and factor not in (None, 1.0) and not layer.should_fuse_routed_scaling_factor_in_topk:
        out = out * factor
    return StandardCombineInput(hidden_states=out)


def route_experts_through_op(model: torch.nn.Module) -> int:
    """Make every routed-expert layer of `model` compute with the glm_plugin op when its weights allow it.

    Returns how many layers were hooked. Bound per instance (not by swapping SGLang's class) so other models in the
    same process keep SGLang's behaviour.
    """
    count = 0
    for module in model.modules():
        if not isinstance(module, FusedMoE) or getattr(module, "_glm_plugin_hooked", False):
            continue
        original = module.run_moe_core

        def run_moe_core(dispatch_output, _layer=module, _original=original):
            return _run_moe_core(_layer, _original, dispatch_output)

        module.run_moe_core = run_moe_core
        module._glm_plugin_hooked = True
        count += 1
    return count


def _built(model: torch.nn.Module) -> None:
    # The expert hook is SGLang's `kernels` part: our classes (part `model`) carry it, but it is switched apart.
    if part_enabled("kernels"):
        kernels = f"{route_experts_through_op(model)} MoE layers may use glm_plugin's FP8 op"
    else:
        kernels = "its FP8 experts stay on SGLang's runner: GLM_PLUGIN_DISABLE=kernels"
    log_once(logger, f"built:{type(model).__name__}", logging.INFO,
             "glm_plugin: %s built by glm_plugin (SGLang's class; %s; GLM_PLUGIN_DISABLE=model restores SGLang's)",
             type(model).__name__, kernels)


def _nextn_index(config) -> int:
    # SGLang's loader reads a one-layer config as a draft-only export whose MTP layer is layer 0.
    return 0 if config.num_hidden_layers == 1 else checkpoint.nextn_layer_index(config)


def _recording(weights: Iterable[tuple[str, torch.Tensor]], seen: list[str]):
    for name, tensor in weights:
        seen.append(name)
        yield name, tensor


def _check_nextn_loaded(config, seen: list[str]) -> None:
    """SGLang's NextN loader skips every tensor outside the MTP layer and loads nothing if that layer is missing
    (a draft with random weights, no error). Refuse that, and say where the tied embed/head come from."""
    index = _nextn_index(config)
    prefix = f"model.layers.{index}."
    if not any(n.startswith(prefix) for n in seen):
        raise ValueError(
            f"the checkpoint has no tensor named {prefix}* although num_nextn_predict_layers = "
            f"{checkpoint.num_nextn_layers(config)}: its MTP (NextN) layer was stripped, so the EAGLE draft would run "
            "on random weights. Use the original checkpoint, or drop --speculative-algorithm.")
    for module, target in checkpoint.NEXTN_TIED.items():
        if f"{prefix}{module}.weight" not in seen:
            log_once(logger, f"tied:{module}", logging.INFO,
                     "glm_plugin: MTP layer %d has no %s; the draft uses the target's %s (SGLang's EAGLE worker "
                     "binds the target's embedding and head to the draft)", index, module, target)


class _Built:
    """Ahead of SGLang's GLM class in each of ours: SGLang builds the model, then `_built` hooks its MoE layers."""

    def __init__(self, config, quant_config=None, prefix: str = "") -> None:
        super().__init__(config, quant_config=quant_config, prefix=prefix)
        _built(self)


class _NextNDraft(_Built):
    """A NextN (EAGLE / MTP) draft: refuses a checkpoint without an MTP layer before SGLang builds anything."""

    def __init__(self, config, quant_config=None, prefix: str = "") -> None:
        checkpoint.check_has_nextn_layer(config, engine_flag=NEXTN_FLAG)
        super().__init__(config, quant_config=quant_config, prefix=prefix)


class Glm4MoeForCausalLM(_Built, _sgl_glm.Glm4MoeForCausalLM):
    """GLM-4.5/4.6/4.7: SGLang's class; FP8 routed experts through glm_plugin's op."""


class Glm4MoeForCausalLMNextN(_NextNDraft, _sgl_nextn.Glm4MoeForCausalLMNextN):
    """The GLM MTP layer as SGLang's EAGLE draft: SGLang's class, checked before build and after loading."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]):
        seen: list[str] = []
        result = super().load_weights(_recording(weights, seen))
        _check_nextn_loaded(self.config, seen)
        return result


# What the registry maps: architecture name -> our class (SGLang keys its registry by class __name__).
EntryClass = [Glm4MoeForCausalLM, Glm4MoeForCausalLMNextN]

try:  # GLM-4.7-Flash (MLA attention, same MoE block), where this SGLang has it
    from sglang.srt.models import glm4_moe_lite as _sgl_lite
    from sglang.srt.models import glm4_moe_lite_nextn as _sgl_lite_nextn
except ImportError as error:
    logger.info("glm_plugin: SGLang's GLM-4.7-Flash classes are unavailable (%s); keeping SGLang's", error)
else:
    class Glm4MoeLiteForCausalLM(_Built, _sgl_lite.Glm4MoeLiteForCausalLM):
        """GLM-4.7-Flash: SGLang's class; FP8 routed experts through glm_plugin's op."""

    class Glm4MoeLiteForCausalLMNextN(_NextNDraft, _sgl_lite_nextn.Glm4MoeLiteForCausalLMNextN):
        """GLM-4.7-Flash's MTP layer as SGLang's EAGLE draft."""

    EntryClass += [Glm4MoeLiteForCausalLM, Glm4MoeLiteForCausalLMNextN]
