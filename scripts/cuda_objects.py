"""The sm_90a kernels compiled with nvcc alone (no torch, no GPU) and what nvcc made of them: per-kernel resources
and SASS, read with cuobjdump.

A CI and developer tool, not part of the package: tests/cuda_build and the GPU check (scripts/gpu_check.py) use it
to check compiled objects (no spills, no local memory, the FP8 warpgroup MMAs inside the main loops) and to build
moe_plan.h for the host emulation; `python scripts/cuda_objects.py` prints the report. Objects are cached under a
hash of sources, headers, flags and tool versions. cuobjdump and nvdisasm come from $CUOBJDUMP / $NVDISASM, next to
nvcc, PATH, or the `nvidia-cuda-cuobjdump` / `nvidia-cuda-nvdisasm` wheels. Standard library only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from glm_plugin import settings
from glm_plugin.kernels.build_cuda import (ARCH, HEADERS, KERNEL_SOURCES, CompileError, cutlass_include,
                                           missing_compile_tools, nvcc_flags, nvcc_path, wheel_dir)
from glm_plugin.kernels.jit_cache import cache_root, compiler_excerpt, source_dir

HOST_SOURCE = "cuda/moe_host_capi.cpp"

TOOLS_PACKAGES = "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"


def cuda_include() -> Path | None:
    """The CUDA toolkit's include directory as nvcc sees it (nvcc may be a wrapper script outside the toolkit)."""
    nvcc = nvcc_path()
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "-v", "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
    if m and Path(m.group(1), "include", "cuda_runtime.h").exists():
        return Path(m.group(1), "include").resolve()
    return None


def _tool_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.strip().splitlines()[-1] if out.strip() else "?"


def _source_hash(files: tuple[str, ...], extra: list[str]) -> str:
    h = hashlib.sha256()
    src = source_dir()
    for rel in sorted(files):
        h.update(rel.encode())
        h.update((src / rel).read_bytes())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()[:20]


@dataclasses.dataclass
class CompiledKernels:
    """Objects of one compile-only build of KERNEL_SOURCES for ARCH."""
    directory: Path
    objects: dict[str, Path]
    seconds: dict[str, float]      # wall time per source when it was compiled (from the cache record if cached)
    cached: bool


def compile_kernels(jobs: int = 2, timeout_s: float = 1800.0) -> CompiledKernels:
    """Compiles every kernel source for sm_90a with -Werror (our code); raises CompileError.

    Each object is cached under a hash of its source, all headers, the flags and the tool versions, so editing
    one .cu recompiles only that one (a CUTLASS configuration costs ~1 CPU minute)."""
    reason = missing_compile_tools()
    if reason:
        raise CompileError(reason)
    nvcc = nvcc_path()
    flags = nvcc_flags()
    tools = flags + [_tool_version(nvcc), str(cutlass_include())]
    out = cache_root() / f"cuda-{ARCH}"
    out.mkdir(parents=True, exist_ok=True)
    src = source_dir()
    objects, seconds, todo = {}, {}, []
    for rel in KERNEL_SOURCES:
        obj = out / f"{Path(rel).stem}-{_source_hash((rel,) + HEADERS, tools)}.o"
        objects[rel] = obj
        record = obj.with_suffix(".json")
        if obj.exists() and record.exists():
            seconds[rel] = json.loads(record.read_text())["seconds"]
        else:
            todo.append(rel)

    def one(rel: str) -> None:
        obj = objects[rel]
        tmp = obj.with_name(f"{obj.stem}.{os.getpid()}.tmp.o")
        cmd = [nvcc, *flags, "-c", str(src / rel), "-o", str(tmp)]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise CompileError(f"nvcc failed on {rel} ({' '.join(cmd)}):\n"
                               + compiler_excerpt(proc.stderr + proc.stdout, errors=20, tail=20, limit=6000))
        os.replace(tmp, obj)
        seconds[rel] = round(time.monotonic() - start, 1)
        obj.with_suffix(".json").write_text(json.dumps({"seconds": seconds[rel], "command": cmd}, indent=1))

    # Slowest (CUTLASS) first so the workers finish together.
    todo.sort(key=lambda s: "gemm" not in s)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    return CompiledKernels(out, objects, seconds, cached=not todo)


