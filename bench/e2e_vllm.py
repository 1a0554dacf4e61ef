"""End-to-end vLLM decode speed on one checkpoint and one prompt set: our model class against vLLM's built-in, and
speculative decoding (MTP, EAGLE-3) against no speculation, all measured in the same run.

Each setting is a fresh engine (the plugin reads `GLM_PLUGIN_DISABLE` once per process, and speculation is an
engine argument): a warm-up generate, then the timed greedy generate of every prompt at batch size 1 (the setting
where speculation helps), best of --repeats passes. One engine start to the next differs by up to ~20 % on this
CPU, so every setting gets --rounds engines, interleaved with the others, and its fastest counts; all rounds are
printed. Each run's tokens are checked against the built-in's: a fast wrong answer does not count. Printed per
setting: output tokens/s, the ratio to its anchor, and for speculation the acceptance length (1 + accepted drafts
per verification step) from vLLM's own metrics.

    python bench/e2e_vllm.py                         # bundled tiny GLM, its EAGLE-3 head, on CPU
    python bench/e2e_vllm.py --model DIR --eagle3 HEAD --dtype bfloat16

On the tiny checkpoint and 2 CPU cores, per-step overheads dominate, so the speedups printed are those of this
machine, not of a GPU serving GLM-4.7; the ratios of ours vs built-in are the part that transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "glm_plugin" / "assets" / "tiny-glm"
HEAD = ROOT / "glm_plugin" / "assets" / "tiny-glm-eagle3"

PROMPTS = [
    [{"role": "user", "content": "What is the weather in Lisbon?"}],
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "Repeat exactly: Morvan 4 2 7 QXT"}],
    [{"role": "user", "content": "Set a timer for 12 minutes called Tea Break."}],
]


def settings(args):
    mtp = {"method": "mtp", "num_speculative_tokens": 1}
    eagle3 = {"method": "eagle3", "model": args.eagle3, "num_speculative_tokens": 3}
    # "ours" is the plugin as installed (every part on; the kernels part only takes over FP8 checkpoints), the
    # built-in is vLLM with the model and kernels parts off. An earlier run that showed ours at half the built-in's
    # speed with the kernels part on was machine load: on an idle machine, alternating runs of ours with the kernels
    # part on / off / built-in gave 303-346 / 316-377 / 267-323 tok/s (2026-11-30), no difference beyond run-to-run.
    return [  # (name, GLM_PLUGIN_DISABLE, speculative_config, anchor)
        ("built-in", "model,kernels", None, None),
        ("ours", "", None, "built-in"),
        ("ours + MTP x1", "", mtp, "ours"),
        ("ours + EAGLE-3 x3", "", eagle3, "ours"),
    ]


def spec_counters(llm):
    names = {"vllm:spec_decode_num_drafts": "drafts", "vllm:spec_decode_num_accepted_tokens": "accepted_tokens"}
    out = dict.fromkeys(names.values(), 0)
    for metric in llm.get_metrics():
        if metric.name in names:
            out[names[metric.name]] += metric.value
    return out


def worker(req):
    """One engine: warm up, then time batch-1 greedy generation of each prompt."""
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    kwargs = dict(model=req["model"], dtype=req["dtype"], max_model_len=2048, max_num_seqs=1, enforce_eager=True,
                  seed=0, disable_log_stats=False)
    if req["spec"]:
        kwargs["speculative_config"] = req["spec"]
    llm = LLM(**kwargs)
    tok = llm.get_tokenizer()
    texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in PROMPTS]
    prompts = [tok(text, add_special_tokens=False).input_ids for text in texts]
    sp = SamplingParams(temperature=0.0, max_tokens=req["max_tokens"])
    llm.generate([TokensPrompt(prompt_token_ids=prompts[0])], sp, use_tqdm=False)  # warm-up
    before = spec_counters(llm)
    best = None
    for _ in range(req["repeats"]):  # best of N: the machine is shared, the slowest runs measure the neighbours
        tokens, produced, t0 = [], 0, time.perf_counter()
        for p in prompts:
            out = llm.generate([TokensPrompt(prompt_token_ids=p)], sp, use_tqdm=False)[0].outputs[0].token_ids
            tokens.append(list(out))
            produced += len(out)
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
    seconds = best
    after = spec_counters(llm)
    delta = {k: after[k] - before[k] for k in after}
    print("RESULT " + json.dumps({"tokens": tokens, "produced": produced, "seconds": seconds, "spec": delta}),
          flush=True)


def run(args, disable, spec):
    env = dict(os.environ, GLM_PLUGIN_DISABLE=disable, HF_HUB_OFFLINE="1")
    req = {"model": args.model, "dtype": args.dtype, "spec": spec, "max_tokens": args.max_tokens,
           "repeats": args.repeats}
    proc = subprocess.run([sys.executable, __file__, "--worker"], input=json.dumps(req), capture_output=True,
                          text=True, env=env, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"engine run failed ({disable=}, {spec=}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ASSET))
    ap.add_argument("--eagle3", default=str(HEAD), help="EAGLE-3 head directory")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per engine; the fastest counts")
    ap.add_argument("--rounds", type=int, default=3,
                    help="fresh engines per setting (on this CPU one engine start to the next varies by ~20 %%)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(json.loads(sys.stdin.read()))

    rows = settings(args)
    print(f"model {args.model}, dtype {args.dtype}, {len(PROMPTS)} prompts at batch 1, max {args.max_tokens} tokens, "
          f"{args.rounds} rounds of fresh engines (the fastest round counts per setting)")
    runs = {name: [] for name, *_ in rows}
    for _ in range(args.rounds):  # settings interleaved, so a slow spell of the machine hits every row alike
        for name, disable, spec, _anchor in rows:
            runs[name].append(run(args, disable, spec))

    def rate(res):
        return res["produced"] / res["seconds"]

    best = {name: max(results, key=rate) for name, results in runs.items()}
    print(f"{'setting':<20} {'tok/s':>8} {'rounds':>15} {'vs anchor':>16} {'accept len':>11}  output")
    for name, _disable, _spec, anchor in rows:
        res = best[name]
        spread = "/".join(f"{rate(r):.0f}" for r in runs[name])
        ratio = f"{rate(res) / rate(best[anchor]):.2f}x {anchor}" if anchor else ""
        drafts = res["spec"].get("drafts", 0)
        accept = f"{1 + res['spec'].get('accepted_tokens', 0) / drafts:.2f}" if drafts else "-"
        same = all(r["tokens"] == runs["built-in"][0]["tokens"] for r in runs[name])
        print(f"{name:<20} {rate(res):8.1f} {spread:>15} {ratio:>16} {accept:>11}  "
              f"{'same' if same else 'DIFFERS from built-in'}", flush=True)

if __name__ == "__main__":
    main()
