"""Builds the sm_90a FP8 MoE CUDA kernels in csrc/cuda as a torch extension, where CUDA torch and nvcc exist.

The `.cu` files include no torch headers, so CI (CPU torch) compiles and inspects them with nvcc alone
(scripts/cuda_objects.py, with this module's flags and tool lookup); only `csrc/cuda/torch_binding.cpp` needs CUDA
torch; `python -m glm_plugin.kernels.build_cuda` compiles it together
with the same `.cu` files through torch.utils.cpp_extension, ahead of time, and engine processes only load the
result (`load_cuda_extension`): no compiler runs inside an engine worker.

Tools are found without network access: nvcc from $NVCC, $CUDA_HOME or PATH; CUTLASS headers from
$CUTLASS_INCLUDE or the `nvidia-cutlass` wheel (cutlass_library/source/include). Missing tools give a reason
naming the package to install, never an exception at import. Standard library only at import.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from glm_plugin import settings

from .jit_cache import LoadOnce, compiler_excerpt, library_dir, source_dir

logger = logging.getLogger("glm_plugin.kernels")

EXTENSION_NAME = "glm_plugin_cuda"
ARCH = "sm_90a"
KERNEL_SOURCES = ("cuda/moe_fp8_sm90.cu", "cuda/moe_gemm_decode.cu", "cuda/moe_gemm_medium.cu",
                  "cuda/moe_gemm_prefill.cu")
BINDING_SOURCE = "cuda/torch_binding.cpp"
HEADERS = ("cuda/moe_plan.h", "cuda/moe_gemm.h", "cuda/moe_gemm_sm90.cuh", "cuda/moe_cuda.h")
CUTLASS_PACKAGE = "nvidia-cutlass==4.2.0.0"

_load = LoadOnce("CUDA kernels")


class CompileError(RuntimeError):
    """nvcc or g++ rejected a source; the message carries the command, the compiler's error lines and last lines."""


