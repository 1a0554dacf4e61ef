"""The device policy for GLM FP8 layers (glm_plugin/kernels/policy.py, the table in docs/kernels.md), and vLLM's real
quantization configs answering by it: on a CPU our methods, on a CUDA platform vLLM's own unless the user opted in,
and never a layer our compiled kernels cannot take.

The CUDA platform is simulated (vLLM's `current_platform` replaced by a `Platform` whose enum and device type say
CUDA); the quantization configs, layers and vLLM's FP8 methods they return are vLLM's real classes, built under a
real `VllmConfig` for the bundled GLM checkpoint. The SGLang side is in test_sglang_model.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from glm_plugin.command.cpu_server import bundled_model_dir
from glm_plugin.kernels import policy

pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step

ROOT = Path(__file__).resolve().parents[2]
ASSET = bundled_model_dir()  # the installed package's copy (scripts/ci_wheel_check.sh runs these on the wheel)

# engine, device, layer, layout, opted in -> owner. Written out, not derived: this is docs/kernels.md's table.
OURS, ENGINE = policy.OURS, policy.ENGINE
TABLE = [
    *[("vllm", "cpu", layer, layout, opt, OURS)
      for layer in ("linear", "experts") for layout in ("block", "channel") for opt in (False, True)],
    *[("sglang", "cpu", "experts", layout, opt, OURS) for layout in ("block", "channel") for opt in (False, True)],
    *[("sglang", device, "linear", layout, opt, ENGINE)
      for device in ("cpu", "cuda") for layout in ("block", "channel") for opt in (False, True)],
    *[(engine, device, layer, layout, False, ENGINE)
      for engine, layer in (("vllm", "linear"), ("vllm", "experts"), ("sglang", "experts"))
      for device in ("cuda", "rocm", "xpu", "unknown") for layout in ("block", "channel")],
    ("vllm", "cuda", "linear", "block", True, ENGINE),  # no fp8_linear of ours on a GPU: never the reference
    ("vllm", "cuda", "linear", "channel", True, ENGINE),
    *[(engine, "cuda", "experts", layout, True, OURS) for engine in ("vllm", "sglang") for layout in ("block", "channel")],
    *[(engine, "rocm", "experts", layout, True, ENGINE) for engine in ("vllm", "sglang") for layout in ("block", "channel")],
]


@pytest.mark.parametrize(("engine", "device", "layer", "layout", "opted_in", "owner"), TABLE)
def test_policy_table(engine, device, layer, layout, opted_in, owner):
    decision = policy.decide(engine, device, layer, layout, opted_in)
    assert decision.owner == owner, decision
    if owner == OURS and device != "cpu":
        # Opted in on a GPU: the kernels that may take it, compiled ones only (dispatch order), never "reference".
        assert decision.kernels == ("cuda", "triton")  # the CUDA kernel takes both scale layouts
    if owner == ENGINE and device != "cpu" and not opted_in and layer == "experts":
        assert policy.ENV_OPT_IN in decision.reason  # the default says how to opt in


def test_unknown_names_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown layout 'tensor'; expected one of block, channel"):
        policy.decide("vllm", "cpu", "experts", "tensor", False)
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        policy.decide("tgi", "cpu", "experts", "block", False)


def test_opt_in_values(caplog):
    assert policy.opted_in({policy.ENV_OPT_IN: "1"}) and policy.opted_in({policy.ENV_OPT_IN: " Yes "})
    assert not policy.opted_in({}) and not policy.opted_in({policy.ENV_OPT_IN: "0"})
    with caplog.at_level("WARNING", logger="glm_plugin.kernels"):
        assert not policy.opted_in({policy.ENV_OPT_IN: "cuda-please"})
        assert not policy.opted_in({policy.ENV_OPT_IN: "cuda-please"})
    assert [r.getMessage().count("'cuda-please' is not 1 or 0") for r in caplog.records] == [1]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_opted_in_without_a_compiled_kernel_stays_the_engines(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: our kernels may well run here")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(policy, "_resolved", {})
    decision = policy.resolve("vllm", "cuda", "experts", "block", {policy.ENV_OPT_IN: "1"})
    assert decision.owner == ENGINE
    assert "no compiled kernel of ours runs here: cuda: " in decision.reason and "; triton: " in decision.reason


# ---------------------------------------------------------------------------------------------------------------
# vLLM's real quantization configs, by platform.
# ---------------------------------------------------------------------------------------------------------------
def _quantization_config(layout: str) -> dict:
    spec = importlib.util.spec_from_file_location("quantize_fp8", ROOT / "scripts" / "quantize_fp8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.quantization_config(layout, [])


@pytest.fixture(scope="module")
def vllm_glm():
    """vLLM's config for the bundled GLM checkpoint (what `building_glm` reads) and one layer of each kind."""
    pytest.importorskip("vllm")
    import torch
    from vllm.config import ModelConfig, VllmConfig
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation
    from vllm.model_executor.layers.fused_moe.config import (
        FusedMoEConfig,
        FusedMoEParallelConfig,
        RoutingMethodType,
    )
    from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts
    from vllm.model_executor.layers.linear import ReplicatedLinear

    with pytest.MonkeyPatch.context() as patch:
        # vLLM 0.34's CPU platform refuses a config on x86 unless Triton has its CPU backend (triton-cpu, which
        # vLLM's CPU builds ship); the GPU wheel on a machine without a GPU has Triton with no active driver. The
        # platform reads the flag once, here; nothing this module checks runs Triton.
        import vllm.triton_utils

        patch.setattr(vllm.triton_utils, "HAS_TRITON", True)
        config = VllmConfig(model_config=ModelConfig(model=str(ASSET), dtype="bfloat16"))
    # The layers as vLLM's model code hands them to get_quant_method: before their weights exist (their own
    # constructors need a distributed runtime, and ask the quant config first).
    linear = ReplicatedLinear.__new__(ReplicatedLinear)
    experts = RoutedExperts.__new__(RoutedExperts)
    torch.nn.Module.__init__(experts)
    experts.ckpt_gate_proj_name, experts.ckpt_up_proj_name, experts.ckpt_down_proj_name = "gate_proj", "up_proj", "down_proj"
    experts.moe_config = FusedMoEConfig(
        num_experts=8, experts_per_token=2, hidden_dim=256, intermediate_size=128, num_local_experts=8,
        num_logical_experts=8, activation=MoEActivation.SILU, device="cpu", routing_method=RoutingMethodType.DeepSeekV3,
        moe_parallel_config=FusedMoEParallelConfig.make_no_parallel(), in_dtype=torch.bfloat16)
    return config, {"linear": linear, "experts": experts}


