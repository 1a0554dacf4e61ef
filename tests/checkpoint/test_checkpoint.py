"""The engine-neutral GLM checkpoint-name mapping, against the bundled checkpoint's real tensor names and against the
name patterns of GLM-4.5 / 4.5-Air / 4.7 (generated from their published configs, restated below), plus the FP8
expert stacking that feeds `torch.ops.glm_plugin.fp8_moe_experts`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import checkpoint_tensors as cn

from glm_plugin.command.cpu_server import bundled_model_dir

TINY = bundled_model_dir()  # the installed package's copy (scripts/ci_wheel_check.sh runs these on the wheel)

# Published config.json values (zai-org model cards / transformers' Glm4MoeConfig), restated so tests never read
# a reference file: decoder layers (the MTP layer sits at this index), routed experts, leading dense layers.
GLM45 = dict(architectures=["Glm4MoeForCausalLM"], num_hidden_layers=92, n_routed_experts=160,
             first_k_dense_replace=3, num_nextn_predict_layers=1, attention_bias=True, use_qk_norm=True)
GLM45_AIR = dict(architectures=["Glm4MoeForCausalLM"], num_hidden_layers=46, n_routed_experts=128,
                 first_k_dense_replace=1, num_nextn_predict_layers=1, attention_bias=True, use_qk_norm=False)
GLM47 = dict(architectures=["Glm4MoeForCausalLM"], num_hidden_layers=92, n_routed_experts=160,
             first_k_dense_replace=3, num_nextn_predict_layers=1, attention_bias=True, use_qk_norm=True)
FAMILY = {"GLM-4.5": GLM45, "GLM-4.5-Air": GLM45_AIR, "GLM-4.7": GLM47}


@pytest.fixture(scope="module")
def tiny_config() -> dict:
    return json.loads((TINY / "config.json").read_text())


@pytest.fixture(scope="module")
def tiny_names() -> list[str]:
    from safetensors import safe_open

    with safe_open(str(TINY / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_every_bundled_tensor_maps(tiny_config, tiny_names):
    mapped = [cn.classify(n, tiny_config) for n in tiny_names]
    kinds = Counter(t.kind for t in mapped)
    layers, experts = tiny_config["num_hidden_layers"], tiny_config["n_routed_experts"]
    moe_layers = layers - tiny_config["first_k_dense_replace"] + 1  # + the MTP layer, always MoE
    assert kinds["expert"] == moe_layers * experts * 3
    assert kinds["shared_expert"] == moe_layers * 3
    assert kinds["router"] == moe_layers * 2
    assert kinds["dense_mlp"] == 3 * tiny_config["first_k_dense_replace"]
    assert kinds["nextn"] == len(cn.NEXTN_ONLY) + len(cn.NEXTN_TIED)
    assert (kinds["embed"], kinds["lm_head"], kinds["final_norm"]) == (1, 1, 1)
    # The generator agrees with the real checkpoint, name for name.
    assert sorted(cn.expected_names(tiny_config)) == sorted(tiny_names)


def test_mtp_tensors_map_to_the_nextn_layer(tiny_config, tiny_names):
    assert cn.nextn_layer_index(tiny_config) == 4
    mtp = [cn.classify(n, tiny_config) for n in tiny_names if n.startswith("model.layers.4.")]
    assert mtp and all(t.nextn and t.layer == 4 for t in mtp)
    assert not any(cn.classify(n, tiny_config).nextn for n in tiny_names if not n.startswith("model.layers.4."))
    assert {t.module for t in mtp if t.kind == "nextn"} == {
        "enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight", "shared_head.head.weight",
        "embed_tokens.weight"}
    # The MTP layer is MoE although layer 0 (first_k_dense_replace = 1) is dense.
    assert any(t.kind == "expert" for t in mtp)


def test_mtp_tensor_shapes(tiny_config):
    from safetensors import safe_open

    h, v = tiny_config["hidden_size"], tiny_config["vocab_size"]
    want = {"eh_proj.weight": [h, 2 * h], "enorm.weight": [h], "hnorm.weight": [h], "shared_head.norm.weight": [h],
            "shared_head.head.weight": [v, h], "embed_tokens.weight": [v, h]}
    with safe_open(str(TINY / "model.safetensors"), "pt") as f:
        for module, shape in want.items():
            assert f.get_slice(f"model.layers.4.{module}").get_shape() == shape, module


def test_tied_embed_and_head_come_from_the_layer_or_the_target(tiny_config, tiny_names):
    own = cn.nextn_tied_sources(tiny_names, tiny_config)
    assert own == {"model.layers.4.embed_tokens.weight": "model.layers.4.embed_tokens.weight",
                   "model.layers.4.shared_head.head.weight": "model.layers.4.shared_head.head.weight"}
    stripped = [n for n in tiny_names if n not in own]
    assert cn.nextn_tied_sources(stripped, tiny_config) == {
        "model.layers.4.embed_tokens.weight": "model.embed_tokens.weight",
        "model.layers.4.shared_head.head.weight": "lm_head.weight"}
    # Only one of the two omitted: each falls back on its own.
    half = [n for n in tiny_names if n != "model.layers.4.shared_head.head.weight"]
    assert cn.nextn_tied_sources(half, tiny_config)["model.layers.4.shared_head.head.weight"] == "lm_head.weight"
    assert cn.nextn_tied_sources(half, tiny_config)["model.layers.4.embed_tokens.weight"] == \
        "model.layers.4.embed_tokens.weight"


def test_tied_fallback_matches_the_bundled_values(tiny_names):
    """The fallback is only sound because GLM's MTP copies equal the target's; the bundled checkpoint keeps that."""
    from safetensors import safe_open

    with safe_open(str(TINY / "model.safetensors"), "pt") as f:
        for own, target in (("model.layers.4.embed_tokens.weight", "model.embed_tokens.weight"),
                            ("model.layers.4.shared_head.head.weight", "lm_head.weight")):
            assert f.get_tensor(own).equal(f.get_tensor(target))


def test_missing_mtp_layer_and_missing_tied_tensors_are_refused(tiny_config, tiny_names):
    no_mtp = [n for n in tiny_names if not n.startswith("model.layers.4.")]
    with pytest.raises(ValueError, match=r"no tensor named model\.layers\.4\.\*.*stripped"):
        cn.nextn_tied_sources(no_mtp, tiny_config)
    neither = [n for n in tiny_names if n not in ("model.layers.4.shared_head.head.weight", "lm_head.weight")]
    with pytest.raises(ValueError, match=r"neither model\.layers\.4\.shared_head\.head\.weight nor .*lm_head"):
        cn.nextn_tied_sources(neither, tiny_config)


def test_zero_nextn_layers_is_a_clear_error(tiny_config):
    config = dict(tiny_config, num_nextn_predict_layers=0)
    with pytest.raises(ValueError, match=r"Glm4MoeForCausalLM has num_nextn_predict_layers = 0.*no MTP"):
        cn.check_has_nextn_layer(config)
    with pytest.raises(ValueError, match="num_nextn_predict_layers = 0"):
        cn.nextn_tied_sources(["lm_head.weight"], config)
    # ... and layer 4 is then past the end, not silently a decoder layer.
    with pytest.raises(ValueError, match="past the last layer"):
        cn.classify("model.layers.4.enorm.weight", config)
    cn.check_has_nextn_layer(tiny_config)


@pytest.mark.parametrize("model", sorted(FAMILY))
def test_family_name_patterns(model):
    config = FAMILY[model]
    layers, experts, dense = config["num_hidden_layers"], config["n_routed_experts"], config["first_k_dense_replace"]
    names = cn.expected_names(config)
    assert len(names) == len(set(names))
    mapped = [cn.classify(n, config) for n in names]
    kinds = Counter(t.kind for t in mapped)
    assert kinds["expert"] == (layers - dense + 1) * experts * 3
    assert kinds["dense_mlp"] == dense * 3
    nextn = {t.layer for t in mapped if t.nextn}
    assert nextn == {layers}  # 92 for 4.5 / 4.7, 46 for Air
    assert cn.classify(f"model.layers.{layers}.mlp.experts.{experts - 1}.down_proj.weight", config).stacked == \
        ("w2", None)
    qk = [t for t in mapped if t.module.startswith("self_attn.q_norm")]
    assert len(qk) == (layers + 1 if config["use_qk_norm"] else 0)


@pytest.mark.parametrize("model", sorted(FAMILY))
def test_family_rejects_names_it_cannot_have(model):
    config = FAMILY[model]
    layers, experts, dense = config["num_hidden_layers"], config["n_routed_experts"], config["first_k_dense_replace"]
    bad = [
        f"model.layers.{layers + 1}.enorm.weight",  # a second MTP layer
        f"model.layers.{dense - 1}.mlp.experts.0.gate_proj.weight",  # experts in a dense layer
        f"model.layers.{dense}.mlp.gate_proj.weight",  # a dense MLP in an MoE layer
        f"model.layers.5.mlp.experts.{experts}.up_proj.weight",  # one expert too many
        "model.layers.5.mlp.experts.0.gate_proj.qweight",  # not a GLM tensor (GPTQ)
        "transformer.h.0.attn.weight",
    ]
    for name in bad:
        with pytest.raises(ValueError):
            cn.classify(name, config)


def test_fp8_scale_names_and_layouts():
    block = {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    channel = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}}}
    ct_block = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]}}}}}
    assert cn.fp8_format(block) == cn.Fp8Format("weight_scale_inv", "block")
    assert cn.fp8_format(channel) == cn.Fp8Format("weight_scale", "channel")
    assert cn.fp8_format(ct_block) == cn.Fp8Format("weight_scale", "block")
    assert cn.fp8_format({}) is None
    with pytest.raises(ValueError, match="128x128"):
        cn.fp8_format({"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 64]}})

    fmt = cn.fp8_format(block)
    config = dict(GLM45_AIR, quantization_config=block["quantization_config"])
    names = cn.expected_names(config, fp8=fmt)
    scales = [cn.classify(n, config) for n in names if n.endswith(".weight_scale_inv")]
    assert scales and all(t.kind in ("attn", "expert", "shared_expert", "dense_mlp") for t in scales)
    gate = cn.classify("model.layers.46.mlp.experts.7.gate_proj.weight_scale_inv", config)
    assert (gate.expert, gate.stacked, gate.suffix, gate.nextn) == (7, ("w13", 0), "weight_scale_inv", True)
    up = cn.classify("model.layers.3.mlp.experts.7.up_proj.weight_scale", config)
    assert up.stacked == ("w13", 1) and not up.nextn


def test_expert_names_stacking_order():
    names = cn.expert_names(2, 3, "weight_scale_inv")
    assert names["w13"][1] == ["model.layers.2.mlp.experts.1.gate_proj.weight_scale_inv",
                               "model.layers.2.mlp.experts.1.up_proj.weight_scale_inv"]
    assert names["w2"][2] == ["model.layers.2.mlp.experts.2.down_proj.weight_scale_inv"]


# ---- an FP8 copy of the bundled experts, through the op ----------------------------------------------------------

def _bf16_moe(x, gate, up, down, weights, ids):
    """The bundled layer's routed experts in fp32 from its bf16 weights: the oracle the FP8 copy approximates."""
    import torch
    import torch.nn.functional as F

    out = torch.zeros(x.shape, dtype=torch.float32)
    xf = x.float()
    for t in range(x.shape[0]):
        for w, e in zip(weights[t].tolist(), ids[t].tolist()):
            h = F.silu(xf[t] @ gate[e].float().t()) * (xf[t] @ up[e].float().t())
            out[t] += w * (h @ down[e].float().t())
    return out


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_fp8_copy_of_bundled_experts_runs_through_the_op(tiny_config, tmp_path, layout):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from glm_plugin import kernels
    from glm_plugin.kernels import reference

    layer, experts = 2, tiny_config["n_routed_experts"]
    hidden, inter = tiny_config["hidden_size"], tiny_config["moe_intermediate_size"]
    fmt = cn.Fp8Format("weight_scale_inv", "block") if layout == "block" else cn.Fp8Format("weight_scale", "channel")
    bf16 = {}
    with safe_open(str(TINY / "model.safetensors"), "pt") as f:
        for parts in (p for rows in cn.expert_names(layer, experts).values() for p in rows):
            for name in parts:
                bf16[name] = f.get_tensor(name)
        router = f.get_tensor(f"model.layers.{layer}.mlp.gate.weight")
        bias = f.get_tensor(f"model.layers.{layer}.mlp.gate.e_score_correction_bias")

    quantised = {}
    for name, w in bf16.items():
        q, s = reference.quantize_fp8(w, layout)
        quantised[name] = q
        quantised[name[: -len("weight")] + fmt.scale_suffix] = s
    save_file(quantised, str(tmp_path / "experts.safetensors"))

    with safe_open(str(tmp_path / "experts.safetensors"), "pt") as f:
        stacked = cn.stack_experts(f.get_tensor, layer, experts, fmt)
    assert stacked["w13"].shape == (experts, 2 * inter, hidden) and stacked["w13"].dtype == torch.float8_e4m3fn
    assert stacked["w2"].shape == (experts, hidden, inter) and stacked["w2"].dtype == torch.float8_e4m3fn
    assert stacked["w13_scale"].shape == (experts, *reference.scale_shape(2 * inter, hidden, layout))
    assert stacked["w2_scale"].shape == (experts, *reference.scale_shape(hidden, inter, layout))

    gen = torch.Generator().manual_seed(18)
    x = (torch.randn(24, hidden, generator=gen) * 0.5).to(torch.bfloat16)
    weights, ids = reference.glm_route(x.float() @ router.float().t(), bias, tiny_config["num_experts_per_tok"], 1, 1,
                                       True, tiny_config["routed_scaling_factor"])
    got = kernels.fp8_moe_experts(x, stacked["w13"], stacked["w13_scale"], stacked["w2"], stacked["w2_scale"],
                                  weights, ids, layout).float()

    def stack(proj):
        return torch.stack([bf16[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"] for e in range(experts)])

    want = _bf16_moe(x, stack("gate_proj"), stack("up_proj"), stack("down_proj"), weights, ids)
    # e4m3 keeps 3 mantissa bits: each weight is off by up to 2^-4 relative (RMS ~3.6%); over two GEMMs and
    # hundreds of terms the errors mostly cancel, leaving a few percent of the output's norm. A gate/up swap or a
    # scale applied to the wrong block gives errors of order 100%.
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 0.08, rel

    # Against the same experts with the FP8 weights dequantised, only the bf16 rounding of the output remains
    # (2^-8 relative), so the stacking order is checked exactly, not just within FP8 noise.
    deq = {n: (reference.dequantize_fp8(quantised[n], quantised[n[: -len("weight")] + fmt.scale_suffix], layout)
               if n.endswith(".weight") else None) for n in bf16}
    bf16.update({n: w for n, w in deq.items() if w is not None})
    exact = _bf16_moe(x, stack("gate_proj"), stack("up_proj"), stack("down_proj"), weights, ids)
    assert ((got - exact).norm() / exact.norm()).item() < 1e-2


def test_op_expert_weights_reads_engine_parameters():
    import torch
    from types import SimpleNamespace

    from glm_plugin.kernels import reference

    e, i, h = 4, 128, 256
    w13, s13 = reference.quantize_fp8_block(torch.randn(e, 2 * i, h))
    w2, s2 = reference.quantize_fp8_block(torch.randn(e, h, i))
    layer = SimpleNamespace(w13_weight=w13, w2_weight=w2, w13_weight_scale_inv=s13, w2_weight_scale_inv=s2)
    layout, args = cn.op_expert_weights(layer)
    assert layout == "block" and args[0] is w13 and args[1] is s13 and args[3] is s2

    c13, cs13 = reference.quantize_fp8_channel(torch.randn(e, 2 * i, h))
    c2, cs2 = reference.quantize_fp8_channel(torch.randn(e, h, i))
    assert cn.op_expert_weights(SimpleNamespace(w13_weight=c13, w2_weight=c2, w13_weight_scale=cs13,
                                                w2_weight_scale=cs2))[0] == "channel"

    assert "not float8" in cn.op_expert_weights(SimpleNamespace(w13_weight=torch.zeros(e, 2 * i, h),
                                                                w2_weight=torch.zeros(e, h, i)))
    ue8m0 = SimpleNamespace(w13_weight=w13, w2_weight=w2, w13_weight_scale_inv=s13.to(torch.bfloat16),
                            w2_weight_scale_inv=s2.to(torch.bfloat16))
    assert "not float32" in cn.op_expert_weights(ue8m0)
    padded = SimpleNamespace(w13_weight=w13, w2_weight=w2, w13_weight_scale_inv=torch.ones(e, 4, 2),
                             w2_weight_scale_inv=s2)  # a backend padded the intermediate size
    assert "are not the block scales" in cn.op_expert_weights(padded)
    assert "no weight_scale" in cn.op_expert_weights(SimpleNamespace(w13_weight=w13, w2_weight=w2))
