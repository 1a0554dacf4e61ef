"""Run vLLM's own GLM model (plugin disabled) greedily on token-id prompts; print JSON results.

Why a separate script: vLLM spawns its engine core, so the code creating ``LLM`` must sit behind a
``__main__`` guard and is best kept out of the pytest process. Input and output are JSON (stdin/stdout
last line), so the test can compare token ids with transformers exactly.
"""

import json
import os
import sys


def main():
    req = json.loads(sys.stdin.read())
    os.environ.setdefault("GLM_PLUGIN_DISABLE", "model,parsers,kernels")
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    kwargs = dict(model=req["model"], dtype=req.get("dtype", "float32"), max_model_len=1024, max_num_seqs=8,
                  max_num_batched_tokens=2048, enforce_eager=True, seed=0,
                  disable_log_stats=False)
    if req.get("mtp"):
        kwargs["speculative_config"] = {"method": "mtp", "num_speculative_tokens": int(req["mtp"])}
    llm = LLM(**kwargs)
    sp = SamplingParams(temperature=0.0, max_tokens=req["max_tokens"], ignore_eos=req.get("ignore_eos", True))
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in req["prompts"]], sp)
    result = {"tokens": [list(o.outputs[0].token_ids) for o in outs]}
    if req.get("mtp"):
        drafted = accepted = 0
        for m in llm.get_metrics():
            if m.name == "vllm:spec_decode_num_draft_tokens":
                drafted += m.value
            elif m.name == "vllm:spec_decode_num_accepted_tokens":
                accepted += m.value
        result["drafted"], result["accepted"] = drafted, accepted
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
