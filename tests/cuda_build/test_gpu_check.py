"""scripts/gpu_check.py, the prepared H200 check, on a machine without a GPU: `--plan` (what CI can run) prints the
steps, the tools and the travel size and passes its CPU-side checks; the report judges results into the exit
status and the issue's goals (gpu_report.py) on made-up runs; the bench's device peaks and byte counts."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load("scripts/gpu_check.py")
gpu_report = _load("scripts/gpu_report.py")
moe_gpu = _load("bench/moe_gpu.py")


def _fake_carry(folder: Path, member: str = "cutlass_library/source/include/cutlass/cutlass.h") -> Path:
    """A carry folder as `make gpu-carry` leaves it, without the network: a wheel of the right name holding the
    header the check looks for, and the engine kernel's file."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "nvidia_cutlass-4.2.0.0-py3-none-any.whl", "w") as zf:
        zf.writestr(member, "#pragma once\n")
    (folder / "engine").mkdir()
    (folder / "engine" / "vllm_fused_moe_kernel.py").write_text("def fused_moe_kernel(a):\n    pass\n")
    return folder


def _plan(carry: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/gpu_check.py", "--plan", "--carry", str(carry)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_plan_with_the_carry_in_place_prints_steps_tools_travel_and_is_ready(tmp_path):
    proc = _plan(_fake_carry(tmp_path / "carry"))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for step in ("1. build", "2. tests", "3. sanitize", "4. bench", "5. report"):
        assert f"  {step}" in out
    for tool in ("python3", "torch", "triton", "pytest", "nvcc", "CUTLASS headers", "cuobjdump", "ncu", "GPU",
                 "carried wheels", "compute-sanitizer"):
        assert f"\n  {tool} " in out, tool
    assert "carry (what the GPU machine lacks): complete" in out and "\n  MISSING " not in out
    assert "travel: working tree " in out and " MiB of 64 MiB" in out and "TOO LARGE" not in out
    assert "budget: 360 s in all" in out
    checks = [line for line in out.splitlines() if line.startswith("  ok    ")]
    assert [c.split()[1] for c in checks] == ["report", "torch", "tests/gpu", "scripts/gpu_memcheck_case.py"], out
    assert "host logic: 1 passed" in out
    assert out.rstrip().splitlines()[-1].startswith("plan: ready")


def test_plan_with_nothing_carried_exits_1_naming_what_is_missing(tmp_path):
    proc = _plan(tmp_path / "empty")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "  MISSING nvidia-cutlass==4.2.0.0 (the CUTLASS headers the CUDA build includes)" in out
    assert "`make gpu-carry` fetches it" in out
    assert "  MISSING vLLM's Triton fused_moe_kernel (the engine's own FP8 MoE kernel" in out
    assert out.rstrip().splitlines()[-1].startswith("plan: NOT ready: the carry is incomplete (make gpu-carry)")


def test_carry_problems_name_a_missing_or_hollow_wheel(tmp_path):
    assert gpu_check.carry_problems(_fake_carry(tmp_path / "good")) == []
    missing, engine = gpu_check.carry_problems(tmp_path / "none")
    assert missing.startswith("nvidia-cutlass==4.2.0.0") and "make gpu-carry" in missing
    assert engine.startswith("vLLM's Triton fused_moe_kernel") and "make gpu-carry" in engine
    [hollow] = gpu_check.carry_problems(_fake_carry(tmp_path / "hollow", member="README"))
    assert "is not a wheel holding cutlass_library/source/include/cutlass/cutlass.h" in hollow


def test_travel_counts_the_carry_against_64_mib(tmp_path):
    carry = _fake_carry(tmp_path / "carry")
    with open(carry / "big.whl", "wb") as f:  # sparse: counts its size, costs no disk
        f.truncate(65 << 20)
    tree, carried = gpu_check.travel_bytes(carry)
    assert carried > 65 << 20 and tree is not None and tree + carried > gpu_check.TRAVEL_LIMIT


def _verdict(result):
    verdict = gpu_report.judge(result)
    return verdict["exit_code"], {name: g["status"] for name, g in zip(gpu_report.GOALS, verdict["goals"])}


def test_a_clean_run_exits_0_and_judges_each_goal():
    code, status = _verdict(gpu_check.made_up_result())
    # made up: CUDA streams 80 % of the copy bandwidth at 1 token, 567.5 TFLOPS at 4,096, slower than Triton there
    assert code == 0
    # and slower than the engine's kernels there (60 us made up for every point)
    assert status == {"correct": "met", "decode": "met", "prefill": "missed", "fastest": "missed",
                      "engine": "missed"}


@pytest.mark.parametrize("spoil, code", [
    (lambda r: r["steps"]["tests"].update(failed=1, failures=[{"test": "t::x", "message": "boom"}]), 1),
    (lambda r: r["steps"]["bench"]["data"]["points"][0]["impls"]["triton"].update(rel_err=0.5, ok=False), 1),
    (lambda r: r["steps"]["bench"]["data"]["points"][1]["impls"].update(cuda={"error": "RuntimeError: x",
                                                                             "ok": False}), 1),
    (lambda r: r["steps"]["build"].update(ok=False, rc=1, tail="nvcc: error"), 1),
    (lambda r: r["steps"]["tests"].update(passed=0, skipped=46), 2),
    (lambda r: r["steps"]["tests"].update(ok=False, rc=None, timed_out=True), 2),
    (lambda r: r["steps"]["bench"].update(data=None, ok=False, rc=None, timed_out=True), 2),
    (lambda r: r.update(steps={}), 2),
], ids=["test-fails", "bench-over-tolerance", "bench-error", "build-fails", "all-skipped", "tests-cut",
        "bench-timed-out", "no-gpu"])
def test_exit_status_is_decided_by_correctness_alone(spoil, code):
    result = copy.deepcopy(gpu_check.made_up_result())
    spoil(result)
    got, status = _verdict(result)
    assert got == code
    assert status["correct"] == ("missed" if code == 1 else "not measured")


def test_report_files_name_failures_and_goals(tmp_path):
    result = copy.deepcopy(gpu_check.made_up_result())
    result["steps"]["tests"].update(failed=1, failures=[{"test": "tests.gpu.test_x::test_y", "message": "boom"}])
    result["steps"]["build"].update(ok=False, rc=2, tail="nvcc -O3 ...\nmoe_gemm_decode.cu(12): error: no",
                                    errors="moe_gemm_decode.cu(12): error: no")
    result["steps"]["sanitize"].update(ok=False, rc=3)
    verdict = gpu_report.write(tmp_path, result)
    text = (tmp_path / "gpu-report.md").read_text()
    assert verdict["exit_code"] == 1 and "**Correctness: FAIL** (exit 1)" in text
    assert "FAILED `tests.gpu.test_x::test_y`: boom" in text and "moe_gemm_decode.cu(12): error: no" in text
    assert "The compiler's error lines and last lines:" in text
    assert "memcheck on ids outside [0, E) failed (exit 3" in text
    assert "- `test_fp8_moe_cuda.py`: ok in 1 s; 30 passed" in text
    assert all(goal in text for goal in gpu_report.GOALS.values())
    assert "| 4096 | 128 | 2290.0 |" in text  # the bench table
    assert (tmp_path / "gpu-report.json").read_text().count('"exit_code": 1') == 1


def test_junit_summary_counts_outcomes(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite>'
                   '<testcase classname="a" name="ok"/>'
                   '<testcase classname="a" name="bad"><failure message="assert 1 == 2">tb</failure></testcase>'
                   '<testcase classname="a" name="err"><error message="fixture">tb</error></testcase>'
                   '<testcase classname="b" name="gpu"><skipped message="needs a CUDA GPU"/></testcase>'
                   '</testsuite></testsuites>')
    summary = gpu_check.junit_summary(xml)
    assert {k: summary[k] for k in ("passed", "failed", "errors", "skipped")} == \
        {"passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert summary["failures"][0] == {"test": "a::bad", "message": "assert 1 == 2"}
    assert summary["skips"] == [{"test": "b::gpu", "reason": "needs a CUDA GPU"}]


@pytest.mark.parametrize("name, tflops", [("NVIDIA H200", 1979.0), ("NVIDIA H20", 296.0), ("NVIDIA H800", 1979.0),
                                          ("NVIDIA H100 80GB HBM3", 1979.0), ("NVIDIA H100 PCIe", 1513.0)])
def test_bench_fp8_peak_by_device_name(name, tflops):
    assert moe_gpu.fp8_peak_tflops(name) == tflops


def test_bench_counts_the_bytes_and_flops_of_docs_roofline():
    """docs/kernels-cuda.md: GLM-4.5-Air at one token reads 8 experts x 17.3 MB = 138 MB."""
    size = moe_gpu.problem_size(moe_gpu.SHAPES["air"], tokens=1, experts_touched=8)
    assert round(size["weight_bytes"] / 1e6) == 138
    assert size["flops"] == 2 * 8 * 3 * 4096 * 1408


def test_a_step_past_its_limit_is_interrupted_and_its_output_kept(tmp_path):
    """SIGINT first (pytest then still writes its JUnit XML), so the step ends in about its limit, not later."""
    child = "import time\ntry:\n    print('started', flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n" \
            "    print('interrupted', flush=True)\n    raise SystemExit(2)\n"
    with open(tmp_path / "log", "w") as log:  # -S: no site hooks, so the child is waiting well within its limit
        step = gpu_check.run_step("sleep", [sys.executable, "-S", "-c", child], dict(os.environ), 5, log)
    assert step["timed_out"] and step["rc"] is None and not step["ok"]
    assert step["seconds"] < 45  # ended by the interrupt, long before the child's own 60 s (no timing claim)
    assert "started" in step["tail"] and "interrupted" in step["tail"]
    assert "interrupted" in (tmp_path / "log").read_text()


def test_each_gpu_test_file_runs_in_its_own_process_and_a_sticky_error_is_named(tmp_path):
    """One file loses its CUDA context (its output says so, and it fails), one dies without results, one passes:
    the file after the broken ones still runs and passes, and the record names each."""
    files = {
        "test_a_sticky.py": "def test_x():\n    raise RuntimeError('CUDA error: an illegal memory access was "
                            "encountered')\n",
        "test_b_dies.py": "import os\ndef test_x():\n    os._exit(7)\n",
        "test_c_fine.py": "def test_x():\n    assert True\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with open(tmp_path / "log", "w") as log:
        total = gpu_check.run_test_files([str(tmp_path / n) for n in files], dict(os.environ), 200, log,
                                         tmp_path / "junit")
    records = total["files"]
    assert list(records) == list(files)
    assert "illegal memory access" in records["test_a_sticky.py"]["sticky"] and records["test_a_sticky.py"]["failed"]
    assert "the process died" in records["test_b_dies.py"]["note"]
    assert records["test_c_fine.py"]["ok"] and records["test_c_fine.py"]["passed"] == 1
    assert (total["passed"], total["failed"], total["errors"]) == (1, 1, 1) and not total["ok"]
    verdict = gpu_report.judge({"steps": {"tests": total}})
    assert verdict["exit_code"] == 1
    assert any("test_a_sticky.py: 'illegal memory access'" in g["detail"] for g in verdict["goals"])
