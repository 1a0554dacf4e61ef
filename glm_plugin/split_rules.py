"""Which GPU counts a GLM checkpoint can be split over: attention heads, experts, and every FP8 matrix that tensor
parallelism cuts, read from the checkpoint's own config.json.

Why here and not in the engine: an impossible split fails minutes into loading with an engine traceback
("output_partition_size = 192 is not divisible by weight quantization block_n = 128"); from config.json the same
fact is known before anything starts, together with a GPU count that works. Standard library only.

FP8 layouts, as declared by `quantization_config`:
- block (`quant_method: fp8` with `weight_block_size`, or compressed-tensors with `strategy: block`): scales cover
  [N, N] tiles, so each rank's slice of a split dimension must be a whole number of tiles;
- per-channel or per-tensor (compressed-tensors `strategy: channel` / `tensor`, zai-org's GLM-4.5-FP8 and
  GLM-4.5-Air-FP8): a scale per output row or per matrix, which any split keeps whole: no constraint.
Modules the config leaves unquantized (`modules_to_not_convert`, `ignore`) are not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

EXPERT_PARALLEL_FROM = 8  # the deployment recipes add expert parallelism on 8 GPUs, not on 4
GPUS_PER_NODE = 8  # what one HGX/DGX node holds; more GPUs means several nodes


class SplitError(ValueError):
    """This GPU count cannot hold the checkpoint; the message says why."""


@dataclass(frozen=True)
class Fp8Layout:
    """The scale layout a checkpoint declares: `block` is N of [N, N] tiles, None for per-channel/per-tensor."""

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


def split_problem(checkpoint: Checkpoint, gpus: int) -> str | None:
    """Why `gpus` GPUs (tensor parallel `gpus`, expert parallel from 8) cannot hold the checkpoint, or None."""
    tp, ep = gpus, gpus if gpus >= EXPERT_PARALLEL_FROM else 1
    if tp <= 1:
        return None
    heads, kv = checkpoint.attention_heads, checkpoint.kv_heads
    if heads % tp:
        return f"{heads} attention heads cannot be split over {tp} GPUs (tensor parallel {tp})"
    if kv % tp and tp % kv:
        return f"{kv} KV heads cannot be split or replicated evenly over {tp} GPUs"
    if ep > 1 and checkpoint.routed_experts % ep:
        return f"{checkpoint.routed_experts} routed experts cannot be split over {ep} GPUs (expert parallel)"
    layout = checkpoint.fp8
    if layout is None or layout.block is None:
        return None
    for what, module, width in _split_matrices(checkpoint, tp, ep):
        if width and layout.quantized(module) and (width // tp) % layout.block:
            return (f"{what} {width} / tp {tp} = {width // tp} is not a multiple of the FP8 block {layout.block} "
                    f"(the checkpoint's quantization_config declares {layout.block}x{layout.block} blocks)")
    return None


def parallel_sizes(checkpoint: Checkpoint, gpus: int) -> tuple[int, int]:
    """(tensor parallel, expert parallel) for `gpus` GPUs, or a SplitError naming a GPU count that works.

    The advice never exceeds `gpus` (a smaller server on part of the machine, or one per group of GPUs)."""
    problem = split_problem(checkpoint, gpus)
    if problem is None:
        return (max(1, gpus), gpus if gpus >= EXPERT_PARALLEL_FROM else 1)
    fits = [n for n in range(gpus - 1, 0, -1) if split_problem(checkpoint, n) is None]
    best = next((n for n in fits if n & (n - 1) == 0), fits[0] if fits else 1)  # prefer 4 over 5 or 6 GPUs
    raise SplitError(f"{problem}; pass --gpus {best}" + (f" (and run one server per {best} GPUs)" if best > 1 else ""))
