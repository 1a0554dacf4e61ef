"""scripts/quantize_fp8.py writes the bundled tiny checkpoint in both FP8 layouts with the real tensor names,
scale shapes and quantization_config blocks, and the FP8 weights dequantise back to the bf16 ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("quantize_fp8", ROOT / "scripts" / "quantize_fp8.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_tiny_checkpoint_round_trip(layout, tmp_path):
    from safetensors.torch import load_file

    from glm_plugin.kernels import reference

    mod = _script()
    mod.quantize_checkpoint(mod.BUNDLED, tmp_path, layout)
    src = load_file(str(mod.BUNDLED / "model.safetensors"))
    out = load_file(str(tmp_path / "model.safetensors"))
    cfg = json.loads((tmp_path / "config.json").read_text())
    qc = cfg["quantization_config"]
    scale_key = "weight_scale_inv" if layout == "block" else "weight_scale"
    if layout == "block":
        assert qc["quant_method"] == "fp8" and qc["weight_block_size"] == [128, 128]
        skipped = qc["modules_to_not_convert"]
    else:
        assert qc["quant_method"] == "compressed-tensors"
        assert qc["config_groups"]["group_0"]["weights"]["strategy"] == "channel"
        skipped = qc["ignore"]
    mtp = cfg["num_hidden_layers"]
    expert = "model.layers.1.mlp.experts.3.gate_proj"
    assert out[f"{expert}.weight"].dtype == torch.float8_e4m3fn
    assert out[f"{expert}.{scale_key}"].shape == reference.scale_shape(*src[f"{expert}.weight"].shape, layout)
    for keep in ("lm_head.weight", "model.embed_tokens.weight", "model.layers.1.mlp.gate.weight",
                 f"model.layers.{mtp}.eh_proj.weight"):
        assert out[keep].dtype == torch.bfloat16 and torch.equal(out[keep], src[keep])
    assert "lm_head" in skipped and "model.layers.1.mlp.gate" in skipped
    assert out["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    n_fp8 = 0
    for name, t in out.items():
        if t.dtype != torch.float8_e4m3fn:
            continue
        n_fp8 += 1
        w = src[name].float()
        back = reference.dequantize_fp8(t, out[name.replace(".weight", f".{scale_key}")], layout)
        # e4m3 rounding: at most 2^-4 relative, plus half a subnormal step of the group's scale
        assert ((back - w).abs() <= w.abs() / 16 + w.abs().max() / 448 / 1024 + 1e-12).all(), name
    assert n_fp8 > 0 and (tmp_path / "tokenizer.json").exists() and (tmp_path / "chat_template.jinja").exists()
