"""`make gpu-check`: the prepared check of glm_plugin's FP8 MoE kernels on a lent Hopper GPU (H100 or H200), in one
command with no network (docs/kernels-cuda.md, "The GPU check").

  1. build     the CUDA extension with every core (python -m glm_plugin.kernels.build_cuda), timed; on failure the
               compiler's own error lines, and nothing after it compiles again
  2. tests     each tests/gpu file in its own process (a sticky CUDA error costs that file only, and is named)
  3. sanitize  compute-sanitizer memcheck on a small case with routed ids outside [0, E), where the machine has it
  4. bench     bench/moe_gpu.py: GLM-4.5 / 4.5-Air / 4.7-Flash expert shapes at 1 to 4,096 tokens
  5. report    OUT/gpu-report.md and OUT/gpu-report.json (scripts/gpu_report.py); exit 0 / 1 / 2

Why this shape: a GPU comes for minutes (15 in all, the machine's start included), on a machine with its own
python3 (torch, Triton, pytest, nvcc; no vLLM, no SGLang, no project venv), so the script needs only the standard
library itself and runs each step as a child process whose time limit comes out of one budget of 6 minutes: the
report is written, and a step that overruns is cut, with time left for a second try. What the machine lacks (the
CUTLASS headers: nvidia-cutlass; the engine's own FP8 MoE kernel, vLLM's Triton fused_moe_kernel, the bench's
baseline) travels in the ignored folder .gpu-carry/, filled by `make gpu-carry`; wheels are installed into the
ignored .gpu-build/, which also keeps the build and Triton caches, so a rerun on a machine still
warm skips the compile.

`--plan` runs anywhere (CI does, through tests/cuda_build/test_gpu_check.py): the steps, the tools this machine
has, what is carried and what is missing from it, the size of what would travel, and the CPU-side checks (the
report writer on a made-up result, the bench's torch baseline against the reference, tests/gpu collected and
skipped with the GPU hidden). It exits 1, naming what is missing, unless the GPU machine would have everything.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu-carry"          # wheels that travel with the tree (ignored by git; named in the run's carry)
BUILD = ROOT / ".gpu-build"          # what the machine makes: installed wheels, build and Triton caches (ignored)
TRAVEL_LIMIT = 64 << 20              # what the device tool sends: the working tree plus carried paths
BUDGET_S = 360                       # the whole check on an H100: 6 of the 15 lent minutes, so a second try fits
STEP_CAPS = {"build": 200, "tests": 120, "sanitize": 60}  # the bench gets what is left (at least ~40 s)
REPORT_RESERVE_S = 30               # writing the report, and the 15 s a step cut at its limit gets to stop
STICKY = ("illegal memory access", "an illegal instruction", "unspecified launch failure", "misaligned address",
          "CUDA error: device-side assert")  # errors after which every CUDA call of that process fails
MODULES = ("torch", "triton", "pytest", "hypothesis", "numpy")
TEST_ARGS = ["-q", "--noconftest", "-p", "no:cacheprovider", "-rs"]  # tests/conftest.py needs hypothesis
HOST_TESTS = ["tests/kernels/test_triton_moe.py::test_align_groups_pairs_by_expert"]

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import cuda_objects as sass  # noqa: E402  (standard library only at import)
import engine_moe  # noqa: E402
import gpu_report  # noqa: E402

from glm_plugin.kernels import build_cuda  # noqa: E402

SANITIZE_CASE = "scripts/gpu_memcheck_case.py"


# ---- what must travel --------------------------------------------------------------------------------------------

# What the GPU machine's image lacks (docs: .library/device/KINDS.md lists what it has): wheel name and version,
# a member the wheel must hold, and what it is for. The machine has torch, Triton, pytest, hypothesis, numpy,
# ninja, nvcc, compute-sanitizer; no CUTLASS.
_CUTLASS_NAME, _CUTLASS_VERSION = build_cuda.CUTLASS_PACKAGE.split("==")
CARRY_NEEDS = ({"package": build_cuda.CUTLASS_PACKAGE,
                "wheel": f"{_CUTLASS_NAME.replace('-', '_')}-{_CUTLASS_VERSION}-",
                "member": "cutlass_library/source/include/cutlass/cutlass.h",
                "for": "the CUTLASS headers the CUDA build includes"},
               {"package": "vLLM's Triton fused_moe_kernel", "file": "engine/vllm_fused_moe_kernel.py",
                "member": "def fused_moe_kernel(",
                "for": "the engine's own FP8 MoE kernel, the bench's baseline that counts (bench/engine_moe.py)"})


def carry_problems(carry: Path) -> list[str]:
    """What the GPU machine would lack with this carry folder: one line per missing or broken item, naming the
    command that fetches it (empty when everything is there)."""
    import zipfile

    problems = []
    for need in CARRY_NEEDS:
        if "file" in need:
            path = carry / need["file"]
            if not path.is_file():
                problems.append(f"{need['package']} ({need['for']}) is not in {carry}/: `make gpu-carry` cuts it "
                                "out of the vLLM installed there")
            elif need["member"] not in path.read_text(errors="replace"):
                problems.append(f"{path} does not define {need['member'][4:-1]}: run `make gpu-carry` again")
            continue
        wheels = [w for w in carried_wheels(carry) if w.name.startswith(need["wheel"])]
        if not wheels:
            problems.append(f"{need['package']} ({need['for']}) is not in {carry}/: `make gpu-carry` fetches it")
            continue
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                ok = need["member"] in zf.namelist()
        except (OSError, zipfile.BadZipFile):
            ok = False
        if not ok:
            problems.append(f"{wheels[0].name} is not a wheel holding {need['member']}: delete it and run "
                            f"`make gpu-carry`")
    return problems


def fetch_carry(carry: Path) -> int:
    """`make gpu-carry`: pip-downloads every CARRY_NEEDS wheel into `carry` (a machine with network, once)."""
    carry.mkdir(parents=True, exist_ok=True)
    for need in CARRY_NEEDS:
        if "file" in need:
            try:
                version = engine_moe.extract_vllm_kernel(carry / need["file"])
            except (LookupError, OSError) as exc:
                print(f"gpu_check: {need['package']}: {exc}", file=sys.stderr)
                return 1
            print(f"{carry / need['file']}: from vLLM {version}", flush=True)
        elif not any(w.name.startswith(need["wheel"]) for w in carried_wheels(carry)):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", need["package"], "-d", str(carry)]
            print(" ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                print(f"gpu_check: fetching {need['package']} failed", file=sys.stderr)
                return 1
    problems = carry_problems(carry)
    for line in problems:
        print(f"gpu_check: {line}", file=sys.stderr)
    tree, carried = travel_bytes(carry)
    print(f"{carry}: {', '.join(w.name for w in carried_wheels(carry))} ({carried / 2**20:.1f} MiB; with the working "
          f"tree {((tree or 0) + carried) / 2**20:.1f} MiB of {TRAVEL_LIMIT >> 20} MiB)")
    return 1 if problems else 0


# ---- what the machine has --------------------------------------------------------------------------------------

def _version(cmd: list[str], line: int = -1) -> str | None:
    """One line of a tool's version output (ncu ends with the version, nvcc has it second to last, compilers
    begin with it)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [text.strip() for text in (out.stdout or out.stderr).splitlines() if text.strip()]
    return lines[line] if out.returncode == 0 and lines else None


