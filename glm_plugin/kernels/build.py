"""Builds (once, cached) and loads the C++ CPU kernels in csrc/ with torch.utils.cpp_extension.

Why JIT: the wheel stays pure Python, so `pip install` never needs a compiler; the first process that calls a
kernel on CPU compiles csrc/ into a per-torch-version cache directory and every later process just loads the
shared library. Images build ahead of time with `python -m glm_plugin.kernels.build` (same cache, same flags).
One build serves every x86-64 CPU: the AVX-512 and AVX2 microkernels are compiled with target pragmas and the
library picks one at run time.

Anything that stops the build (not x86-64, no compiler, no ninja, a compile error) makes `load_cpu_extension()`
return False, never raise; `unavailable_reason()` says why, and the dispatcher logs it once with its fallback.
"""

from __future__ import annotations

import logging
import platform
import shutil
import sys
from pathlib import Path

from glm_plugin import settings

from .jit_cache import LoadOnce, library_dir, source_dir

logger = logging.getLogger("glm_plugin.kernels")

EXTENSION_NAME = "glm_plugin_cpu"
SOURCES = ("bindings.cpp", "cpu/moe.cpp", "cpu/kernel_avx2.cpp", "cpu/kernel_avx512.cpp")
HEADERS = ("op_checks.h", "cpu/moe.h", "cpu/fp8_dot.h")

_load = LoadOnce("C++ CPU kernels")


def cache_dir() -> Path:
    """Build directory of the CPU library (jit_cache.library_dir: per glm_plugin, torch and Python version)."""
    return library_dir("cpu-kernels")


def _missing_prerequisite() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the CPU kernels are x86-64 only (this machine is {platform.machine()})"
    cxx = settings.value("CXX")
    if shutil.which(cxx) is None:
        return (f"no C++ compiler ({cxx!r} is not on PATH); install one (e.g. `apt-get install g++`) and restart, "
                f"or set GLM_PLUGIN_KERNEL=reference to silence this")
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not installed; `pip install ninja` (torch's JIT extension builder needs it)"
    src = source_dir()
    missing = [s for s in SOURCES + HEADERS if not (src / s).exists()]
    if missing:
        return f"kernel sources missing under {src}: {', '.join(missing)} (broken install; reinstall glm-plugin)"
    return None


def _already_loaded() -> bool:
    import torch

    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("glm_plugin::fp8_moe_experts_cpu", "CPU")
    except RuntimeError:  # op not defined yet
        return False


def load_cpu_extension(verbose: bool = False) -> bool:
    """Compiles (first time) and loads the CPU kernels; True when `torch.ops.glm_plugin.*_cpu` are usable.

    Never raises: on failure `unavailable_reason()` says why."""
    return _load(lambda: _missing_prerequisite() or _build_and_load(verbose))


def unavailable_reason() -> str | None:
    """Why `load_cpu_extension()` returned False (None if it succeeded or was not tried)."""
    return _load.reason


def _build_and_load(verbose: bool) -> None:
    if _already_loaded():
        return
    from torch.utils import cpp_extension

    src = source_dir()
    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    logger.info("glm_plugin: loading C++ CPU kernels (compiled on first use into %s; about a minute)", build)
    # No -march: the baseline objects must run on any x86-64; ISA-specific code is selected by target pragmas.
    cpp_extension.load(
        name=EXTENSION_NAME,
        sources=[str(src / s) for s in SOURCES],
        extra_include_paths=[str(src)],
        extra_cflags=["-O3", "-fno-math-errno", "-fopenmp"],
        extra_ldflags=["-fopenmp"],  # resolves to the libgomp.so.1 torch already loaded: one OpenMP pool
        build_directory=str(build),
        is_python_module=False,
        verbose=verbose,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m glm_plugin.kernels.build`: compile ahead of time (for images) and report the chosen ISA."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not load_cpu_extension(verbose=args.verbose):
        print(f"glm_plugin CPU kernels NOT built: {unavailable_reason()}", file=sys.stderr)
        return 1
    import torch

    print(f"glm_plugin CPU kernels ready in {cache_dir()} (ISA on this CPU: {torch.ops.glm_plugin.cpu_kernel_isa()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