def wheel_dir(package: str, *parts: str) -> Path | None:
    """A directory inside an installed (namespace) package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for root in spec.submodule_search_locations or []:
        candidate = Path(root, *parts)
        if candidate.exists():
            return candidate
    return None


def nvcc_path() -> str | None:
    cuda_home = settings.value("CUDA_HOME")
    for candidate in (settings.value("NVCC"), os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None,
                      shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def cutlass_include() -> Path | None:
    env = settings.value("CUTLASS_INCLUDE")
    if env:
        return Path(env) if Path(env, "cutlass", "cutlass.h").exists() else None
    found = wheel_dir("cutlass_library", "source", "include")
    return found if found and (found / "cutlass" / "cutlass.h").exists() else None


def missing_compile_tools() -> str | None:
    """Why nvcc cannot compile the kernels here (None when it can)."""
    if nvcc_path() is None:
        return "nvcc not found (set $NVCC or $CUDA_HOME, or `pip install nvidia-cuda-nvcc`)"
    if cutlass_include() is None:
        return f"CUTLASS headers not found (`pip install --no-deps {CUTLASS_PACKAGE}` or set $CUTLASS_INCLUDE)"
    return None


def nvcc_flags(werror: bool = True) -> list[str]:
    """Flags for our .cu files: CUTLASS as a system include so -Werror applies to our code only."""
    flags = ["-std=c++17", "-O3", "-DNDEBUG", f"-gencode=arch=compute_{ARCH[3:]},code={ARCH}",
             "--expt-relaxed-constexpr", "-Xcompiler=-Wall,-Wextra", f"-I{source_dir() / 'cuda'}"]
    include = cutlass_include()
    if include is not None:
        flags.append(f"-isystem={include}")
    if werror:
        # ptxas then refuses spills and local memory outright; the cuobjdump check in tests/cuda_build confirms.
        flags += ["-Werror=all-warnings", "-Xcompiler=-Werror", "-Xptxas=-warn-spills,-warn-lmem-usage"]
    return flags


# ---- the torch extension (needs CUDA torch) ---------------------------------------------------------------------

ENV_NO_BUILD = "GLM_PLUGIN_CUDA_NO_BUILD"
"""Set (to anything but "" or 0): this process loads a prebuilt extension and never compiles, even when asked to
(scripts/gpu_check.py sets it for its tests and bench, so only its build step ever runs the compiler)."""
BUILD_COMMAND = "python -m glm_plugin.kernels.build_cuda"


def _missing_gpu() -> str | None:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return f"the FP8 MoE CUDA kernel targets sm_90a (H100/H200/H800); this GPU is sm_{major}{minor}"
    return None


def extension_dir() -> Path:
    """Where the torch extension is built and looked for (jit_cache.library_dir: per glm_plugin, torch and Python
    version, so a serving process never loads a library built from another release's sources)."""
    return library_dir("cuda-ext")


def prebuilt_library() -> Path:
    """The library `python -m glm_plugin.kernels.build_cuda` leaves behind, which every later process loads."""
    return extension_dir() / f"{EXTENSION_NAME}.so"


def _no_build_env() -> bool:
    return settings.value(ENV_NO_BUILD).strip() not in ("", "0")


def load_cuda_extension(verbose: bool = False, build: bool = False) -> bool:
    """Loads glm_plugin::fp8_moe_experts_cuda; never raises. True when it is registered.

    An engine process (the dispatcher, build=False) only loads the library built ahead of time by
    `python -m glm_plugin.kernels.build_cuda` (an image recipe runs it once): no compiler ever runs inside an
    engine worker, opted in or not, and without a prebuilt library the reason says which command builds it.
    `build=True` (that command, the GPU tests and the bench) compiles what is missing or changed first, unless
    $GLM_PLUGIN_CUDA_NO_BUILD is set."""
    return _load(lambda: _missing_to_load(build and not _no_build_env()) or _load_library(build, verbose))


def _missing_to_load(build: bool) -> str | None:
    reason = _missing_gpu()
    if reason is None and not build and not prebuilt_library().exists():
        why = f"{ENV_NO_BUILD} is set: this process never compiles" if _no_build_env() else \
            "glm_plugin never compiles inside an engine"
        reason = f"not built ahead of time in {extension_dir()} (`{BUILD_COMMAND}` builds it; {why})"
    if reason is None and build:
        reason = missing_compile_tools()
    return reason


def unavailable_reason() -> str | None:
    """Why `load_cuda_extension()` returned False (None if it succeeded or was not tried)."""
    return _load.reason


def _load_library(build: bool, verbose: bool) -> None:
    import torch

    if torch._C._dispatch_has_kernel_for_dispatch_key("glm_plugin::fp8_moe_experts_cuda", "CUDA"):
        return
    if build:
        _build(verbose)
    else:
        torch.ops.load_library(str(prebuilt_library()))


def _build(verbose: bool) -> None:
    """Compiles (ninja: only what changed) and loads the extension; raises with the compiler's output."""
    from torch.utils import cpp_extension

    src = source_dir()
    build = extension_dir()
    build.mkdir(parents=True, exist_ok=True)
    logger.info("glm_plugin: building the sm_90a FP8 MoE CUDA kernels into %s (about 4 minutes of nvcc on 2 "
                "cores, once per glm_plugin and torch version)", build)
    # torch adds the -gencode flags from TORCH_CUDA_ARCH_LIST: exactly sm_90a here (wgmma and setmaxnreg do not
    # exist on other architectures, and an sm_90 without the "a" cannot use them either). Its
    # -D__CUDA_NO_HALF*_ defines are undone as CUTLASS-based extensions usually do.
    cuda_flags = [f for f in nvcc_flags(werror=False) if not f.startswith("-gencode")]
    cuda_flags += [f"-U__CUDA_NO_{what}__" for what in ("HALF_OPERATORS", "HALF_CONVERSIONS", "HALF2_OPERATORS",
                                                        "BFLOAT16_CONVERSIONS")]
    saved = settings.value("TORCH_CUDA_ARCH_LIST") if settings.is_set("TORCH_CUDA_ARCH_LIST") else None
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0a"
    try:
        cpp_extension.load(
            name=EXTENSION_NAME,
            sources=[str(src / BINDING_SOURCE)] + [str(src / s) for s in KERNEL_SOURCES],
            extra_include_paths=[str(src / "cuda")],
            extra_cflags=["-O3"],  # torch picks the C++ standard its headers need
            extra_cuda_cflags=cuda_flags,
            build_directory=str(build),
            is_python_module=False,
            verbose=verbose,
        )
    finally:
        if saved is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved


def main(argv: list[str] | None = None) -> int:
    """`python -m glm_plugin.kernels.build_cuda`: build and load the extension ahead of time, on a machine with
    CUDA torch, nvcc, the CUTLASS headers and an sm_90 GPU (what an image recipe runs once; engine workers then
    only load it). On failure it prints the compiler's own output, then its error lines and last lines again, and
    exits 1. The compile-only check with its SASS / resource report is `python scripts/cuda_objects.py` (any
    machine with nvcc)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reason = _missing_gpu() or missing_compile_tools()
    if reason is None:
        start = time.monotonic()
        try:
            _build(args.verbose)
        except Exception as exc:  # noqa: BLE001  (the compiler's words are the whole point here)
            print(str(exc), file=sys.stderr, flush=True)
            reason = f"the compiler failed; its error lines and last lines:\n{compiler_excerpt(str(exc))}"
    if reason is not None:
        print(f"glm_plugin CUDA kernels NOT built: {reason}", file=sys.stderr)
        return 1
    print(f"glm_plugin CUDA kernels ready in {time.monotonic() - start:.0f} s: {prebuilt_library()} "
          "(torch.ops.glm_plugin.fp8_moe_experts_cuda; engine workers load it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
