"""vLLM's own GLM model serves the bundled tiny checkpoint exactly like transformers' reference.

Why: every end-to-end claim of the project rests on ``glm_plugin/assets/tiny-glm`` being a canonical
``Glm4MoeForCausalLM`` checkpoint. If vLLM (with our plugin disabled) and transformers produce the same
greedy tokens (up to near-ties of the top-2 logits, see greedy_parity.py), the config, weight names, router, partial RoPE and qk-norm are read the same way by both.
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
from greedy_parity import assert_greedy_parity, greedy_with_margins

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]

ASSET = pathlib.Path(glm_plugin.__file__).parent / "assets" / "tiny-glm"
RUNNER = pathlib.Path(__file__).parent / "vllm_offline.py"
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
    """transformers greedy continuation (fp32 compute) and its top-2 margins, ignoring stop tokens, no KV cache."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(str(ASSET), dtype=torch.float32).eval()
    return greedy_with_margins(model, prompts, N_TOKENS)


def run_vllm(prompts, mtp=0, **extra):
    """vLLM's own GLM model (every plugin part off), greedy, optionally with MTP drafts."""
    if mtp:
        extra["llm"] = {"speculative_config": {"method": "mtp", "num_speculative_tokens": mtp}}
    env = dict(os.environ)
    env["GLM_PLUGIN_DISABLE"] = "model,parsers,kernels"
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    req = dict(model=str(ASSET), prompts=prompts, max_tokens=N_TOKENS, dtype="float32", **extra)
    proc = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(req), capture_output=True, text=True,
                          env=env, timeout=400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_vllm_greedy_equals_transformers(prompts, reference, tokenizer):
    tokens, margins = reference
    got = run_vllm(prompts)["tokens"]
    for i, (ref, gaps, out) in enumerate(zip(tokens, margins, got)):
        assert_greedy_parity(ref, gaps, out, tokenizer.decode, f"prompt {i}: vLLM vs transformers")


def test_vllm_mtp_drafts_are_accepted_and_output_unchanged(prompts, reference, tokenizer):
    eos = set(json.loads((ASSET / "generation_config.json").read_text())["eos_token_id"])
    tokens, margins = reference
    res = run_vllm(prompts, mtp=1, ignore_eos=False)
    for i, (ref, gaps, out) in enumerate(zip(tokens, margins, res["tokens"])):
        stop = next((j + 1 for j, t in enumerate(ref) if t in eos), len(ref))
        assert_greedy_parity(ref[:stop], gaps, out, tokenizer.decode, f"prompt {i}: vLLM+MTP vs transformers")
    m = res["metrics"]
    assert m["drafted"] > 0
    rate = m["accepted"] / m["drafted"]
    print(f"MTP acceptance: {m['accepted']:.0f}/{m['drafted']:.0f} = {rate:.2f}")
    assert rate >= 0.5
