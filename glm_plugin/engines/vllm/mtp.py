"""GLM's MTP (NextN) drafts for vLLM's `method: mtp`: vLLM's own classes, loading robustly from the target checkpoint.

GLM checkpoints carry their MTP layer as `model.layers.{num_hidden_layers}.*` (`enorm`, `hnorm`, `eh_proj`,
`shared_head.norm`, `shared_head.head`, `embed_tokens`, plus one MoE decoder layer). Some omit the layer's own
`embed_tokens` / `shared_head.head` (vllm-project/vllm#25993). vLLM 0.32's proposer replaces the draft's embedding
and head by the target's after loading when there is no pipeline parallelism, so there a missing tensor is
harmless; with pipeline stages the draft keeps what it loaded, and vLLM's GLM-4.5 class fills the head from the
target's `lm_head.weight` even when the layer has its own (the shard order decides which copy wins) while its
GLM-4.7-Flash class never looks at the target's tensors. Here, for both: the layer's own tensors win, the target's
fill only what the layer lacks, and a checkpoint with neither is refused by name. A checkpoint without any MTP layer
is refused at config time (engines/vllm/patches.py, before vLLM's ZeroDivisionError) and again here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from vllm.logger import init_logger
from vllm.model_executor.models import glm4_moe_lite_mtp as _vllm_lite_mtp
from vllm.model_executor.models import glm4_moe_mtp as _vllm_mtp

from glm_plugin.checkpoint import NEXTN_TIED, check_has_nextn_layer
from glm_plugin.engines.vllm.names import MTP_FLAG

logger = init_logger("vllm.glm_plugin.mtp")

# The parameter vLLM's loader reports once each tied MTP-layer tensor is loaded: both vLLM classes load the layer's
# `embed_tokens` into the shared `model.embed_tokens`, its `shared_head.head` under its own name.
_VLLM_PARAM = {"embed_tokens": "model.embed_tokens.weight",
               "shared_head.head": "model.layers.{idx}.shared_head.head.weight"}
# Target tensors that stand in for a missing MTP-layer tensor (checkpoint.NEXTN_TIED): target name -> (the layer's
# own checkpoint name, the parameter name above).
_TARGET_FALLBACKS = {target: (f"model.layers.{{idx}}.{module}.weight", _VLLM_PARAM[module])
                     for module, target in NEXTN_TIED.items()}


def check_has_mtp_layer(config) -> None:
    check_has_nextn_layer(config, engine_flag=MTP_FLAG)


class _RobustMtpLoading:
    """What both GLM MTP drafts add to vLLM's: the no-MTP-layer refusal and the target fallback in loading."""

    model: torch.nn.Module

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
        for target_name, (layer_name, param_name) in _TARGET_FALLBACKS.items():
            for idx in range(first, first + self.model.num_mtp_layers):
                if param_name.format(idx=idx) in loaded:
                    continue
                if target_name not in held:
                    raise ValueError(
                        f"MTP layer {idx}: the checkpoint has neither {layer_name.format(idx=idx)} nor the target's "
                        f"{target_name} to take it from; the checkpoint is incomplete (re-download it, or serve "
                        "without MTP).")
                logger.info("glm_plugin: MTP layer %d has no %s; using the target's %s", idx,
                            layer_name.format(idx=idx), target_name)
                # Handed to vLLM's loader under the layer's own name, so each class maps it as it maps its own.
                loaded |= super().load_weights([(layer_name.format(idx=idx), held[target_name])])
        return loaded


class Glm4MoeMTP(_RobustMtpLoading, _vllm_mtp.Glm4MoeMTP):
    """GLM-4.5/4.6/4.7's MTP draft: vLLM's class; only construction checks and weight loading differ."""


class Glm4MoeLiteMTP(_RobustMtpLoading, _vllm_lite_mtp.Glm4MoeLiteMTP):
    """GLM-4.7-Flash's MTP draft (MLA): vLLM's class; only construction checks and weight loading differ."""