def build_host_library(directory: Path | None = None) -> Path:
    """moe_plan.h compiled for the host behind moe_host_capi.cpp's C ABI (g++), for ctypes; cached by content."""
    cxx = settings.value("CXX")
    if shutil.which(cxx) is None:
        raise CompileError(f"no C++ compiler ({cxx!r}); install g++")
    src = source_dir()
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"]
    key = _source_hash((HOST_SOURCE, "cuda/moe_plan.h"), flags)
    out = directory or cache_root() / f"cuda-host-{key}"
    lib = out / "libglm_moe_host.so"
    if lib.exists():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"libglm_moe_host.{os.getpid()}.so"
    cmd = [cxx, *flags, f"-I{src / 'cuda'}", str(src / HOST_SOURCE), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise CompileError(f"{' '.join(cmd)} failed:\n{proc.stderr[:4000]}")
    os.replace(tmp, lib)
    return lib


def _tool(name: str) -> str | None:
    nvcc = nvcc_path()
    places = [settings.value(name.upper())]
    if nvcc:
        places.append(os.path.join(os.path.dirname(nvcc), name))
    places.append(shutil.which(name))
    wheel = wheel_dir("nvidia", "cu13", "bin")
    if wheel:
        places.append(str(wheel / name))
    for candidate in places:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def cuobjdump_path() -> str | None:
    return _tool("cuobjdump")


def nvdisasm_path() -> str | None:
    """cuobjdump -sass runs nvdisasm, which nvcc installs do not always ship."""
    return _tool("nvdisasm")


@dataclasses.dataclass
class KernelResources:
    name: str
    registers: int
    stack: int
    local: int
    shared: int


def resource_usage(obj: Path) -> list[KernelResources]:
    """Per-kernel registers / stack / local / static shared bytes from `cuobjdump --dump-resource-usage`."""
    tool = cuobjdump_path()
    if tool is None:
        raise CompileError(f"cuobjdump not found (`pip install {TOOLS_PACKAGES}`)")
    text = subprocess.run([tool, "--dump-resource-usage", str(obj)], capture_output=True, text=True, check=True,
                          timeout=300).stdout
    found = []
    name = None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        if name and "REG:" in line:
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            found.append(KernelResources(name, int(fields["REG"]), int(fields["STACK"]), int(fields["LOCAL"]),
                                         int(fields["SHARED"])))
            name = None
    return found


_ADDR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def sass_functions(obj: Path) -> dict[str, list[tuple[int, str]]]:
    """{kernel: [(address, instruction)]} from `cuobjdump -sass` (needs nvdisasm)."""
    tool, disasm = cuobjdump_path(), nvdisasm_path()
    if tool is None or disasm is None:
        raise CompileError(f"cuobjdump/nvdisasm not found (`pip install {TOOLS_PACKAGES}`)")
    env = dict(os.environ)  # cuobjdump runs the nvdisasm it finds on PATH
    env["PATH"] = os.path.dirname(disasm) + os.pathsep + env.get("PATH", "")
    text = subprocess.run([tool, "-sass", str(obj)], capture_output=True, text=True, check=True, env=env,
                          timeout=600).stdout
    functions: dict[str, list[tuple[int, str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            functions[current] = []
            continue
        m = _ADDR.search(line)
        if current and m:
            functions[current].append((int(m.group(1), 16), m.group(2)))
    return functions


FP8_MMA = re.compile(r"\b[QH]GMMA\.\d+x\d+x\d+\.F32\.E4M3\.E4M3\b")
_BRANCH = re.compile(r"\bBRA\b.*?0x([0-9a-f]+)\s*$")


def fp8_mma_loops(instructions: list[tuple[int, str]]) -> tuple[int, int]:
    """(FP8 warpgroup MMAs, how many of them sit inside a loop: between a backward branch and its target)."""
    mma = [addr for addr, ins in instructions if FP8_MMA.search(ins)]
    loops = []
    for addr, ins in instructions:
        m = _BRANCH.search(ins)
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    in_loop = sum(1 for a in mma if any(lo <= a <= hi for lo, hi in loops))
    return len(mma), in_loop


def main(argv: list[str] | None = None) -> int:
    """`python scripts/cuda_objects.py`: compile the kernels for sm_90a (compile_kernels; any machine
    with nvcc and the CUTLASS headers) and report each kernel's registers, stack, local memory and FP8 MMAs."""
    import argparse

    argparse.ArgumentParser(description=main.__doc__).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        built = compile_kernels()
    except CompileError as exc:
        print(f"glm_plugin CUDA kernels NOT compiled: {exc}", file=sys.stderr)
        return 1
    print(f"objects in {built.directory} ({'cached' if built.cached else 'compiled'}; seconds {built.seconds})")
    for rel, obj in built.objects.items():
        for k in resource_usage(obj):
            print(f"{rel}: {k.registers:3d} regs, stack {k.stack}, local {k.local}  {k.name[:90]}")
        if nvdisasm_path():
            for name, ins in sass_functions(obj).items():
                n, looped = fp8_mma_loops(ins)
                if n:
                    print(f"{rel}: {n} FP8 wgmma ({looped} in a loop)  {name[:90]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