def modules() -> dict[str, str | None]:
    found = {}
    for name in MODULES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def carried_wheels(carry: Path) -> list[Path]:
    return sorted(carry.glob("*.whl")) if carry.is_dir() else []


def install_wheels(carry: Path) -> Path | None:
    """pip-installs the carried wheels (no index, no dependencies) into .gpu-build/site, once per set of wheels;
    returns that folder for PYTHONPATH, or None when nothing is carried or pip fails (the report then shows
    what is missing)."""
    wheels = carried_wheels(carry)
    if not wheels:
        return None
    site = BUILD / "site"
    stamp = site / ".wheels"
    names = "\n".join(w.name for w in wheels)
    if not (stamp.exists() and stamp.read_text() == names):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                               "--no-compile", "--disable-pip-version-check", "--upgrade", "--target", str(site),
                               *map(str, wheels)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            print(f"gpu_check: installing the carried wheels failed:\n{proc.stdout}{proc.stderr}", flush=True)
            return None
        stamp.write_text(names)
    return site


def child_env(site: Path | None) -> dict[str, str]:
    """The steps' environment: this tree and the carried wheels importable, caches in .gpu-build, all cores."""
    paths = [str(ROOT)] + ([str(site)] if site else []) + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1",
                GLM_PLUGIN_CACHE=str(BUILD / "cache"), TRITON_CACHE_DIR=str(BUILD / "triton"),
                MAX_JOBS=str(os.cpu_count() or 1))


