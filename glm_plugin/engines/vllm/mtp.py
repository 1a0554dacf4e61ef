"""GLM's MTP (NextN) draft for vLLM's `method: mtp`: vLLM's `Glm4MoeMTP`, loading robustly from the target checkpoint.

GLM checkpoints carry their MTP layer as `model.layers.{num_hidden_layers}.*` (`enorm`, `hnorm`, `eh_proj`,
`shared_head.norm`, `shared_head.head`, `embed_tokens`, plus one MoE decoder layer). Some omit the layer's own
`embed_tokens` / `shared_head.head` (vllm-project/vllm#25993). vLLM 0.32 then fills the head from the target's
`lm_head.weight`, but it also does so when the layer has its own head, and which copy wins depends on the order of
the checkpoint's shards. Here the layer's own tensors always win, the target's are used only where the layer has
none, and a checkpoint without an MTP layer is refused with a message instead of a KeyError or random weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from vllm.logger import init_logger
from vllm.model_executor.models import glm4_moe_mtp as _vllm_mtp

from glm_plugin.engines.checkpoint_names import check_has_nextn_layer

logger = init_logger("vllm.glm_plugin.mtp")

# Target-model tensors that can stand in for a missing MTP-layer tensor, and the MTP parameter each fills.
_TARGET_FALLBACKS = {
    "lm_head.weight": "model.layers.{idx}.shared_head.head.weight",
    "model.embed_tokens.weight": "model.embed_tokens.weight",
}


def check_has_mtp_layer(config) -> None:
    check_has_nextn_layer(config, engine_flag="--speculative-config '{\"method\": \"mtp\"}'")


class Glm4MoeMTP(_vllm_mtp.Glm4MoeMTP):
    """vLLM's GLM MTP draft; only construction checks and weight loading differ."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        check_has_mtp_layer(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        logger.info("glm_plugin: MTP draft %s built by glm_plugin", type(self).__name__)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        held: dict[str, torch.Tensor] = {}

        def mtp_layer_weights():
            for name, tensor in weights:
                if name in _TARGET_FALLBACKS:
                    held[name] = tensor  # used below only if the MTP layer has no tensor of its own
                    continue
                yield name, tensor

        loaded = super().load_weights(mtp_layer_weights())
        first = self.model.mtp_start_layer_idx
        for target_name, pattern in _TARGET_FALLBACKS.items():
            for idx in range(first, first + self.model.num_mtp_layers):
                wanted = pattern.format(idx=idx)
                if wanted in loaded:
                    continue
                if target_name not in held:
                    raise ValueError(
                        f"MTP layer {idx}: the checkpoint has neither {wanted} nor the target's {target_name} to "
                        "take it from; the checkpoint is incomplete (re-download it, or serve without MTP).")
                logger.info("glm_plugin: MTP layer %d has no %s; using the target's %s", idx, wanted, target_name)
                # vLLM's loader maps the target's name onto the MTP parameter (lm_head -> shared_head.head).
                loaded |= super().load_weights([(target_name, held[target_name])])
        return loaded
