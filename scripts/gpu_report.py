"""The report of scripts/gpu_check.py: one run's results judged against issues 24's and 30's goals, written as
gpu-report.md and gpu-report.json.

Pure functions of the result dictionary and the standard library only, so that `gpu_check.py --plan` and the
tests can run the writer on a made-up result on any machine. A goal missed is a finding, reported as such; only
correctness decides the exit status: 0 every check ran and passed, 1 a correctness check failed (a test, a bench
result outside its tolerance, a build that failed), 2 nothing failed but something could not be checked (no GPU,
a step that did not finish, every GPU test skipped).
"""

from __future__ import annotations

import json
from pathlib import Path

DECODE_TOKENS = 8        # "decode" is 1 to this many tokens
DECODE_COPY_PCT = 70.0   # % of the measured copy bandwidth on the touched experts' FP8 weights
PREFILL_TOKENS = 4096
PREFILL_TFLOPS = 600.0
OURS = ("cuda", "cuda_channel", "triton")
BASELINES = ("triton", "torch")  # what the CUDA kernel should beat at every point
ENGINE = ("vllm_triton_kernels", "vllm_triton")  # the engine's own FP8 MoE: its kernels alone first (the strict one)

GOALS = {
    "correct": "Correct: every CUDA and Triton case within the dtype's tolerance of the reference, bf16 included",
    "decode": f"Decode (1-{DECODE_TOKENS} tokens): our CUDA kernel streams the touched experts' FP8 weights at "
              f">= {DECODE_COPY_PCT:.0f} % of the measured copy bandwidth",
    "prefill": f"Prefill ({PREFILL_TOKENS:,} tokens): our CUDA kernel >= {PREFILL_TFLOPS:.0f} TFLOPS",
    "fastest": "At every shape: ours CUDA >= ours Triton and >= torch's bf16 grouped GEMM",
    "engine": "At every shape: ours CUDA >= the engine's own FP8 MoE kernel (vLLM's Triton w8a8 block kernel, its "
              "two kernel launches alone), before ours may ever become a default",
}


def weight_copy_pct(point: dict, record: dict, copy_tb_s: float) -> float:
    """The touched experts' FP8 weights (and scales) per second, as % of the measured copy bandwidth."""
    return 100 * point["weight_bytes"] / record["us"] / 1e6 / copy_tb_s


def _measured(point: dict, impl: str) -> dict | None:
    record = point["impls"].get(impl)
    return record if record and "us" in record else None


def correctness(result: dict) -> tuple[bool | None, list[str]]:
    """(True / False / None for not established, the facts behind it)."""
    steps = result.get("steps", {})
    failures, unknown, facts = [], [], []
    build = steps.get("build")
    if build is None or build.get("rc") is None:
        unknown.append("the CUDA build did not run")
    elif not build["ok"]:
        failures.append(f"the CUDA build failed (exit {build['rc']})")
    tests = steps.get("tests")
    if tests is None or tests.get("passed") is None:
        unknown.append("the GPU tests did not run to the end")
    else:
        facts.append(f"{tests['passed']} GPU tests passed, {tests['failed']} failed, {tests['errors']} errors, "
                     f"{tests['skipped']} skipped")
        if tests["failed"] or tests["errors"]:
            failures.append(f"{tests['failed'] + tests['errors']} GPU tests failed")
        elif tests.get("timed_out"):
            unknown.append("the GPU tests were cut at their time limit")
        elif not tests["passed"]:
            unknown.append("every GPU test was skipped")
    for name, record in ((tests or {}).get("files") or {}).items():
        if record.get("sticky"):
            failures.append(f"{name}: {record['sticky']} (the files after it ran in their own processes)")
    sanitize = steps.get("sanitize")
    if sanitize and sanitize.get("rc") is not None:
        if sanitize["ok"]:
            facts.append("compute-sanitizer memcheck: no access error with ids outside [0, E)")
        else:
            failures.append(f"compute-sanitizer memcheck on ids outside [0, E) failed (exit {sanitize['rc']}: 3 is "
                            "an access error, 1 a wrong result)")
    elif sanitize and sanitize.get("timed_out"):
        unknown.append("compute-sanitizer memcheck was cut at its time limit")
    bench = (steps.get("bench") or {}).get("data")
    if not bench or not bench.get("points"):
        unknown.append("the benchmark measured nothing")
    else:
        checked = [(p, impl, r) for p in bench["points"] for impl, r in p["impls"].items() if impl in OURS]
        bad = [f"{p['shape']} T={p['tokens']} {impl}: "
               + (r["error"] if "error" in r else f"{r['rel_err']:.3g} from the reference > {r['tolerance']}")
               for p, impl, r in checked if not r.get("ok")]
        facts.append(f"benchmark: {len(checked) - len(bad)} of {len(checked)} results of ours within tolerance")
        failures += bad
    if failures:
        return False, failures + facts
    if unknown:
        return None, unknown + facts
    return True, facts


