"""Our GLM decoder forward against vLLM's, in one engine: the only per-step code our model class changes, timed
without engine-start noise.

`bench/e2e_vllm.py` compares whole engines, and on a small shared CPU one engine start to the next varies by ~20 %,
more than any difference between the two classes. Here one engine runs our `Glm4MoeForCausalLM`; between timed
passes every worker swaps the inner model's `forward` between ours (`_AuxHiddenStatesForward.forward`) and vLLM's
(`Glm4MoeModel.forward`), same weights, same process, same cores. Passes alternate (A B B A ...) so drift hits both
alike. A call counter checks that the swapped-in function is the one that ran. Prints tokens/s of each, the ratio
ours / vLLM's (median of paired passes), and whether the tokens agree.

    python bench/vllm_forward_ab.py [--pairs 8] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "glm_plugin" / "assets" / "tiny-glm"
sys.path.insert(0, str(ROOT / "bench"))
from e2e_vllm import PROMPTS  # noqa: E402

def _use_forward(worker, which):
    """Runs in each worker: make the inner model's class call `which` forward, counting calls."""
    from vllm.model_executor.models import glm4_moe

    from glm_plugin.engines.vllm import model as ours

    inner = type(worker.model_runner.get_model().model)
    chosen = glm4_moe.Glm4MoeModel.forward if which == "vllm" else ours._AuxHiddenStatesForward.forward

    def forward(self, *args, **kwargs):
        inner.glm_bench_calls += 1  # on the class: these functions are pickled by value into the workers
        return chosen(self, *args, **kwargs)

    inner.forward = forward
    inner.glm_bench_calls = 0
    return inner.__name__


def _calls(worker):
    return type(worker.model_runner.get_model().model).glm_bench_calls


def worker(req):
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # collective_rpc with functions
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=req["model"], dtype="float32", max_model_len=2048, max_num_seqs=1, enforce_eager=True, seed=0)
    tok = llm.get_tokenizer()
    prompts = [tok(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False).input_ids for m in PROMPTS]
    sp = SamplingParams(temperature=0.0, max_tokens=req["max_tokens"])

    def timed(which):
        assert llm.collective_rpc(_use_forward, args=(which,)) == ["GlmMoeModel"]
        tokens, produced, t0 = [], 0, time.perf_counter()
        for p in prompts:
            out = llm.generate([TokensPrompt(prompt_token_ids=p)], sp, use_tqdm=False)[0].outputs[0].token_ids
            tokens.append(list(out))
            produced += len(out)
        rate = produced / (time.perf_counter() - t0)
        (calls,) = llm.collective_rpc(_calls)
        assert calls >= produced, f"{which} forward ran {calls} times for {produced} tokens: the swap did not take"
        return rate, tokens

    timed("vllm")  # warm-up
    rates = {"ours": [], "vllm": []}
    tokens = {}
    for i in range(req["pairs"]):
        for which in (("vllm", "ours") if i % 2 == 0 else ("ours", "vllm")):
            rate, tokens[which] = timed(which)
            rates[which].append(rate)
    print("RESULT " + json.dumps({"rates": rates, "same": tokens["ours"] == tokens["vllm"]}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ASSET))
    ap.add_argument("--pairs", type=int, default=8, help="timed pass pairs (A B, then B A, ...)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(json.loads(sys.stdin.read()))
    env = dict(os.environ, GLM_PLUGIN_DISABLE="parsers,kernels", HF_HUB_OFFLINE="1")
    req = {"model": args.model, "pairs": args.pairs, "max_tokens": args.max_tokens}
    proc = subprocess.run([sys.executable, __file__, "--worker"], input=json.dumps(req), capture_output=True,
                          text=True, env=env, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"engine run failed:\n{proc.stderr[-4000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    ours, vllms = res["rates"]["ours"], res["rates"]["vllm"]
    ratios = [a / b for a, b in zip(ours, vllms)]
    print(f"model {args.model}, fp32, {len(PROMPTS)} prompts at batch 1, max {args.max_tokens} tokens, "
          f"{args.pairs} alternating pass pairs in one engine")
    for name, rates in (("vLLM's Glm4MoeModel.forward", vllms), ("ours (aux-state capture)", ours)):
        print(f"{name:<30}{statistics.median(rates):7.1f} tok/s (median; {min(rates):.0f}-{max(rates):.0f})")
    print(f"ours / vLLM's: {statistics.median(ratios):.3f}x (median of pairs; {min(ratios):.3f}-{max(ratios):.3f}); "
          f"tokens {'identical' if res['same'] else 'DIFFER'}")


if __name__ == "__main__":
    main()
