"""Quantises a bf16 GLM-4.5-architecture checkpoint (by default the bundled tiny one) into one of the two FP8
layouts GLM ships, with the tensor names and `quantization_config` blocks those checkpoints use:

  block    `quant_method: fp8` (zai-org / DeepSeek-V3 style): `<module>.weight` e4m3 [out, in] +
           `<module>.weight_scale_inv` fp32 [ceil(out/128), ceil(in/128)] (multiplied, despite the name)
  channel  compressed-tensors `float-quantized`, per-output-channel weights, dynamic per-token activations:
           `<module>.weight` e4m3 [out, in] + `<module>.weight_scale` fp32 [out, 1]

Every `*_proj.weight` of the main layers is quantised (attention q/k/v/o, dense MLP, routed and shared experts);
embeddings, norms, the router (`mlp.gate`, with its fp32 correction bias), `lm_head` and, unless --quantize-mtp,
the MTP layer stay bf16 and are listed as not converted. With --quantize-mtp the MTP layer's decoder projections
are quantised too, but its `eh_proj` stays bf16: both engines build that projection unquantised. Scales come from glm_plugin.kernels.reference, the same
helpers the kernel tests use.

    python scripts/quantize_fp8.py --layout block --out /tmp/tiny-glm-fp8-block
    python scripts/quantize_fp8.py --layout channel --out /tmp/tiny-glm-fp8-channel
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from glm_plugin.checkpoint import FP8_BLOCK, nextn_layer_index

BUNDLED = Path(__file__).resolve().parent.parent / "glm_plugin" / "assets" / "tiny-glm"
_PROJ = re.compile(r"^(model\.layers\.(\d+)\..*_proj)\.weight$")


def quantization_config(layout: str, not_converted: list[str]) -> dict:
    if layout == "block":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": [FP8_BLOCK, FP8_BLOCK], "modules_to_not_convert": not_converted}
    return {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True,
                        "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True,
                                  "dynamic": True},
        }},
        "ignore": not_converted,
        "kv_cache_scheme": None,
    }


def quantize_checkpoint(src: Path, out: Path, layout: str, quantize_mtp: bool = False) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from glm_plugin.kernels import reference

    config = json.loads((src / "config.json").read_text())
    mtp_layer = nextn_layer_index(config)
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(str(f)))

    result: dict[str, torch.Tensor] = {}
    quantized, worst = 0, 0.0
    for name, t in tensors.items():
        m = _PROJ.match(name)
        if m is None or (int(m.group(2)) >= mtp_layer and (not quantize_mtp or name.endswith(".eh_proj.weight"))):
            result[name] = t
            continue
        q, s = reference.quantize_fp8(t, layout)
        result[name] = q
        result[f"{m.group(1)}.{'weight_scale_inv' if layout == 'block' else 'weight_scale'}"] = s
        back = reference.dequantize_fp8(q, s, layout)
        worst = max(worst, float((back - t.float()).abs().max() / t.float().abs().max().clamp(min=1e-12)))
        quantized += 1

    # Modules whose weights stay bf16: every Linear-like module not quantised (lm_head, router gates, the MTP
    # layer's projections) so that a loader never expects FP8 for them.
    modules = {n.rsplit(".", 1)[0] for n, t in tensors.items() if n.endswith(".weight") and t.dim() == 2}
    not_converted = sorted(mod for mod in modules if f"{mod}.weight" in result
                           and result[f"{mod}.weight"].dtype != torch.float8_e4m3fn
                           and not mod.endswith("embed_tokens"))
    config["quantization_config"] = quantization_config(layout, not_converted)

    out.mkdir(parents=True, exist_ok=True)
    save_file(result, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json" and f.is_file():
            shutil.copy2(f, out / f.name)
    return {"quantized": quantized, "kept": len(tensors) - quantized, "worst_rel_error": worst,
            "not_converted": len(not_converted)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=BUNDLED, help="bf16 checkpoint directory (default: bundled tiny)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--layout", choices=["block", "channel"], required=True)
    ap.add_argument("--quantize-mtp", action="store_true", help="also quantise the MTP layer's projections")
    args = ap.parse_args(argv)
    if args.out.resolve() == args.src.resolve():
        ap.error("--out must differ from --src")
    stats = quantize_checkpoint(args.src, args.out, args.layout, args.quantize_mtp)
    print(f"{args.out}: {stats['quantized']} weights quantised ({args.layout}), {stats['kept']} tensors kept, "
          f"{stats['not_converted']} modules listed as not converted; worst |dequant - bf16| / max|w| = "
          f"{stats['worst_rel_error']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
