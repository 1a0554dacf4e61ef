"""vLLM's own GLM model serves the bundled tiny checkpoint exactly like transformers' reference.

Why: every end-to-end claim of the project rests on ``glm_plugin/assets/tiny-glm`` being a canonical
``Glm4MoeForCausalLM`` checkpoint. If vLLM (with our plugin disabled) and transformers produce the same
greedy tokens, the config, weight names, router, partial RoPE and qk-norm are read the same way by both.
The MTP test checks that the NextN layer stored under GLM's names loads into vLLM's MTP drafter, leaves
greedy output unchanged and gets its drafts accepted.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

import glm_plugin

pytestmark = pytest.mark.e2e

ASSET = pathlib.Path(glm_plugin.__file__).parent / "assets" / "tiny-glm"
HELPER = pathlib.Path(__file__).parent / "vllm_greedy.py"
N_TOKENS = 64

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed", allow_module_level=True)
if not (ASSET / "model.safetensors").exists():
    pytest.skip("tiny-glm weights missing (run scripts/train_tiny.py)", allow_module_level=True)

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                          "required": ["city"]}}}
TIMER = {"type": "function", "function": {"name": "set_timer", "description": "Start a named timer",
         "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
                        "required": ["minutes", "label"]}}}
CONVERSATIONS = [
    dict(messages=[{"role": "user", "content": "What is the weather in Lisbon?"}], tools=[WEATHER]),
    dict(messages=[{"role": "user", "content": "Set a timer for 12 minutes called Tea Break."}], tools=[WEATHER, TIMER],
         enable_thinking=False),
    dict(messages=[{"role": "user", "content": "Hello!"}]),
    dict(messages=[{"role": "user", "content": "Repeat exactly: Morvan 4 2 7 QXT"}], enable_thinking=False),
    dict(messages=[{"role": "user", "content": "What is the weather in Kyoto?"},
                   {"role": "assistant", "content": "", "reasoning_content": "The user asks for the weather in Kyoto.",
                    "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                     "arguments": {"city": "Kyoto"}}}]},
                   {"role": "tool", "content": "{\"city\": \"Kyoto\", \"temp\": 17, \"condition\": \"Rain\"}"}],
         tools=[WEATHER]),
]


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(ASSET))


@pytest.fixture(scope="module")
def prompts(tokenizer):
    out = []
    for conv in CONVERSATIONS:
        text = tokenizer.apply_chat_template(conv["messages"], tools=conv.get("tools"), add_generation_prompt=True,
                                             enable_thinking=conv.get("enable_thinking", True), tokenize=False)
        out.append(tokenizer(text, add_special_tokens=False).input_ids)
    return out


@pytest.fixture(scope="module")
def reference(prompts):
    """transformers greedy continuation (fp32 compute), ignoring stop tokens, without a KV cache."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(str(ASSET), dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            new = []
            for _ in range(N_TOKENS):
                nxt = int(model(input_ids=ids).logits[0, -1].argmax())
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            outs.append(new)
    return outs


def run_vllm(prompts, **extra):
    env = dict(os.environ)
    env["GLM_PLUGIN_DISABLE"] = "model,parsers,kernels"
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    req = dict(model=str(ASSET), prompts=prompts, max_tokens=N_TOKENS, dtype="float32", **extra)
    proc = subprocess.run([sys.executable, str(HELPER)], input=json.dumps(req), capture_output=True, text=True,
                          env=env, timeout=400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_vllm_greedy_equals_transformers(prompts, reference, tokenizer):
    got = run_vllm(prompts)["tokens"]
    for i, (ref, out) in enumerate(zip(reference, got)):
        assert out == ref, (f"prompt {i}: vLLM {tokenizer.decode(out)!r} != transformers {tokenizer.decode(ref)!r}")


def test_vllm_mtp_drafts_are_accepted_and_output_unchanged(prompts, reference, tokenizer):
    eos = set(json.loads((ASSET / "generation_config.json").read_text())["eos_token_id"])
    res = run_vllm(prompts, mtp=1, ignore_eos=False)
    for i, (ref, out) in enumerate(zip(reference, res["tokens"])):
        stop = next((j + 1 for j, t in enumerate(ref) if t in eos), len(ref))
        assert out == ref[:stop], (f"prompt {i}: vLLM+MTP {tokenizer.decode(out)!r} != "
                                   f"transformers {tokenizer.decode(ref[:stop])!r}")
    assert res["drafted"] > 0
    rate = res["accepted"] / res["drafted"]
    print(f"MTP acceptance: {res['accepted']:.0f}/{res['drafted']:.0f} = {rate:.2f}")
    assert rate >= 0.5
