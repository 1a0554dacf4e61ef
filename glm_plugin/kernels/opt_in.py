"""Whether the user asked for glm_plugin's kernels on an accelerator (`GLM_PLUGIN_GPU_KERNELS=1`).

Its own module so that the policy (whose kernel computes a layer) and the adapters read one rule without importing
each other. Opting in never makes an engine worker compile: the CUDA kernel is built ahead of time
(`python -m glm_plugin.kernels.build_cuda`) and only loaded there. Standard library only.
"""

from __future__ import annotations

import logging
from typing import Mapping

from glm_plugin import settings

ENV_OPT_IN = "GLM_PLUGIN_GPU_KERNELS"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

logger = logging.getLogger("glm_plugin.kernels")
_warned: set[str] = set()


def opted_in(environ: Mapping[str, str] | None = None) -> bool:
    """`GLM_PLUGIN_GPU_KERNELS=1`; an unreadable value is warned about once and counts as not opted in."""
    raw = settings.value(ENV_OPT_IN, environ)
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE and raw not in _warned:
        _warned.add(raw)
        logger.warning("%s=%r is not 1 or 0; the engines' FP8 kernels stay the default on accelerators "
                       "(set %s=1 to use glm_plugin's)", ENV_OPT_IN, raw, ENV_OPT_IN)
    return False