def goals(result: dict, correct: bool | None, correct_facts: list[str]) -> list[dict]:
    """Each goal: {"goal", "status": met / missed / not measured, "detail"}."""
    bench = (result.get("steps", {}).get("bench") or {}).get("data") or {}
    points = bench.get("points", [])
    copy = (bench.get("device") or {}).get("copy_tb_s")
    out = [{"goal": GOALS["correct"], "status": {True: "met", False: "missed", None: "not measured"}[correct],
            "detail": "; ".join(correct_facts)}]

    decode = [(p, weight_copy_pct(p, r, copy)) for p in points if p["tokens"] <= DECODE_TOKENS
              for r in [_measured(p, "cuda")] if r and copy]
    out.append(_threshold(GOALS["decode"], decode, DECODE_COPY_PCT, "% of copy"))
    prefill = [(p, r["tflops"]) for p in points if p["tokens"] >= PREFILL_TOKENS
               for r in [_measured(p, "cuda")] if r]
    out.append(_threshold(GOALS["prefill"], prefill, PREFILL_TFLOPS, " TFLOPS"))

    out.append(_faster(GOALS["fastest"], points, BASELINES))
    out.append(_faster(GOALS["engine"], points, ENGINE[:1]))
    return out


def _faster(goal: str, points: list[dict], rivals: tuple[str, ...]) -> dict:
    compared, slower = 0, []
    for p in points:
        cuda = _measured(p, "cuda")
        for other in rivals:
            rival = _measured(p, other)
            if cuda and rival:
                compared += 1
                if cuda["us"] > rival["us"]:
                    slower.append(f"{p['shape']} T={p['tokens']}: {cuda['us']:.1f} us vs {other} {rival['us']:.1f}")
    if not compared:
        return {"goal": goal, "status": "not measured", "detail": f"no point timed CUDA and {' or '.join(rivals)}"}
    return {"goal": goal, "status": "missed" if slower else "met",
            "detail": (f"slower at {len(slower)} of {compared} comparisons: " + "; ".join(slower)) if slower
            else f"faster in all {compared} comparisons"}


def _threshold(goal: str, values: list[tuple[dict, float]], target: float, unit: str) -> dict:
    if not values:
        return {"goal": goal, "status": "not measured", "detail": "no such point timed the CUDA kernel"}
    worst_point, worst = min(values, key=lambda pv: pv[1])
    listed = ", ".join(f"{p['shape']} T={p['tokens']} {v:.0f}{unit}" for p, v in values)
    return {"goal": goal, "status": "met" if worst >= target else "missed", "detail": f"worst {worst:.0f}{unit} "
            f"({worst_point['shape']} T={worst_point['tokens']}); {listed}"}


def exit_code(correct: bool | None) -> int:
    return {True: 0, False: 1, None: 2}[correct]


def judge(result: dict) -> dict:
    correct, facts = correctness(result)
    return {"correct": correct, "goals": goals(result, correct, facts), "exit_code": exit_code(correct)}


# ---- markdown --------------------------------------------------------------------------------------------------

def _step_line(name: str, step: dict | None) -> str:
    if step is None:
        return f"{name}: not run"
    if step.get("skipped"):
        return f"{name}: not run ({step['skipped']})"
    state = "ok" if step.get("ok") else ("timed out" if step.get("timed_out") else f"FAILED (exit {step.get('rc')})")
    return f"{name}: {state} in {step.get('seconds', 0):.0f} s"


def _tail(step: dict | None) -> list[str]:
    if not step or step.get("ok") or not step.get("tail"):
        return []
    return ["", "```", step["tail"].rstrip(), "```"]


