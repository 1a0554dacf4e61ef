"""Whose kernel computes a GLM FP8 layer: the engine's or glm_plugin's. One rule for both engines.

Why a policy at all: our FP8 ops were built and measured on CPUs, where neither engine has a GLM FP8 path. On an
accelerator the engines have tuned FP8 GEMMs and MoE runners (CUTLASS, DeepGEMM, Triton, aiter) and ours have not
been measured, so there the engine's stay the default until the user opts in by name. Even then a layer goes to
us only when a compiled kernel of ours takes it: never the PyTorch reference on an accelerator.

Pure and standard library only: the adapters pass in what they read from the engine (device, layer kind, layout)
and the environment; which compiled kernels exist is dispatch.KERNELS; the table in docs/kernels.md is this
function written out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .dispatch import LAYOUTS, compiled_kernels, shape_refusal, why_unavailable
from .opt_in import ENV_OPT_IN, opted_in  # noqa: F401 (the adapters read both here)

ENGINES = {"vllm": "vLLM", "sglang": "SGLang"}  # name -> how the log writes it
LAYERS = ("linear", "experts")
OURS, ENGINE = "glm_plugin", "engine"
_OPS = {"linear": "fp8_linear", "experts": "fp8_moe_experts"}


@dataclass(frozen=True)
class Decision:
    owner: str  # OURS or ENGINE
    reason: str
    kernels: tuple[str, ...] = ()  # ours on an accelerator: the compiled kernels that may take the layer

    @property
    def ours(self) -> bool:
        return self.owner == OURS


def decide(engine: str, device: str, layer: str, layout: str, opted_in: bool) -> Decision:
    """Who computes a GLM FP8 `layer` ("linear" / "experts") with `layout` scales on `device` ("cpu", "cuda",
    "rocm", or an engine's other device name) in `engine`, with or without the user's opt-in."""
    for name, value, allowed in (("engine", engine, ENGINES), ("layer", layer, LAYERS), ("layout", layout, LAYOUTS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
    if engine == "sglang" and layer == "linear":
        return Decision(ENGINE, "glm_plugin replaces only SGLang's routed-expert compute")
    if device == "cpu":
        return Decision(OURS, f"{ENGINES[engine]} has no GLM {layout}-FP8 {layer} path on CPU")
    if not opted_in:
        return Decision(ENGINE, f"on {device} the engine's tuned FP8 kernels are the default "
                                f"({ENV_OPT_IN}=1 tries glm_plugin's)")
    kernels = compiled_kernels(_OPS[layer], device, layout)  # dispatch.KERNELS: nothing for ROCm, XPU, TPU
    if not kernels:
        return Decision(ENGINE, f"glm_plugin has no compiled {layout}-FP8 {layer} kernel for {device}")
    return Decision(OURS, f"opted in by {ENV_OPT_IN}", kernels)


_resolved: dict[tuple, Decision] = {}


def resolve(engine: str, device: str, layer: str, layout: str, environ: Mapping[str, str] | None = None,
            shape: tuple[int, int] | None = None) -> Decision:
    """`decide` with this process's opt-in, and on an accelerator the checks that one of our compiled kernels
    actually runs there (a prebuilt CUDA library is loaded, never compiled here) and that the one the dispatcher
    would pick takes the layer's `shape`, (hidden, per-rank intermediate) where the adapter knows it; if not, the
    layer stays the engine's, never the reference. Cached per process: adapters may ask on every forward."""
    key = (engine, device, layer, layout, opted_in(environ), shape)
    if key not in _resolved:
        decision = decide(*key[:5])
        if decision.ours and decision.kernels:
            missing = {impl: why_unavailable(impl, _OPS[layer], device, layout) for impl in decision.kernels}
            runs = [impl for impl, why in missing.items() if why is None]
            refused = shape_refusal(runs[0], _OPS[layer], *shape) if runs and shape else None
            if not runs:
                decision = Decision(ENGINE, f"opted in by {ENV_OPT_IN}, but no compiled kernel of ours runs here: "
                                            + "; ".join(f"{impl}: {why}" for impl, why in missing.items()))
            elif refused:
                decision = Decision(ENGINE, f"opted in by {ENV_OPT_IN}, but glm_plugin's {runs[0]} kernel refuses "
                                            f"this layer: {refused}")
        _resolved[key] = decision
    return _resolved[key]
