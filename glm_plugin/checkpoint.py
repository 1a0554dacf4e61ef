"""What a GLM checkpoint is, stated once for the command and both engines: its architecture names, its FP8 scale
layouts, where its MTP (NextN) layer sits and which of that layer's tensors may be missing, the GPU splits it allows,
and the layers an EAGLE-3 head reads.

Why one module: vLLM and SGLang each rename GLM tensors with their own string replaces, and the GLM facts behind them
(the MTP layer is `model.layers.{num_hidden_layers}`, its `embed_tokens` / `shared_head.head` may be missing and then
come from the target, block FP8 scales are 128x128 and called `weight_scale_inv` although they multiply) were written
in several places and drifted. Standard library only: `glm-plugin serve` reads these facts from config.json before
any engine is imported (`op_expert_weights` imports torch when called, from inside an engine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# ---- architecture names (config.json `architectures`) ----------------------------------------------------------

TARGET_ARCHITECTURES = ("Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM")
"""GLM-4.5/4.6/4.7 and GLM-4.7-Flash (MLA attention): the targets both engines serve with our model classes."""
SGLANG_DRAFT_ARCHITECTURES = ("Glm4MoeForCausalLMNextN", "Glm4MoeLiteForCausalLMNextN")
"""The names SGLang's EAGLE worker builds the checkpoint's MTP layer under."""
VLLM_DRAFT_ARCHITECTURES = ("Glm4MoeMTPModel", "Glm4MoeLiteMTPModel")
"""The names vLLM's `method: mtp` asks for on a GLM-4.x / GLM-4.7-Flash target."""
GLM5_ARCHITECTURE = "GlmMoeDsaForCausalLM"
"""GLM-5 / 5.x (DeepSeek sparse attention): served by the engines' own model classes, with our parsers."""

# ---- FP8 scale layouts ------------------------------------------------------------------------------------------

FP8_BLOCK = 128
"""Side of a `weight_scale_inv` block in `quant_method: fp8` checkpoints (`weight_block_size: [128, 128]`)."""
SCALE_LAYOUTS = ("block", "channel")
"""How FP8 weight scales reach the kernels: `block`, one scale per FP8_BLOCK x FP8_BLOCK tile (`weight_scale_inv`);
`channel`, one per output row (compressed-tensors `weight_scale`)."""


@dataclass(frozen=True)
class Fp8Layout:
    """The scale layout a checkpoint declares: `block` is N of [N, N] tiles, None for per-channel/per-tensor.

    Block scales (`quant_method: fp8` with `weight_block_size`, or compressed-tensors `strategy: block`) cover
    [N, N] tiles; per-channel or per-tensor scales (compressed-tensors `strategy: channel` / `tensor`, zai-org's
    GLM-4.5-FP8 and GLM-4.5-Air-FP8) cover a whole output row or matrix. `unquantized`: the modules the config
    leaves in bf16 (`modules_to_not_convert`, `ignore`).
    """

    block: int | None
    unquantized: tuple[str, ...] = ()

    def quantized(self, module: str) -> bool:
        """Whether `module` (a checkpoint name such as `model.layers.3.mlp.shared_experts.gate_proj`) is FP8."""
        for entry in self.unquantized:
            if entry.startswith("re:"):
                if re.match(entry[3:], module):
                    return False
            elif entry in module:  # transformers' modules_to_not_convert semantics: a substring of the name
                return False
        return True


def fp8_layout(config: dict) -> Fp8Layout | None:
    """The FP8 layout from `quantization_config`, or None for an unquantized (or non-FP8) checkpoint."""
    quant = config.get("quantization_config") or {}
    method = quant.get("quant_method")
    if method == "fp8":
        block = quant.get("weight_block_size")
        return Fp8Layout(int(block[0]) if block else None, tuple(quant.get("modules_to_not_convert") or ()))
    if method == "compressed-tensors":
        blocks = []
        for group in (quant.get("config_groups") or {}).values():
            weights = group.get("weights") or {}
            if weights.get("type", "float") == "float" and weights.get("num_bits") == 8:
                if weights.get("strategy") == "block":
                    blocks.append(_block_side(weights.get("block_structure")))
                else:
                    blocks.append(None)
        if blocks:
            sides = [b for b in blocks if b]
            return Fp8Layout(max(sides) if sides else None, tuple(quant.get("ignore") or ()))
    return None