def _bench_tables(bench: dict) -> list[str]:
    lines = []
    impls = [i for i in ("cuda", "cuda_channel", "triton", "vllm_triton", "vllm_triton_kernels", "torch",
                         "reference", "vllm")
             if any(i in p["impls"] for p in bench.get("points", []))]
    for shape in dict.fromkeys(p["shape"] for p in bench.get("points", [])):
        points = [p for p in bench["points"] if p["shape"] == shape]
        first = points[0]
        lines += ["", f"**{shape}** (H {first['H']}, I {first['I']}, {first['E']} experts, top-{first['topk']}); "
                      "per implementation: us / % copy / % FP8 peak / distance from the reference", "",
                  "| tokens | experts | MB | " + " | ".join(impls) + " |",
                  "|---:|---:|---:|" + "---|" * len(impls)]
        for p in points:
            cells = []
            for impl in impls:
                r = p["impls"].get(impl)
                if r is None:
                    cells.append("-")
                elif "error" in r:
                    cells.append(f"**error**: {r['error'][:80]}")
                else:
                    flag = "" if r["ok"] else " **over tolerance**"
                    graph = "" if r["mode"] == "graph" else " (eager)"
                    cells.append(f"{r['us']:.1f} / {r['copy_pct']:.0f}% / {r['peak_pct']:.1f}% / "
                                 f"{r['rel_err']:.1e}{flag}{graph}")
            lines.append(f"| {p['tokens']} | {p['experts_touched']} | {p['bytes'] / 1e6:.1f} | " + " | ".join(cells)
                         + " |")
    eager = {(impl, r["mode"]) for p in bench.get("points", []) for impl, r in p["impls"].items()
             if r.get("mode", "graph") != "graph"}
    lines += [""] + [f"- {impl} timed {mode}" for impl, mode in sorted(eager)] if eager else []
    return lines


def markdown(result: dict, verdict: dict) -> str:
    env = result.get("environment", {})
    steps = result.get("steps", {})
    gpu = env.get("gpu") or {}
    bench_step = steps.get("bench") or {}
    bench = bench_step.get("data") or {}
    device = bench.get("device") or {}
    word = {True: "PASS", False: "FAIL", None: "NOT ESTABLISHED"}[verdict["correct"]]
    lines = [f"# GPU check: {gpu.get('name', 'no GPU')}, {result.get('started', '?')}", "",
             f"**Correctness: {word}** (exit {verdict['exit_code']}); {result.get('seconds', 0):.0f} s in all; "
             + "; ".join(_step_line(n, steps.get(n)) for n in ("build", "tests", "sanitize", "bench")), "",
             "## Goals (issues 24 and 30; a miss is a finding, not a failure of the run)", "",
             "| goal | status | detail |", "|---|---|---|"]
    lines += [f"| {g['goal']} | **{g['status']}** | {g['detail']} |" for g in verdict["goals"]]
    lines += ["", "## Environment", ""]
    lines += [f"- {key}: {value}" for key, value in env.items() if key != "gpu"]
    if gpu:
        lines.append(f"- GPU: {gpu.get('name')}, sm_{gpu.get('capability', '?').replace('.', '')}, "
                     f"{gpu.get('sms')} SMs, {gpu.get('memory_gib')} GiB, L2 {gpu.get('l2_mib')} MiB")
    if device:
        lines.append(f"- measured copy bandwidth {device['copy_tb_s']} TB/s (read + write); dense FP8 peak used "
                     f"{device['fp8_peak_tflops']} TFLOPS")
    build = steps.get("build")
    lines += ["", "## 1. Build", "", _step_line("build", build)
              + (f" ({build.get('note')})" if build and build.get("note") else "")]
    if build and build.get("errors"):
        lines += ["", "The compiler's error lines and last lines:", "", "```", build["errors"].rstrip(), "```"]
    else:
        lines += _tail(build)
    tests = steps.get("tests")
    lines += ["", "## 2. Tests (tests/gpu, one process per file)", "", _step_line("tests", tests)]
    if tests and tests.get("passed") is not None:
        lines.append(f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                     f"{tests['skipped']} skipped")
        for name, record in (tests.get("files") or {}).items():
            counts = ", ".join(f"{record[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if record.get(k))
            extra = "; ".join(record[k] for k in ("sticky", "note") if record.get(k))
            lines.append(f"- `{name}`: {_step_line('', record).lstrip(': ')}" + (f"; {counts}" if counts else "")
                         + (f"; **{extra}**" if extra else ""))
        lines += [f"- FAILED `{f['test']}`: {f['message']}" for f in tests.get("failures", [])]
        lines += [f"- skipped `{s['test']}`: {s['reason']}" for s in tests.get("skips", [])]
    lines += _tail(tests)
    sanitize = steps.get("sanitize")
    lines += ["", "## 3. compute-sanitizer memcheck (ids outside [0, E))", "", _step_line("sanitize", sanitize)]
    lines += _tail(sanitize)
    lines += ["", "## 4. Bench (bench/moe_gpu.py)", "", _step_line("bench", steps.get("bench"))]
    lines += [f"- {impl} skipped: {why}" for impl, why in bench.get("skipped", {}).items()]
    if bench.get("stopped"):
        lines.append(f"- stopped early: {bench['stopped']}")
    lines += _bench_tables(bench) + _tail(bench_step)
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict) -> dict:
    """Writes out/gpu-report.md and out/gpu-report.json; returns the verdict."""
    verdict = judge(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-report.json").write_text(json.dumps({**result, "verdict": verdict}, indent=1))
    (out / "gpu-report.md").write_text(markdown(result, verdict))
    return verdict
