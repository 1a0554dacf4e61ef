"""The plugin's GLM model classes for vLLM: registered over vLLM's names, lazily, switchable, and their early checks.

Registration is probed in a fresh interpreter per setting, the way every vLLM process starts: load the general
plugins, import vLLM's model registry, then ask the registry what each architecture name resolves to. The checks
(`check_*`, `default_aux_layers`) are plain functions, tested here on configs shaped like GLM-4.5/4.7 and the
bundled tiny checkpoint; the served behaviour is in tests/e2e/test_vllm_speculative.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from drivers import requires_engine

requires_engine("vllm")
pytestmark = pytest.mark.no_model  # runs no model: also CI's vLLM GPU-wheel step

NAMES = ("Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM", "Glm4MoeMTPModel", "Glm4MoeLiteMTPModel")

PROBE = textwrap.dedent(
    """
    import json, sys
    import vllm.plugins
    vllm.plugins.load_general_plugins()
    from vllm.model_executor.models.registry import ModelRegistry
    from vllm.model_executor.models.interfaces import supports_eagle3
    ours = ("glm_plugin.engines.vllm.model", "glm_plugin.engines.vllm.mtp")
    lazy_before_use = not any(name in sys.modules for name in ours)
    out = {"lazy_before_use": lazy_before_use, "names": {}}
    for name in %r:
        cls = ModelRegistry._try_load_model_cls(name)
        out["names"][name] = {"cls": f"{cls.__module__}:{cls.__qualname__}", "eagle3": bool(supports_eagle3(cls))}
    print("RESULT " + json.dumps(out))
    """
) % (NAMES,)


def probe(disable: str | None) -> dict:
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1")
    env.pop("GLM_PLUGIN_DISABLE", None)
    if disable is not None:
        env["GLM_PLUGIN_DISABLE"] = disable
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_registry_resolves_glm_names_to_our_classes():
    res = probe(None)
    assert res["lazy_before_use"], "plugin load must not import the model modules (they are lazy strings)"
    names = res["names"]
    assert names["Glm4MoeForCausalLM"]["cls"] == "glm_plugin.engines.vllm.model:Glm4MoeForCausalLM"
    assert names["Glm4MoeLiteForCausalLM"]["cls"] == "glm_plugin.engines.vllm.model:Glm4MoeLiteForCausalLM"
    assert names["Glm4MoeMTPModel"]["cls"] == "glm_plugin.engines.vllm.mtp:Glm4MoeMTP"
    assert names["Glm4MoeLiteMTPModel"]["cls"] == "glm_plugin.engines.vllm.mtp:Glm4MoeLiteMTP"
    assert names["Glm4MoeForCausalLM"]["eagle3"] and names["Glm4MoeLiteForCausalLM"]["eagle3"]


@pytest.mark.parametrize("disable", ["model", "all"])
def test_disable_model_keeps_vllms_classes(disable):
    names = probe(disable)["names"]
    assert names["Glm4MoeForCausalLM"]["cls"] == "vllm.model_executor.models.glm4_moe:Glm4MoeForCausalLM"
    assert names["Glm4MoeLiteForCausalLM"]["cls"] == \
        "vllm.model_executor.models.glm4_moe_lite:Glm4MoeLiteForCausalLM"
    assert names["Glm4MoeMTPModel"]["cls"] == "vllm.model_executor.models.glm4_moe_mtp:Glm4MoeMTP"
    assert names["Glm4MoeLiteMTPModel"]["cls"] == "vllm.model_executor.models.glm4_moe_lite_mtp:Glm4MoeLiteMTP"
    # what the plugin adds: vLLM's own GLM classes cannot be EAGLE-3 targets
    assert not names["Glm4MoeForCausalLM"]["eagle3"]


def test_registering_twice_changes_nothing():
    import vllm.plugins
    from vllm.model_executor.models.registry import ModelRegistry

    from glm_plugin.engines import vllm as plugin

    vllm.plugins.load_general_plugins()
    before = {name: ModelRegistry.models[name] for name in NAMES}
    plugin.register()
    plugin.register()
    assert {name: ModelRegistry.models[name] for name in NAMES} == before


def test_mtp_config_override_refuses_a_glm_target_without_mtp_layer_before_vllms_zero_division():
    """The draft-config hook: vLLM's own conversion, then our refusal; every other config passes untouched."""
    import vllm.plugins
    from transformers import Glm4MoeConfig, Glm4MoeLiteConfig, LlamaConfig
    from vllm.config.speculative import SpeculativeConfig

    from glm_plugin.engines import vllm as plugin
    from glm_plugin.engines.vllm import patches

    vllm.plugins.load_general_plugins()
    plugin.register()
    assert SpeculativeConfig.hf_config_override is patches.mtp_hf_config_override

    kinds = {"Glm4MoeForCausalLM": Glm4MoeConfig, "Glm4MoeLiteForCausalLM": Glm4MoeLiteConfig,
             "LlamaForCausalLMEagle3": LlamaConfig}

    def config(arch, **over):
        return kinds[arch](architectures=[arch], num_hidden_layers=4, **over)

    for arch, draft in [("Glm4MoeForCausalLM", "Glm4MoeMTPModel"), ("Glm4MoeLiteForCausalLM", "Glm4MoeLiteMTPModel")]:
        assert SpeculativeConfig.hf_config_override(config(arch, num_nextn_predict_layers=1)).architectures == [draft]
        with pytest.raises(ValueError, match=f"{arch} has num_nextn_predict_layers = 0.*method.*mtp"):
            SpeculativeConfig.hf_config_override(config(arch, num_nextn_predict_layers=0))
    eagle = config("LlamaForCausalLMEagle3")
    assert SpeculativeConfig.hf_config_override(eagle).architectures == ["LlamaForCausalLMEagle3"]


