"""Run vLLM offline (`LLM`) on token-id prompts with any engine arguments; print one JSON line of results.

Why a script: vLLM spawns its engine core, so the code creating `LLM` must sit behind a `__main__` guard and is
best kept out of the pytest process; and the plugin reads `GLM_PLUGIN_DISABLE` once per process, so each setting
needs a fresh interpreter anyway. The runner takes the engine arguments from the request (speculative config,
tensor parallelism), returns raw logits, spec-decode metrics, and which model classes each worker built. The caller
sets the environment (plugin parts on or off).

Request (stdin, JSON): model, prompts (token ids), max_tokens, and optionally dtype, ignore_eos, logprobs (top-k
raw logits per position), llm (extra `LLM(...)` keyword arguments).
Output: the last stdout line `RESULT {...}`; on an engine error, `ERROR {"type": ..., "message": ...}` and exit 3.
"""

import json
import os
import sys


def _classes(worker):
    """Runs inside each worker: the classes it built for the target and the drafter, and the EAGLE-3 layers."""
    runner = worker.model_runner
    model = runner.get_model()
    drafter = getattr(runner, "drafter", None)
    draft_model = getattr(drafter, "model", None)
    name = lambda obj: None if obj is None else f"{type(obj).__module__}:{type(obj).__name__}"  # noqa: E731
    out = {"target": name(model), "draft": name(draft_model)}
    if hasattr(model, "get_eagle3_default_aux_hidden_state_layers"):
        out["eagle3_default_layers"] = list(model.get_eagle3_default_aux_hidden_state_layers())
        out["eagle3_layers_in_use"] = list(getattr(model.model, "aux_hidden_state_layers", ()))
    return out


def _metrics(llm):
    wanted = {"vllm:spec_decode_num_drafts": "drafts", "vllm:spec_decode_num_draft_tokens": "drafted",
              "vllm:spec_decode_num_accepted_tokens": "accepted"}
    out = dict.fromkeys(wanted.values(), 0)
    for metric in llm.get_metrics():
        if metric.name in wanted:
            out[wanted[metric.name]] += metric.value
    return out


def main():
    req = json.loads(sys.stdin.read())
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # collective_rpc with a function (_classes)
    llm_args = req.get("llm", {})
    if llm_args.get("tensor_parallel_size", 1) * llm_args.get("pipeline_parallel_size", 1) == 1:
        # One worker: engine core and model in this process (vllm-cpu otherwise spawns an engine core and a worker,
        # each importing vLLM again: 2-5x the start-up time on 2 cores). Nothing under test depends on the processes.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    kwargs = dict(model=req["model"], dtype=req.get("dtype", "float32"), max_model_len=1024, max_num_seqs=8,
                  max_num_batched_tokens=2048, enforce_eager=True, seed=0, disable_log_stats=False)
    if req.get("logprobs"):
        kwargs["logprobs_mode"] = "raw_logits"
    kwargs.update(llm_args)
    try:
        llm = LLM(**kwargs)
    except Exception as error:  # the caller asserts on engine start failures (e.g. an unsupported target)
        text = f"{type(error).__name__}: {error}"
        cause = error.__cause__ or error.__context__
        while cause is not None:
            text += f"\ncaused by {type(cause).__name__}: {cause}"
            cause = cause.__cause__ or cause.__context__
        print("ERROR " + json.dumps({"type": type(error).__name__, "message": text}), flush=True)
        sys.exit(3)
    sp = SamplingParams(temperature=0.0, max_tokens=req["max_tokens"], ignore_eos=req.get("ignore_eos", True),
                        logprobs=req.get("logprobs") or None)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in req["prompts"]], sp)
    result = {"tokens": [list(o.outputs[0].token_ids) for o in outs], "metrics": _metrics(llm),
              "classes": llm.collective_rpc(_classes)}
    if req.get("logprobs"):
        result["logits"] = [[{str(tok): lp.logprob for tok, lp in pos.items()} for pos in o.outputs[0].logprobs]
                            for o in outs]
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
