"""Every tensor of a GLM-4.5/4.6/4.7 checkpoint and how its experts stack into the op's `w13` / `w2`: the test oracle
for glm_plugin.checkpoint and for the engines' loaders (what each name is, which names a config implies, which tensor
stands in for a missing MTP embed/head, the stacked expert tensors).

The package reads none of this (the engines load the tensors themselves); tests compare the engines' loaded layers
and the bundled checkpoint against it. The facts it builds on are the package's and are re-exported, so a test
reads both through one name (`import checkpoint_tensors as cn`). torch is imported by `stack_experts` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from glm_plugin.checkpoint import (  # noqa: F401 (re-exported for the tests)
    FP8_BLOCK, NEXTN_TIED, cfg, check_has_nextn_layer, nextn_layer_index, num_nextn_layers, op_expert_weights)

# Tensors that only the MTP layer has (besides a full decoder layer).
NEXTN_ONLY = ("enorm", "hnorm", "eh_proj", "shared_head.norm")

_PROJ = r"(gate_proj|up_proj|down_proj)"
_SUFFIX = r"(weight|weight_scale_inv|weight_scale|input_scale|bias)"
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(rf"^mlp\.experts\.(\d+)\.{_PROJ}\.{_SUFFIX}$")


def is_moe_layer(config: Any, layer: int) -> bool:
    """Layers before `first_k_dense_replace` are dense; later layers and every MTP layer are MoE."""
    return layer >= int(cfg(config, "first_k_dense_replace", 0) or 0)


@dataclass(frozen=True)
class TensorName:
    """What one checkpoint tensor is.

    kind: embed | lm_head | final_norm | attn | norm | dense_mlp | router | expert | shared_expert | nextn
    layer: checkpoint layer index (None for embed / lm_head / final_norm); nextn: the layer is an MTP layer
    module: the part after `model.layers.{layer}.` (or the whole name for top-level tensors)
    expert / proj / suffix: for experts, e.g. 3 / "gate_proj" / "weight_scale_inv"
    stacked: for experts, ("w13", 0 gate | 1 up) or ("w2", None): where the op's stacked tensor takes it
    """

    name: str
    kind: str
    layer: int | None = None
    nextn: bool = False
    module: str = ""
    expert: int | None = None
    proj: str | None = None
    suffix: str | None = None
    stacked: tuple[str, int | None] | None = None


def classify(name: str, config: Any) -> TensorName:
    """Map one GLM checkpoint tensor name; raises ValueError for a name GLM checkpoints do not have."""
    if name == "model.embed_tokens.weight":
        return TensorName(name, "embed", module=name)
    if name == "lm_head.weight":
        return TensorName(name, "lm_head", module=name)
    if name == "model.norm.weight":
        return TensorName(name, "final_norm", module=name)
    m = _LAYER.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a GLM checkpoint tensor name")
    layer, rest = int(m.group(1)), m.group(2)
    first_nextn = nextn_layer_index(config)
    nextn = layer >= first_nextn
    if nextn and layer >= first_nextn + max(num_nextn_layers(config), 0):
        raise ValueError(f"{name!r}: layer {layer} is past the last layer ({first_nextn} decoder layers "
                         f"+ {num_nextn_layers(config)} MTP layer(s) in config)")
    base = dict(name=name, layer=layer, nextn=nextn, module=rest)
    if rest.startswith("self_attn."):
        return TensorName(kind="attn", **base)
    if rest in ("input_layernorm.weight", "post_attention_layernorm.weight"):
        return TensorName(kind="norm", **base)
    if nextn and any(rest.startswith(p + ".") for p in (*NEXTN_ONLY, *NEXTN_TIED)):
        return TensorName(kind="nextn", **base)
    e = _EXPERT.match(rest)
    if e:
        if not is_moe_layer(config, layer):
            raise ValueError(f"{name!r}: layer {layer} is dense (first_k_dense_replace = "
                             f"{cfg(config, 'first_k_dense_replace')}) but the name is a routed expert's")
        expert, proj, suffix = int(e.group(1)), e.group(2), e.group(3)
        n_experts = int(cfg(config, "n_routed_experts"))
        if expert >= n_experts:
            raise ValueError(f"{name!r}: expert {expert} but n_routed_experts = {n_experts}")
        stacked = ("w2", None) if proj == "down_proj" else ("w13", 0 if proj == "gate_proj" else 1)
        return TensorName(kind="expert", expert=expert, proj=proj, suffix=suffix, stacked=stacked, **base)
    if rest in ("mlp.gate.weight", "mlp.gate.e_score_correction_bias"):
        return TensorName(kind="router", suffix=rest.rsplit(".", 1)[1], **base)
    s = re.match(rf"^mlp\.(shared_experts\.)?{_PROJ}\.{_SUFFIX}$", rest)
    if s:
        kind = "shared_expert" if s.group(1) else "dense_mlp"
        if kind == "dense_mlp" and is_moe_layer(config, layer):
            raise ValueError(f"{name!r}: layer {layer} is an MoE layer but the name is a dense MLP's")
        return TensorName(kind=kind, proj=s.group(2), suffix=s.group(3), **base)
    raise ValueError(f"{name!r} is not a GLM checkpoint tensor name")


# ---- FP8 -----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fp8Format:
    """How a checkpoint stores FP8 weights: the scale tensor's suffix and the op's `layout` for it."""

    scale_suffix: str  # "weight_scale_inv" (quant_method fp8) or "weight_scale" (compressed-tensors)
    layout: str  # "block" (128x128 scales) or "channel" (one scale per output row)


def fp8_format(config: Any) -> Fp8Format | None:
    """The FP8 format named by `quantization_config`, or None for an unquantised (bf16) checkpoint.

    zai-org's block checkpoints (`quant_method: fp8`, `weight_block_size: [128, 128]`) name the scale
    `weight_scale_inv` although it multiplies; compressed-tensors exports name it `weight_scale` and are per channel
    (GLM-4.5-FP8) or 128x128 blocks (llm-compressor FP8_BLOCK).
    """
    q = cfg(config, "quantization_config")
    if not q:
        return None
    method = str(cfg(q, "quant_method", "")).lower()
    if method == "fp8":
        block = list(cfg(q, "weight_block_size") or [])
        if block != [FP8_BLOCK] * 2:
            raise ValueError(f"quant_method fp8 with weight_block_size {block or None}: the glm_plugin FP8 MoE op "
                             f"takes 128x128 block scales only; set GLM_PLUGIN_DISABLE=model to use the engine's "
                             "own MoE path for this checkpoint.")
        return Fp8Format("weight_scale_inv", "block")
    if method == "compressed-tensors":
        for group in (cfg(q, "config_groups") or {}).values():
            weights = cfg(group, "weights") or {}
            if cfg(weights, "type") != "float" or int(cfg(weights, "num_bits", 0)) != 8:
                continue
            strategy = cfg(weights, "strategy")
            if strategy == "channel":
                return Fp8Format("weight_scale", "channel")
            square = [FP8_BLOCK, FP8_BLOCK]
            if strategy == "block" and list(cfg(weights, "block_structure") or square) == square:
                return Fp8Format("weight_scale", "block")
        return None
    return None


# ---- the MTP layer's tied tensors ----------------------------------------------------------------------------------

def nextn_tied_sources(names: Iterable[str], config: Any) -> dict[str, str]:
    """For each MTP layer's `embed_tokens` / `shared_head.head`: the checkpoint tensor that provides it.

    The layer's own tensor when the checkpoint has it, else the target's (`model.embed_tokens.weight`,
    `lm_head.weight`). Raises if neither exists, and if the checkpoint has no tensor of the MTP layer at all.
    """
    check_has_nextn_layer(config)
    present = set(names)
    first = nextn_layer_index(config)
    out = {}
    for idx in range(first, first + num_nextn_layers(config)):
        prefix = f"model.layers.{idx}."
        if not any(n.startswith(prefix) for n in present):
            raise ValueError(
                f"the checkpoint has no tensor named {prefix}* although num_nextn_predict_layers = "
                f"{num_nextn_layers(config)}: its MTP layer was stripped (some re-exports drop it). Use the "
                "original checkpoint, or serve without speculation.")
        for module, target in NEXTN_TIED.items():
            own = f"{prefix}{module}.weight"
            if own in present:
                out[own] = own
            elif target in present:
                out[own] = target
            else:
                raise ValueError(f"MTP layer {idx}: the checkpoint has neither {own} nor the target's {target}; "
                                 "it is incomplete (re-download it, or serve without speculation).")
    return out


# ---- expert stacking -----------------------------------------------------------------------------------------------

def expert_names(layer: int, num_experts: int, suffix: str = "weight") -> dict[str, list[list[str]]]:
    """Checkpoint names that make up the op's stacked tensors for one layer, in stacking order.

    w13[e] = cat(gate_proj[e], up_proj[e]) along the output dim (gate first, as `silu(gate) * up` in the op);
    w2[e] = down_proj[e]. The same order holds for the scales (`suffix` = weight_scale_inv / weight_scale).
    """
    p = f"model.layers.{layer}.mlp.experts"
    return {
        "w13": [[f"{p}.{e}.gate_proj.{suffix}", f"{p}.{e}.up_proj.{suffix}"] for e in range(num_experts)],
        "w2": [[f"{p}.{e}.down_proj.{suffix}"] for e in range(num_experts)],
    }


def stack_experts(get: Callable[[str], Any], layer: int, num_experts: int, fmt: Fp8Format | None = None) -> dict:
    """Build the op's weight tensors for one MoE layer from per-expert checkpoint tensors.

    `get(name)` returns a checkpoint tensor. Returns {"w13": [E, 2I, H], "w2": [E, H, I]} and, with `fmt`,
    {"w13_scale": [E, 2I/128, H/128] or [E, 2I, 1], "w2_scale": [E, H/128, I/128] or [E, H, 1]}.

    Block scales of gate and up concatenate row-wise only when I is a multiple of 128 (else a 128-row scale block
    would straddle gate and up); the error names the fix.
    """
    import torch

    out = {}
    suffixes = {"": "weight"}
    if fmt is not None:
        suffixes["_scale"] = fmt.scale_suffix
    for key_suffix, suffix in suffixes.items():
        names = expert_names(layer, num_experts, suffix)
        for key, rows in names.items():
            per_expert = [torch.cat([get(n) for n in parts], dim=0) if len(parts) > 1 else get(parts[0])
                          for parts in rows]
            out[key + key_suffix] = torch.stack(per_expert)
    if fmt is not None and fmt.layout == "block":
        inter = out["w2"].shape[-1]
        if inter % FP8_BLOCK:
            raise ValueError(
                f"layer {layer}: moe_intermediate_size per rank is {inter}, not a multiple of {FP8_BLOCK}, so the "
                "128x128 weight_scale_inv blocks of gate_proj and up_proj cannot be stacked into w13; use a "
                "tensor-parallel size that keeps it a multiple of 128, or expert parallelism.")
    return out


# ---- expected names ------------------------------------------------------------------------------------------------

def expected_names(config: Any, *, fp8: Fp8Format | None = None, nextn_tied: bool = True) -> list[str]:
    """Every tensor name a GLM-4.5/4.6/4.7 (`Glm4MoeForCausalLM`) checkpoint with this config carries.

    With `fp8`, routed and shared experts, dense MLPs and attention projections have a scale next to each weight
    (router, norms, embeddings and heads stay bf16). `nextn_tied=False` leaves out the MTP layer's own
    `embed_tokens` / `shared_head.head`, as checkpoints that omit them do.
    """
    scale = [fp8.scale_suffix] if fp8 else []
    bias = bool(cfg(config, "attention_bias", False))
    qk_norm = bool(cfg(config, "use_qk_norm", False))
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
    total = nextn_layer_index(config) + num_nextn_layers(config)
    for layer in range(total):
        p = f"model.layers.{layer}."
        for proj in ("q_proj", "k_proj", "v_proj"):
            names += [f"{p}self_attn.{proj}.{s}" for s in ["weight", *scale]]
            if bias:
                names.append(f"{p}self_attn.{proj}.bias")
        names += [f"{p}self_attn.o_proj.{s}" for s in ["weight", *scale]]
        if qk_norm:
            names += [f"{p}self_attn.q_norm.weight", f"{p}self_attn.k_norm.weight"]
        names += [f"{p}input_layernorm.weight", f"{p}post_attention_layernorm.weight"]
        projs = ("gate_proj", "up_proj", "down_proj")
        if is_moe_layer(config, layer):
            names += [f"{p}mlp.gate.weight", f"{p}mlp.gate.e_score_correction_bias"]
            for e in range(int(cfg(config, "n_routed_experts"))):
                names += [f"{p}mlp.experts.{e}.{proj}.{s}" for proj in projs for s in ["weight", *scale]]
            names += [f"{p}mlp.shared_experts.{proj}.{s}" for proj in projs for s in ["weight", *scale]]
        else:
            names += [f"{p}mlp.{proj}.{s}" for proj in projs for s in ["weight", *scale]]
        if layer >= nextn_layer_index(config):
            names += [f"{p}{m}.weight" for m in NEXTN_ONLY]
            if nextn_tied:
                names += [f"{p}{m}.weight" for m in NEXTN_TIED]
    return names