# ---------------------------------------------------------------------------------------------------------------
# Early checks, on configs shaped like the real checkpoints (docs: /reference/glm-model.md facts, restated here).
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_mod():
    from glm_plugin.engines.vllm import model

    return model


def glm_config(**over):
    base = dict(architectures=["Glm4MoeForCausalLM"], num_attention_heads=96, num_key_value_heads=8,
                n_routed_experts=160, moe_intermediate_size=1536, hidden_size=5120, head_dim=128, num_hidden_layers=92,
                num_nextn_predict_layers=1)
    base.update(over)
    return SimpleNamespace(**base)


def parallel(tp, ep=False, dp=1):
    return SimpleNamespace(tensor_parallel_size=tp, enable_expert_parallel=ep, data_parallel_size=dp)


@pytest.mark.parametrize("layers, expected", [(92, (2, 46, 89)), (47, (2, 23, 44)), (46, (2, 23, 43)),
                                              (4, (1, 2, 3)), (5, (1, 2, 4)), (3, (1, 2, 3)), (2, (1, 2))])
def test_default_aux_layers_are_distinct_and_in_range(model_mod, layers, expected):
    got = model_mod.default_aux_layers(layers)
    assert got == expected
    assert len(set(got)) == len(got) and all(0 <= i <= layers for i in got)


def test_default_aux_layers_match_the_training_script(model_mod):
    import train_eagle3
    for layers in range(1, 100):
        assert tuple(train_eagle3.default_aux_layers(layers)) == model_mod.default_aux_layers(layers)


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_parallel_sizes_that_divide_are_accepted(model_mod, tp):
    model_mod.check_parallel_sizes(glm_config(), parallel(tp))


def test_tp_not_dividing_heads_names_the_fix(model_mod):
    with pytest.raises(ValueError) as info:
        model_mod.check_parallel_sizes(glm_config(num_attention_heads=4, num_key_value_heads=2,
                                                  moe_intermediate_size=128), parallel(3))
    text = str(info.value)
    assert "4 attention heads cannot be split over 3 GPUs (tensor parallel 3)" in text
    assert "--tensor-parallel-size in [1, 2, 4], or --enable-expert-parallel" in text


def test_tp_not_dividing_expert_width_or_expert_count(model_mod):
    cfg = glm_config(num_attention_heads=96, moe_intermediate_size=1400)
    with pytest.raises(ValueError, match=r"moe_intermediate_size 1400 cannot be split over 16 GPUs"):
        model_mod.check_parallel_sizes(cfg, parallel(16))
    with pytest.raises(ValueError, match=r"160 routed experts cannot be split over 3 GPUs \(expert parallel\)"):
        model_mod.check_parallel_sizes(glm_config(num_attention_heads=3, num_key_value_heads=3), parallel(3, ep=True))


def test_expert_parallel_spans_data_parallel_ranks(model_mod):
    model_mod.check_parallel_sizes(glm_config(), parallel(4, ep=True, dp=2))  # 160 experts over 8 ranks
    with pytest.raises(ValueError, match="160 routed experts cannot be split over 12 GPUs"):
        model_mod.check_parallel_sizes(glm_config(), parallel(4, ep=True, dp=3))