def _block_side(structure) -> int:
    """`[128, 128]` or the older `"128x128"` -> 128."""
    if isinstance(structure, str):
        structure = structure.lower().split("x")
    return int(structure[0])


# ---- the MTP (NextN) layer --------------------------------------------------------------------------------------

NEXTN_TIED = {"embed_tokens": "model.embed_tokens.weight", "shared_head.head": "lm_head.weight"}
"""MTP-layer tensors some checkpoints omit, and the target tensor that stands in for each (vllm-project/vllm#25993)."""


def cfg(config: Any, key: str, default: Any = None) -> Any:
    """A config field from a transformers config, a SimpleNamespace or a plain dict (config.json)."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def nextn_layer_index(config: Any) -> int:
    """Index of the first MTP layer in the checkpoint: the layer after the last decoder layer.

    GLM-4.5/4.6/4.7 put it at 92, GLM-4.5-Air at 46, GLM-4.7-Flash at 47: always `num_hidden_layers`.
    """
    return int(cfg(config, "num_hidden_layers"))


def num_nextn_layers(config: Any) -> int:
    return int(cfg(config, "num_nextn_predict_layers", 0) or 0)


def check_has_nextn_layer(config: Any, *, engine_flag: str = "speculative decoding") -> None:
    """Refuse to build an MTP/NextN draft from a checkpoint that has no MTP layer.

    Without this, vLLM 0.32 stops with "ZeroDivisionError: integer modulo by zero" while it builds its speculative
    config (our vLLM adapter runs this check there, and again in the MTP classes), and SGLang builds the draft and
    loads nothing into it (random weights, acceptance near zero, no error).
    """
    if num_nextn_layers(config) > 0:
        return
    archs = cfg(config, "architectures") or ["this model"]
    raise ValueError(
        f"{archs[0]} has num_nextn_predict_layers = 0: the checkpoint carries no MTP (NextN) layer, so "
        f"{engine_flag} has nothing to draft with. Serve without speculation, use a checkpoint that ships its MTP "
        "layer (num_nextn_predict_layers: 1, e.g. zai-org/GLM-4.5), or use EAGLE-3 with a trained head "
        "(docs/speculative.md).")


# ---- routed experts in the op's layout --------------------------------------------------------------------------

def op_expert_weights(layer: Any) -> tuple[str, tuple] | str:
    """The op's (layout, (w13, w13_scale, w2, w2_scale)) from an engine MoE layer after weight loading, or why not.

    vLLM's and SGLang's `FusedMoE` both keep the loaded experts as `w13_weight` [E, 2I, H] (gate rows, then up
    rows) and `w2_weight` [E, H, I], with `w13_weight_scale_inv` (block) or `w13_weight_scale` (per channel) beside
    them. A backend may rewrite them after loading (padding, interleaving, UE8M0 or transposed scales for
    DeepGEMM); anything but the plain layout is reported, never guessed at.
    """
    import torch

    w13, w2 = getattr(layer, "w13_weight", None), getattr(layer, "w2_weight", None)
    if w13 is None or w2 is None:
        return "the layer has no w13_weight / w2_weight"
    if w13.dtype != torch.float8_e4m3fn or w2.dtype != torch.float8_e4m3fn:
        return f"expert weights are {w13.dtype} / {w2.dtype}, not float8_e4m3fn"
    if w13.dim() != 3 or w2.dim() != 3:
        return f"expert weights have shapes {tuple(w13.shape)} / {tuple(w2.shape)}, not [E, 2I, H] / [E, H, I]"
    e, two_i, h = w13.shape
    if tuple(w2.shape) != (e, h, two_i // 2) or two_i % 2:
        return f"w13 {tuple(w13.shape)} and w2 {tuple(w2.shape)} are not [E, 2I, H] and [E, H, I]"
    b = FP8_BLOCK
    candidates = (
        ("block", "w13_weight_scale_inv", "w2_weight_scale_inv",
         (e, -(-two_i // b), -(-h // b)), (e, -(-h // b), -(-(two_i // 2) // b))),
        ("channel", "w13_weight_scale", "w2_weight_scale", (e, two_i, 1), (e, h, 1)),
    )
    for layout, s13_name, s2_name, s13_shape, s2_shape in candidates:
        s13, s2 = getattr(layer, s13_name, None), getattr(layer, s2_name, None)
        if s13 is None or s2 is None:
            continue
        if s13.dtype != torch.float32 or s2.dtype != torch.float32:
            return f"{s13_name} is {s13.dtype}, not float32 (a backend re-encoded the scales)"
        if tuple(s13.shape) != s13_shape or tuple(s2.shape) != s2_shape:
            return (f"{s13_name} {tuple(s13.shape)} / {s2_name} {tuple(s2.shape)} are not the {layout} scales "
                    f"{s13_shape} / {s2_shape}")
        if layout == "block" and (two_i // 2) % FP8_BLOCK:
            return f"intermediate size per rank {two_i // 2} is not a multiple of {FP8_BLOCK}"
        return layout, (w13, s13, w2, s2)
    return "no weight_scale_inv / weight_scale next to the FP8 expert weights"


# ---- EAGLE-3 ----------------------------------------------------------------------------------------------------

EAGLE3_NUM_AUX = 3
"""How many auxiliary hidden states an EAGLE-3 head concatenates (its `fc` takes 3 * hidden_size)."""


def default_aux_layers(num_layers: int) -> tuple[int, ...]:
    """The layers whose outputs feed an EAGLE-3 head when the head's config does not name them.

    Index k is the residual stream after k decoder layers (0 = the embeddings), as in vLLM's Llama and Qwen
    targets. The usual choice (2, L // 2, L - 3) (low, middle, high) collapses for shallow models: for L = 4 it
    is (2, 2, 1), only two distinct layers, and a 3-input head would get the wrong width. Then take three distinct
    layers spread over 1 .. L - 1 instead (for L = 4: 1, 2, 3), and for L < 3 every layer there is.
    """
    usual = (2, num_layers // 2, num_layers - 3)
    if len(set(usual)) == EAGLE3_NUM_AUX and min(usual) >= 1:
        return usual
    if num_layers - 1 >= EAGLE3_NUM_AUX:
        return (1, num_layers // 2, num_layers - 1)
    return tuple(range(1, num_layers + 1))


# ---- GPU splits -------------------------------------------------------------------------------------------------
# An impossible split fails minutes into loading with an engine traceback ("output_partition_size = 192 is not
# divisible by weight quantization block_n = 128"); from config.json the same fact is known before anything
# starts, together with a GPU count that works. Modules the config leaves unquantized are not checked.

EXPERT_PARALLEL_FROM = 8  # the deployment recipes add expert parallelism on 8 GPUs, not on 4


class SplitError(ValueError):
    """This GPU count cannot hold the checkpoint; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """What the command and the split rules need from a checkpoint directory's config.json."""

    path: Path
    config: dict = field(repr=False)

    def _int(self, key: str, default: int = 0) -> int:
        return int(self.config.get(key) or default)

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]

    @property
    def attention_heads(self) -> int:
        return self._int("num_attention_heads")

    @property
    def kv_heads(self) -> int:
        return self._int("num_key_value_heads") or self.attention_heads

    @property
    def head_dim(self) -> int:
        return self._int("head_dim") or (self._int("hidden_size") // max(1, self.attention_heads))

    @property
    def routed_experts(self) -> int:
        return self._int("n_routed_experts")

    @property
    def is_mla(self) -> bool:
        return self.config.get("kv_lora_rank") is not None

    @property
    def has_mtp(self) -> bool:
        return self._int("num_nextn_predict_layers") > 0

    @property
    def fp8(self) -> Fp8Layout | None:
        return fp8_layout(self.config)


def _split_matrices(checkpoint: Checkpoint, tp: int, ep: int) -> list[tuple[str, str, int]]:
    """(what, a checkpoint module that holds it, the width tensor parallelism cuts) for one dense and one MoE layer.

    Shared experts and the dense MLP are tensor-parallel even when the routed experts are expert-parallel."""
    dense_layers = checkpoint._int("first_k_dense_replace")
    moe = f"model.layers.{dense_layers}.mlp"
    width = checkpoint._int("moe_intermediate_size")
    shared = width * checkpoint._int("n_shared_experts")
    heads = checkpoint.attention_heads * checkpoint.head_dim
    matrices = [("attention q/o projection", f"model.layers.{dense_layers}.self_attn.q_proj", heads)]
    if checkpoint.kv_heads >= tp:  # fewer KV heads than ranks: replicated, not cut
        matrices.append(("attention k/v projection", f"model.layers.{dense_layers}.self_attn.k_proj",
                         checkpoint.kv_heads * checkpoint.head_dim))
    if dense_layers:
        matrices.append(("dense MLP intermediate_size", "model.layers.0.mlp.gate_proj",
                         checkpoint._int("intermediate_size")))
    if shared:
        matrices.append(("shared expert width", f"{moe}.shared_experts.gate_proj", shared))
    if ep == 1 and width:
        matrices.append(("moe_intermediate_size", f"{moe}.experts.0.gate_proj", width))
    return matrices


def kv_heads_fit(kv_heads: int, tp: int) -> bool:
    """KV heads split evenly over `tp` ranks (kv_heads >= tp) or each replicated on whole groups of ranks (tp a
    multiple of kv_heads): the two layouts vLLM and SGLang implement for grouped-query attention."""
    return kv_heads % tp == 0 if kv_heads >= tp else tp % kv_heads == 0


def parallel_problem(checkpoint: Checkpoint, tp: int, ep: int = 1) -> str | None:
    """Why tensor parallel `tp` with expert parallel `ep` (1: experts split by width instead) cannot hold the
    checkpoint, or None. The one split rule: the command's GPU advice and vLLM's start-up check both ask it."""
    if tp <= 1 and ep <= 1:
        return None
    heads, kv = checkpoint.attention_heads, checkpoint.kv_heads
    if heads % tp:
        return f"{heads} attention heads cannot be split over {tp} GPUs (tensor parallel {tp})"
    if not checkpoint.is_mla and not kv_heads_fit(kv, tp):  # MLA caches one latent per token, not per KV head
        return f"{kv} KV heads cannot be split or replicated evenly over {tp} GPUs"
    if ep > 1 and checkpoint.routed_experts % ep:
        return f"{checkpoint.routed_experts} routed experts cannot be split over {ep} GPUs (expert parallel)"
    layout = checkpoint.fp8
    for what, module, width in _split_matrices(checkpoint, tp, ep):
        if width % tp:
            return f"{what} {width} cannot be split over {tp} GPUs (tensor parallel {tp})"
        if layout and layout.block and layout.quantized(module) and (width // tp) % layout.block:
            return (f"{what} {width} / tp {tp} = {width // tp} is not a multiple of the FP8 block {layout.block} "
                    f"(the checkpoint's quantization_config declares {layout.block}x{layout.block} blocks)")
    return None


def split_problem(checkpoint: Checkpoint, gpus: int) -> str | None:
    """Why `gpus` GPUs (tensor parallel `gpus`, expert parallel from 8) cannot hold the checkpoint, or None."""
    return parallel_problem(checkpoint, gpus, gpus if gpus >= EXPERT_PARALLEL_FROM else 1)


def parallel_sizes(checkpoint: Checkpoint, gpus: int) -> tuple[int, int]:
    """(tensor parallel, expert parallel) for `gpus` GPUs, or a SplitError naming a GPU count that works.

    The advice never exceeds `gpus` (a smaller server on part of the machine, or one per group of GPUs)."""
    problem = split_problem(checkpoint, gpus)
    if problem is None:
        return (max(1, gpus), gpus if gpus >= EXPERT_PARALLEL_FROM else 1)
    fits = [n for n in range(gpus - 1, 0, -1) if split_problem(checkpoint, n) is None]
    best = next((n for n in fits if n & (n - 1) == 0), fits[0] if fits else 1)  # prefer 4 over 5 or 6 GPUs
    raise SplitError(f"{problem}; pass --gpus {best}" + (f" (and run one server per {best} GPUs)" if best > 1 else ""))
