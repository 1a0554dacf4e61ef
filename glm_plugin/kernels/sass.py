"""What nvcc made of the sm_90a kernels: per-kernel resources and SASS, read with cuobjdump (no GPU needed).

Why its own module: these are checks on compiled objects (no spills, no local memory, the FP8 warpgroup MMAs
inside the main loops), asked by tests/cuda_build and `python -m glm_plugin.kernels.sass`, not part of building
or loading the kernels. cuobjdump and nvdisasm come from $CUDA_HOME, PATH, next to nvcc, or the
`nvidia-cuda-cuobjdump` / `nvidia-cuda-nvdisasm` wheels. Standard library only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from glm_plugin import settings

from .build_cuda import CompileError, compile_kernels, nvcc_path, wheel_dir

TOOLS_PACKAGES = "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"


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
    """`python -m glm_plugin.kernels.sass`: compile the kernels for sm_90a (build_cuda.compile_kernels; any machine
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