def _simulated_cuda():
    from vllm.platforms.interface import Platform, PlatformEnum

    class SimulatedCuda(Platform):
        _enum = PlatformEnum.CUDA
        device_name = device_type = "cuda"
        dispatch_key = "CUDA"

    return SimulatedCuda()


# What vLLM's own configs return for GLM's FP8 layers, per layout and layer kind (vLLM's class names).
VLLMS = {("block", "linear"): "Fp8LinearMethod", ("block", "experts"): "Fp8MoEMethod",
         ("channel", "linear"): "CompressedTensorsLinearMethod",
         ("channel", "experts"): "CompressedTensorsW8A8Fp8MoEMethod"}
GLMS = {("block", "linear"): "GlmFp8LinearMethod", ("block", "experts"): "GlmFp8BlockMoEMethod",
        ("channel", "linear"): "GlmFp8LinearMethod", ("channel", "experts"): "GlmFp8ChannelMoEMethod"}


def _methods(vllm_glm, layout: str) -> dict[str, str]:
    from vllm.config import set_current_vllm_config

    from glm_plugin.engines.vllm import fp8

    config, layers = vllm_glm
    cls = fp8.GlmFp8Config if layout == "block" else fp8.GlmCompressedTensorsConfig
    quant_config = cls.from_config(_quantization_config(layout))
    with set_current_vllm_config(config):
        return {kind: type(quant_config.get_quant_method(layer, f"model.layers.1.mlp.{kind}")).__name__
                for kind, layer in layers.items()}