def test_the_advice_heeds_kv_heads_and_fp8_blocks(model_mod):
    """GLM-4.5's shape in FP8 at TP 16: its 1,536-wide experts cut into 96, not a multiple of the 128 block. The
    advice is the command's split rule: not 8 either (192-wide slices: vLLM's "output_partition_size = 192"), nor 12
    (8 KV heads cannot be spread over 12 ranks); expert parallelism is the way to more GPUs."""
    fp8 = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    with pytest.raises(ValueError) as info:
        model_mod.check_parallel_sizes(glm_config(quantization_config=fp8), parallel(16))
    text = str(info.value)
    assert "moe_intermediate_size 1536 / tp 16 = 96 is not a multiple of the FP8 block 128" in text
    assert "--tensor-parallel-size in [1, 2, 4], or --enable-expert-parallel" in text
    model_mod.check_parallel_sizes(glm_config(quantization_config=fp8), parallel(8, ep=True))


def eagle3_vllm_config(draft_hidden, layers=None, method="eagle3"):
    draft = SimpleNamespace(hidden_size=draft_hidden, eagle_config={"eagle_aux_hidden_state_layer_ids": layers})
    spec = SimpleNamespace(method=method, draft_model_config=SimpleNamespace(hf_config=draft, model="/heads/x"))
    return SimpleNamespace(speculative_config=spec)


def test_eagle3_head_with_wrong_hidden_size_is_refused(model_mod):
    with pytest.raises(ValueError) as info:
        model_mod.check_eagle3_draft(glm_config(hidden_size=256), eagle3_vllm_config(4096))
    assert "hidden size 4096" in str(info.value) and "hidden_size 256" in str(info.value)
    assert "scripts/train_eagle3.py" in str(info.value)


def test_eagle3_head_reading_missing_layers_is_refused(model_mod):
    # SpecForge's ids 1, 45, 88 (GLM-4.7) are the residual after 2, 46 and 89 layers
    with pytest.raises(ValueError, match=r"after \[2, 46, 89\] decoder layers.*4 layers"):
        model_mod.check_eagle3_draft(glm_config(hidden_size=256, num_hidden_layers=4),
                                     eagle3_vllm_config(256, [1, 45, 88]))
    with pytest.raises(ValueError, match=r"after \[2, 3, 5\]"):  # the output of layer 4 of a 4-layer model
        model_mod.check_eagle3_draft(glm_config(hidden_size=256, num_hidden_layers=4),
                                     eagle3_vllm_config(256, [1, 2, 4]))


def test_head_layers_are_read_in_the_convention_of_where_they_sit(model_mod):
    """`eagle_config` ids are SpecForge's and SGLang's (output of layer i: vLLM's capture index i + 1); top-level
    ids are vLLM's speculators format (already the capture index); a head that names none gets the defaults."""
    nested = SimpleNamespace(eagle_config={"eagle_aux_hidden_state_layer_ids": [0, 1, 2]})
    assert model_mod.head_aux_layers(nested) == (1, 2, 3)
    top = SimpleNamespace(eagle_aux_hidden_state_layer_ids=[1, 2, 3], eagle_config={})
    assert model_mod.head_aux_layers(top) == (1, 2, 3)
    assert model_mod.head_aux_layers(SimpleNamespace(eagle_config=None)) is None
    assert model_mod.head_aux_layers(SimpleNamespace()) is None


def test_matching_eagle3_head_and_other_methods_pass(model_mod):
    model_mod.check_eagle3_draft(glm_config(hidden_size=256, num_hidden_layers=4), eagle3_vllm_config(256, [0, 1, 2]))
    model_mod.check_eagle3_draft(glm_config(hidden_size=256, num_hidden_layers=4), eagle3_vllm_config(256, [1, 2, 3]))
    model_mod.check_eagle3_draft(glm_config(hidden_size=256), eagle3_vllm_config(4096, method="mtp"))
    model_mod.check_eagle3_draft(glm_config(), SimpleNamespace(speculative_config=None))


def test_inner_model_swap_is_scoped_to_the_constructor(model_mod):
    from vllm.model_executor.models import glm4_moe

    original = glm4_moe.Glm4MoeModel
    with pytest.raises(RuntimeError):
        with model_mod._building_with(glm4_moe, "Glm4MoeModel", model_mod.GlmMoeModel):
            assert glm4_moe.Glm4MoeModel is model_mod.GlmMoeModel
            raise RuntimeError("constructor failed")
    assert glm4_moe.Glm4MoeModel is original


def test_mtp_refuses_a_checkpoint_without_mtp_layer():
    from glm_plugin.engines.vllm import mtp

    with pytest.raises(ValueError, match="num_nextn_predict_layers = 0.*method.*mtp.*Serve without speculation"):
        mtp.check_has_mtp_layer(glm_config(num_nextn_predict_layers=0))
    mtp.check_has_mtp_layer(glm_config())