def cutlass_source(site: Path | None, carry: Path) -> tuple[str | None, str]:
    """(include folder or None, where it comes from / how to get it)."""
    if site and str(site) not in sys.path:
        sys.path.insert(0, str(site))
    include = build_cuda.cutlass_include()
    if include is None:
        return None, "missing: `make gpu-carry` puts the nvidia-cutlass wheel in .gpu-carry/ (or set $CUTLASS_INCLUDE)"
    if os.environ.get("CUTLASS_INCLUDE"):
        return str(include), "$CUTLASS_INCLUDE"
    if site and site in include.parents:
        return str(include), "the carried nvidia-cutlass wheel"
    if any(w.name.startswith("nvidia_cutlass-") for w in carried_wheels(carry)):
        return str(include), "an installed nvidia-cutlass wheel; the GPU machine gets the carried one"
    return str(include), "an installed nvidia-cutlass wheel; the GPU machine lacks it: carry it (docs/kernels-cuda.md)"


def tools(site: Path | None, carry: Path) -> dict[str, str]:
    found = {"python3": f"{sys.executable} {sys.version.split()[0]}"}
    found.update({name: version or "MISSING" for name, version in modules().items()})
    nvcc = build_cuda.nvcc_path()
    found["nvcc"] = f"{nvcc} ({_version([nvcc, '--version'], -2)})" if nvcc else "MISSING (set $NVCC or $CUDA_HOME)"
    include, where = cutlass_source(site, carry)
    found["CUTLASS headers"] = f"{include} ({where})" if include else where
    for name, locate in (("cuobjdump", sass.cuobjdump_path), ("nvdisasm", sass.nvdisasm_path)):
        found[name] = locate() or "MISSING"
    for name, line in (("ncu", -1), ("ninja", -1), (os.environ.get("CXX", "c++"), 0)):
        path = shutil.which(name)
        found[name] = f"{path} ({_version([path, '--version'], line)})" if path else "MISSING"
    return found


_GPU_FACTS = r"""
import json, torch
facts = {"torch": torch.__version__, "torch CUDA": torch.version.cuda, "gpu": None}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    facts["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                    "memory_gib": round(p.total_memory / 2**30, 1), "l2_mib": round(p.L2_cache_size / 2**20)}
print(json.dumps(facts))
"""


def gpu_facts(env: dict[str, str]) -> dict:
    """torch's view of the GPU, from a child process (this one never initialises CUDA)."""
    try:
        out = subprocess.run([sys.executable, "-c", _GPU_FACTS], capture_output=True, text=True, env=env,
                             timeout=180)
        facts = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {"torch": "not importable", "gpu": None}
    driver = _version(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if driver:
        facts["driver"] = driver
    return facts


def travel_bytes(carry: Path) -> tuple[int | None, int]:
    """(bytes of the working tree the device tool sends: tracked and untracked-not-ignored files, or None
    without git; bytes of the carried folder)."""
    carried = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file()) if carry.is_dir() else 0
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, carried
    files = (ROOT / name for name in listed.decode().split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink()), carried


# ---- the steps --------------------------------------------------------------------------------------------------

def run_step(name: str, cmd: list[str], env: dict[str, str], timeout: float, log) -> dict:
    """Runs one step as a child process group (nvcc and ninja included), its output teed to our stdout and the
    log. At `timeout` the group gets SIGINT (pytest then writes its JUnit XML of the tests so far), and SIGKILL
    15 s later. Returns {ok, rc, seconds, timed_out, tail, command}."""
    header = f"\n==== {name}: {' '.join(cmd)} (limit {timeout:.0f} s)"
    print(header, flush=True)
    log.write(header + "\n")
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)

    def pump():
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            tail.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    sys.stdout.flush()
    log.flush()
    seconds = round(time.monotonic() - start, 1)
    rc = None if timed_out else proc.returncode
    print(f"==== {name}: {'timed out' if timed_out else f'exit {rc}'} after {seconds} s", flush=True)
    return {"ok": rc == 0, "rc": rc, "seconds": seconds, "timed_out": timed_out, "tail": "".join(tail),
            "command": cmd}