@pytest.fixture
def fresh_policy(monkeypatch):
    monkeypatch.setattr(policy, "_resolved", {})
    monkeypatch.delenv(policy.ENV_OPT_IN, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return monkeypatch


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_vllm_cpu_glm_layers_are_ours(vllm_glm, fresh_policy, layout):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip(f"vLLM's platform here is {type(current_platform).__name__} (the GPU wheel needs "
                    "VLLM_TARGET_DEVICE=cpu to pick its CPU platform)")
    assert _methods(vllm_glm, layout) == {kind: GLMS[layout, kind] for kind in ("linear", "experts")}


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_vllm_cuda_keeps_vllms_methods_by_default(vllm_glm, fresh_policy, caplog, layout):
    import vllm.platforms

    fresh_policy.setattr(vllm.platforms, "_current_platform", _simulated_cuda())
    with caplog.at_level("INFO", logger="vllm.glm_plugin"):
        assert _methods(vllm_glm, layout) == {kind: VLLMS[layout, kind] for kind in ("linear", "experts")}
    said = [r.getMessage() for r in caplog.records if f"GLM {layout}-FP8" in r.getMessage()]
    assert any("experts on cuda keep vLLM's FP8 method" in m and policy.ENV_OPT_IN in m for m in said), said


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_vllm_cuda_opted_in_takes_experts_our_compiled_kernels_run(vllm_glm, fresh_policy, layout):
    """Opted in, the experts are ours where a compiled kernel of ours runs (Triton, here through its interpreter,
    standing in for the GPU); dense linears stay vLLM's (no GPU fp8_linear of ours: never the reference)."""
    import vllm.platforms

    pytest.importorskip("triton")
    fresh_policy.setattr(vllm.platforms, "_current_platform", _simulated_cuda())
    fresh_policy.setenv(policy.ENV_OPT_IN, "1")
    fresh_policy.setenv("TRITON_INTERPRET", "1")
    assert _methods(vllm_glm, layout) == {"linear": VLLMS[layout, "linear"], "experts": GLMS[layout, "experts"]}


def test_vllm_cuda_opted_in_without_a_compiled_kernel_keeps_vllms(vllm_glm, fresh_policy):
    import torch
    import vllm.platforms

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    fresh_policy.setattr(vllm.platforms, "_current_platform", _simulated_cuda())
    fresh_policy.setenv(policy.ENV_OPT_IN, "1")
    assert _methods(vllm_glm, "block") == {kind: VLLMS["block", kind] for kind in ("linear", "experts")}


# ---------------------------------------------------------------------------------------------------------------
# Opted in on a (simulated) GPU: a prebuilt CUDA kernel is loaded, never compiled in the worker; a layer shape it
# refuses, or no prebuilt kernel at all, keeps vLLM's method, said once.
# ---------------------------------------------------------------------------------------------------------------
def _experts_under_tp(intermediate: int, tp: int):
    """vLLM's experts layer (as the fixture's) of GLM's intermediate size split over `tp` ranks."""
    import dataclasses

    import torch
    from vllm.model_executor.layers.fused_moe.activation import MoEActivation
    from vllm.model_executor.layers.fused_moe.config import (
        FusedMoEConfig,
        FusedMoEParallelConfig,
        RoutingMethodType,
    )
    from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts

    experts = RoutedExperts.__new__(RoutedExperts)
    torch.nn.Module.__init__(experts)
    experts.ckpt_gate_proj_name, experts.ckpt_up_proj_name = "gate_proj", "up_proj"
    experts.ckpt_down_proj_name = "down_proj"
    parallel = dataclasses.replace(FusedMoEParallelConfig.make_no_parallel(), tp_size=tp)
    experts.moe_config = FusedMoEConfig(
        num_experts=8, experts_per_token=2, hidden_dim=256, intermediate_size=intermediate, num_local_experts=8,
        num_logical_experts=8, activation=MoEActivation.SILU, device="cpu", routing_method=RoutingMethodType.DeepSeekV3,
        moe_parallel_config=parallel, in_dtype=torch.bfloat16)
    return experts


@pytest.fixture
def cuda_kernel_loads(fresh_policy):
    """Opted in on a simulated CUDA platform whose prebuilt CUDA kernel loads (dispatch's load check answers yes);
    Triton not runnable (no interpreter), so the CUDA kernel is the one the dispatcher would pick."""
    import vllm.platforms

    from glm_plugin.kernels import dispatch

    fresh_policy.setattr(vllm.platforms, "_current_platform", _simulated_cuda())
    fresh_policy.setenv(policy.ENV_OPT_IN, "1")
    fresh_policy.setitem(dispatch._LOADS, "cuda", lambda op: None)
    return fresh_policy


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_vllm_opted_in_shape_the_cuda_kernel_refuses_keeps_vllms_said_once(vllm_glm, cuda_kernel_loads, caplog,
                                                                            layout):
    """GLM-4.5-Air's 1408 over tp 2 is 704 per rank: not a multiple of 128, which the CUDA kernel refuses; over tp 1
    (1408 = 11 x 128) it takes the layer."""
    from vllm.config import set_current_vllm_config

    from glm_plugin.engines.vllm import fp8

    config, _ = vllm_glm
    cls = fp8.GlmFp8Config if layout == "block" else fp8.GlmCompressedTensorsConfig
    quant_config = cls.from_config(_quantization_config(layout))

    def method(intermediate, tp):
        with set_current_vllm_config(config):
            layer = _experts_under_tp(intermediate, tp)
            return type(quant_config.get_quant_method(layer, "model.layers.1.mlp.experts")).__name__

    with caplog.at_level("INFO", logger="vllm.glm_plugin"):
        assert method(1408, 2) == VLLMS[layout, "experts"]
        assert method(1408, 2) == VLLMS[layout, "experts"]  # every layer of the model asks; said once
        assert method(1408, 1) == GLMS[layout, "experts"]
    said = [r.getMessage() for r in caplog.records if "refuses" in r.getMessage()]
    assert len(said) == 1, said
    assert f"GLM {layout}-FP8 experts on cuda keep vLLM's FP8 method" in said[0]
    assert "cuda kernel refuses this layer" in said[0] and "got 256 and 704" in said[0]


def test_vllm_opted_in_without_a_prebuilt_cuda_kernel_compiles_nothing_and_keeps_vllms(vllm_glm, fresh_policy,
                                                                                       caplog, tmp_path):
    """The worker's side of "built ahead of time": a GPU (simulated) with every compile tool, no prebuilt library.
    vLLM's method stays, said once with the command that builds the kernel, and no compiler is started."""
    import vllm.platforms

    from glm_plugin.kernels import build_cuda, jit_cache

    compiled = []
    fresh_policy.setattr(vllm.platforms, "_current_platform", _simulated_cuda())
    fresh_policy.setenv(policy.ENV_OPT_IN, "1")
    fresh_policy.setattr(build_cuda, "_missing_gpu", lambda: None)
    fresh_policy.setattr(build_cuda, "missing_compile_tools", lambda: None)
    fresh_policy.setattr(build_cuda, "extension_dir", lambda: tmp_path)
    fresh_policy.setattr(build_cuda, "_build", lambda verbose: compiled.append(verbose))
    fresh_policy.setattr(build_cuda, "_load", jit_cache.LoadOnce("CUDA kernels"))
    with caplog.at_level("INFO", logger="vllm.glm_plugin"):
        assert _methods(vllm_glm, "block")["experts"] == VLLMS["block", "experts"]
        fresh_policy.setattr(policy, "_resolved", {})  # a second layer kind asks again: still said once
        assert _methods(vllm_glm, "block")["experts"] == VLLMS["block", "experts"]
    assert compiled == []
    said = [r.getMessage() for r in caplog.records if "experts on cuda keep" in r.getMessage()]
    assert len(said) == 1, said
    assert f"not built ahead of time in {tmp_path}" in said[0] and build_cuda.BUILD_COMMAND in said[0]