def junit_summary(path: Path) -> dict:
    """Counts, failures and skip reasons from pytest's JUnit XML."""
    summary = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skips": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            summary["passed"] += 1
            continue
        message = (outcome.get("message") or outcome.text or "").strip().splitlines()
        text = message[0][:300] if message else ""
        if outcome.tag == "skipped":
            summary["skipped"] += 1
            summary["skips"].append({"test": test, "reason": text})
        else:
            summary["failed" if outcome.tag == "failure" else "errors"] += 1
            summary["failures"].append({"test": test, "message": text})
    return summary


def compute_sanitizer() -> str | None:
    """compute-sanitizer from PATH, beside nvcc, or in /usr/local/cuda (None where the machine lacks it)."""
    nvcc = build_cuda.nvcc_path()
    for candidate in (shutil.which("compute-sanitizer"), nvcc and str(Path(nvcc).parent / "compute-sanitizer"),
                      "/usr/local/cuda/bin/compute-sanitizer"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_files() -> list[str]:
    return sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests" / "gpu").glob("test_*.py"))


def run_test_files(files: list[str], env: dict[str, str], limit: float, log, junit_dir: Path) -> dict:
    """Each file in its own pytest process, so a sticky CUDA error (an illegal address poisons every later CUDA
    call of its process) costs that file only. Returns the summed counts with a record per file."""
    total = {"ok": True, "rc": 0, "seconds": 0.0, "timed_out": False, "tail": "", "passed": 0, "failed": 0,
             "errors": 0, "skipped": 0, "failures": [], "skips": [], "files": {}}
    deadline = time.monotonic() + limit
    junit_dir.mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(files):
        name = Path(rel).name
        # The files left share what is left; a file may use the time an earlier, quicker one did not.
        left = deadline - time.monotonic()
        if left < 5:
            total["files"][name] = {"ok": False, "rc": None, "seconds": 0.0, "timed_out": True,
                                    "note": "not started: the tests' time was spent"}
            total.update(ok=False, timed_out=True)
            continue
        junit = junit_dir / f"{Path(rel).stem}.xml"
        junit.unlink(missing_ok=True)
        step = run_step(f"2. tests {name}", [sys.executable, "-m", "pytest", *TEST_ARGS, f"--junitxml={junit}", rel],
                        env, left, log)
        record = {k: step[k] for k in ("ok", "rc", "seconds", "timed_out")}
        if junit.exists():
            summary = junit_summary(junit)
            record.update({k: summary[k] for k in ("passed", "failed", "errors", "skipped")})
            for key in ("passed", "failed", "errors", "skipped", "failures", "skips"):
                total[key] += summary[key]
        sticky = next((text for text in STICKY if text in step["tail"]), None)
        if sticky:
            record["sticky"] = f"'{sticky}': the CUDA context of this file's process was lost"
        if not junit.exists() and not step["timed_out"]:
            record["note"] = f"pytest wrote no results (exit {step['rc']}): the process died"
            total["errors"] += 1
            total["failures"].append({"test": name, "message": record["note"]})
        if not step["ok"]:
            record["tail"] = step["tail"]
        total["files"][name] = record
        total["seconds"] = round(total["seconds"] + step["seconds"], 1)
        total["ok"] = total["ok"] and step["ok"]
        total["timed_out"] = total["timed_out"] or step["timed_out"]
        if not step["ok"] and total["rc"] == 0:
            total["rc"] = step["rc"]
        total["tail"] = step["tail"] if not step["ok"] else total["tail"]
    return total


def check(out: Path, carry: Path, budget_s: float) -> int:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("tests.xml", "bench.json", "gpu-report.md", "gpu-report.json"):  # from a run into the same folder
        (out / stale).unlink(missing_ok=True)
    BUILD.mkdir(exist_ok=True)
    result: dict = {"started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "steps": {}}

    def left(cap: float = float("inf")) -> float:
        return min(cap, budget_s - (time.monotonic() - started) - REPORT_RESERVE_S)

    def report(final: bool = False) -> int:
        result["seconds"] = round(time.monotonic() - started, 1)
        verdict = gpu_report.write(out, result)
        if final:
            print((out / "gpu-report.md").read_text(), flush=True)
        return verdict["exit_code"]

    missing = carry_problems(carry)
    for line in missing:
        print(f"gpu_check: MISSING {line}", flush=True)
    site = install_wheels(carry)
    env = child_env(site)
    facts = gpu_facts(env)
    result["environment"] = {**tools(site, carry), **{k: v for k, v in facts.items() if k != "gpu"},
                             "gpu": facts.get("gpu"), "budget": f"{budget_s:.0f} s",
                             "carry": "; ".join(missing) or "complete"}
    gpu = facts.get("gpu")
    print(json.dumps(result["environment"], indent=1), flush=True)
    if not gpu:
        print("gpu_check: no CUDA GPU visible to torch: nothing to check (gpu_check.py --plan runs without one)")
        return report(final=True)
    with open(out / "gpu-check.log", "w") as log:
        build = run_step("1. build", [sys.executable, "-m", "glm_plugin.kernels.build_cuda"], env,
                         left(STEP_CAPS["build"]), log)
        build["note"] = f"MAX_JOBS={env['MAX_JOBS']}, cache {env['GLM_PLUGIN_CACHE']}"
        if not build["ok"]:
            build["errors"] = build_cuda.compiler_excerpt(build["tail"])
        result["steps"]["build"] = build
        report()
        # Only the build step compiles: after a failed build the tests and the bench say "not built" at once.
        env[build_cuda.ENV_NO_BUILD] = "1"
        result["steps"]["tests"] = run_test_files(test_files(), env, left(STEP_CAPS["tests"]), log, BUILD / "junit")
        report()
        sanitizer = compute_sanitizer()
        if not build["ok"]:
            result["steps"]["sanitize"] = {"ok": False, "rc": None, "skipped": "the build failed"}
        elif sanitizer is None:
            result["steps"]["sanitize"] = {"ok": False, "rc": None, "skipped": "compute-sanitizer not found"}
        else:
            # Without torch's caching allocator every tensor is its own allocation, so memcheck sees any access
            # outside the op's workspace and inputs.
            result["steps"]["sanitize"] = run_step(
                "3. sanitize", [sanitizer, "--tool", "memcheck", "--error-exitcode", "3", "--print-limit", "20",
                                sys.executable, SANITIZE_CASE],
                dict(env, PYTORCH_NO_CUDA_MEMORY_CACHING="1"), left(STEP_CAPS["sanitize"]), log)
        report()
        bench_json = out / "bench.json"
        limit = left()
        bench = run_step("4. bench", [sys.executable, "bench/moe_gpu.py", "--json", str(bench_json),
                                      "--deadline-s", f"{max(limit - 45, 0):.0f}"], env, limit, log)
        if bench_json.exists():
            bench["data"] = json.loads(bench_json.read_text())
        result["steps"]["bench"] = bench
    return report(final=True)


# ---- --plan ----------------------------------------------------------------------------------------------------

def made_up_result() -> dict:
    """A complete run's result with invented numbers, for the report writer's check."""
    def impl(us, rel, tol, ok=True):
        return {"us": us, "tb_s": 1.0, "copy_pct": 50.0, "tflops": 100.0, "peak_pct": 5.0, "mode": "graph",
                "rel_err": rel, "tolerance": tol, "ok": ok}

    point = {"shape": "GLM-4.5-Air", "key": "air", "H": 4096, "I": 1408, "E": 128, "topk": 8, "tokens": 1,
             "experts_touched": 8, "weight_bytes": 138_000_000, "bytes": 138_100_000, "flops": 2_770_000_000,
             "impls": {"cuda": impl(40.0, 0.045, 0.08), "cuda_channel": impl(41.0, 0.044, 0.08),
                       "triton": impl(90.0, 0.003, 0.02), "vllm_triton": impl(75.0, 0.045, 0.08),
                       "vllm_triton_kernels": impl(60.0, 0.045, 0.08),
                       "torch": impl(70.0, 0.006, 0.02), "reference": impl(900.0, 0.0, 0.0)}}
    prefill = dict(point, tokens=4096, experts_touched=128, weight_bytes=2_215_000_000, bytes=2_290_000_000,
                   flops=1_135_000_000_000, impls={**point["impls"], "cuda": dict(impl(2000.0, 0.045, 0.08),
                                                                                  tflops=567.5)})
    step = {"ok": True, "rc": 0, "seconds": 1.0, "timed_out": False, "tail": ""}
    return {"started": "2026-01-01 00:00 UTC", "seconds": 300.0,
            "environment": {"torch": "2.11.0", "gpu": {"name": "NVIDIA H200", "capability": "9.0", "sms": 132,
                                                       "memory_gib": 139.8, "l2_mib": 60}},
            "steps": {"build": dict(step, seconds=95.0),
                      "tests": dict(step, passed=40, failed=0, errors=0, skipped=6, failures=[], skips=[],
                                    files={"test_fp8_moe_cuda.py": dict(step, passed=30),
                                           "test_fp8_moe_triton.py": dict(step, passed=10),
                                           "test_sglang_e2e.py": dict(step, skipped=6)}),
                      "sanitize": dict(step, seconds=40.0),
                      "bench": dict(step, data={"device": {"name": "NVIDIA H200", "copy_tb_s": 4.3,
                                                           "fp8_peak_tflops": 1979.0},
                                                "skipped": {"vllm": "not importable"}, "stopped": None,
                                                "points": [point, prefill], "correct": True})}}


def _check_report() -> str:
    result = made_up_result()
    with tempfile.TemporaryDirectory() as tmp:
        verdict = gpu_report.write(Path(tmp), result)
        text = (Path(tmp) / "gpu-report.md").read_text()
        json.loads((Path(tmp) / "gpu-report.json").read_text())
    status = {g["goal"]: g["status"] for g in verdict["goals"]}
    assert verdict["exit_code"] == 0, verdict
    assert status[gpu_report.GOALS["prefill"]] == "missed", status  # 567.5 < 600 TFLOPS
    assert all(goal in text for goal in gpu_report.GOALS.values()), "a goal is missing from the report"
    return f"report writer on a made-up run: exit 0, goals {', '.join(status.values())}"


def _check_torch_baseline() -> str:
    import torch

    from glm_plugin.kernels import reference

    spec = importlib.util.spec_from_file_location("moe_gpu", ROOT / "bench" / "moe_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if not hasattr(torch, "_grouped_mm"):
        return f"torch bf16 baseline: not checked (torch {torch.__version__} has no _grouped_mm)"
    g = torch.Generator().manual_seed(0)
    T, H, I, E, k = 9, 256, 128, 6, 2
    w13, s13 = reference.quantize_fp8_block(torch.randn(E, 2 * I, H, generator=g) / H**0.5)
    w2, s2 = reference.quantize_fp8_block(torch.randn(E, H, I, generator=g) / I**0.5)
    hidden = torch.randn(T, H, generator=g).to(torch.bfloat16)
    ids = torch.rand(T, E, generator=g).topk(k, dim=-1).indices.to(torch.int32)
    weights = torch.rand(T, k, generator=g)
    bf16 = [reference.dequantize_fp8(w, s, "block").to(torch.bfloat16).transpose(1, 2) for w, s in
            ((w13, s13), (w2, s2))]
    actual = bench.torch_bf16_moe(hidden, *bf16, weights, ids).float()
    expected = reference.fp8_moe_experts(hidden, w13, s13, w2, s2, weights, ids, "block").float()
    rel = float((actual - expected).norm() / expected.norm())
    assert rel < bench.TOLERANCE["torch"], f"torch bf16 baseline is {rel:.3g} from the reference"
    return f"torch bf16 baseline (bench/moe_gpu.py) on CPU: {rel:.1e} from the reference"


def _check_gpu_tests(env: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "plan.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", *TEST_ARGS, f"--junitxml={junit}", "tests/gpu",
                               *HOST_TESTS], cwd=ROOT, env=dict(env, CUDA_VISIBLE_DEVICES=""), capture_output=True,
                              text=True, timeout=240)
        if not junit.exists():
            raise AssertionError(f"pytest did not run (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                                 f"{proc.stderr[-2000:]}")
        summary = junit_summary(junit)
    assert proc.returncode == 0 and not summary["failed"] and not summary["errors"], summary["failures"]
    assert summary["passed"] == len(HOST_TESTS), summary
    unclear = [s for s in summary["skips"] if "GPU" not in s["reason"]]
    assert summary["skipped"] and not unclear, f"skipped without naming the GPU: {unclear}"
    per_file = collections.Counter(s["test"].split("::")[0].rsplit(".", 1)[-1] for s in summary["skips"])
    return (f"tests/gpu with the GPU hidden: {summary['skipped']} collected and skipped, each naming the GPU it "
            f"needs ({', '.join(f'{name} {n}' for name, n in sorted(per_file.items()))}); host logic: "
            f"{summary['passed']} passed")


def _check_sanitize_case() -> str:
    source = (ROOT / SANITIZE_CASE).read_text()
    compile(source, SANITIZE_CASE, "exec")
    return f"{SANITIZE_CASE} compiles (step 3 runs it under compute-sanitizer memcheck)"


def plan(carry: Path) -> int:
    started = time.monotonic()
    print(__doc__.split("\n\n")[1].rstrip())
    site = BUILD / "site" if (BUILD / "site" / ".wheels").exists() else None
    print("\ntools on this machine:")
    for name, value in tools(site, carry).items():
        print(f"  {name:16} {value}")
    env = child_env(site)
    facts = gpu_facts(env)
    gpu = facts.get("gpu")
    print(f"  {'GPU':16} " + (f"{gpu['name']} (sm_{gpu['capability'].replace('.', '')})" if gpu
                              else f"none visible to torch {facts.get('torch')} (the steps need an sm_90 GPU)"))
    wheels = carried_wheels(carry)
    print(f"  {'carried wheels':16} " + (", ".join(w.name for w in wheels) if wheels else f"none in {carry}/"))
    sanitizer = compute_sanitizer()
    print(f"  {'compute-sanitizer':16} {sanitizer or 'MISSING here (the GPU machine has it; step 3 skips without)'}")
    missing = carry_problems(carry)
    print("\ncarry (what the GPU machine lacks): " + ("complete" if not missing else ""))
    for line in missing:
        print(f"  MISSING {line}")
    tree, carried = travel_bytes(carry)
    total = (tree or 0) + carried
    fits = total <= TRAVEL_LIMIT
    print(f"\ntravel: working tree {'?' if tree is None else f'{tree / 2**20:.1f} MiB'} + {carry.name}/ "
          f"{carried / 2**20:.1f} MiB = {total / 2**20:.1f} MiB of {TRAVEL_LIMIT >> 20} MiB"
          + ("" if fits else "  TOO LARGE: the device tool refuses it"))
    caps = ", ".join(f"{name} <= {cap} s" for name, cap in STEP_CAPS.items())
    print(f"budget: {BUDGET_S} s in all ({caps}, the bench what is left, {REPORT_RESERVE_S} s for the report)")
    print("\nCPU-side checks:")
    failed = 0
    for check_fn in (_check_report, _check_torch_baseline, lambda: _check_gpu_tests(env), _check_sanitize_case):
        try:
            print(f"  ok    {check_fn()}", flush=True)
        except Exception as exc:  # noqa: BLE001  (every check runs and reports)
            failed += 1
            print(f"  FAIL  {type(exc).__name__}: {exc}", flush=True)
    ready = fits and not failed and not missing
    why = [*(["the carry is incomplete (make gpu-carry)"] if missing else []),
           *(["the travel is over 64 MiB"] if not fits else []),
           *([f"{failed} CPU-side checks failed"] if failed else [])]
    print(f"\nplan: {'ready' if ready else 'NOT ready: ' + '; '.join(why)} ({time.monotonic() - started:.0f} s)")
    return 0 if ready else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-report", help="folder for the report and logs")
    parser.add_argument("--plan", action="store_true", help="print the steps and run the CPU-side checks only")
    parser.add_argument("--carry", type=Path, default=CARRY, help="folder of carried wheels")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole check's time limit")
    parser.add_argument("--fetch-carry", action="store_true",
                        help="download what the GPU machine lacks into --carry (make gpu-carry; needs network)")
    args = parser.parse_args(argv)
    if args.fetch_carry:
        return fetch_carry(args.carry)
    if args.plan:
        return plan(args.carry)
    return check(args.out.resolve(), args.carry, args.budget_s)


if __name__ == "__main__":
    sys.exit(main())
