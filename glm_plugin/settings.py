"""Every environment variable glm_plugin reads: its name, default and meaning, in one table.

Python code reads them only through `value()` here (tests/layout checks that no other module reads one from
`os.environ`), so this table, docs/install.md's "Environment variables" section and the code cannot drift apart.
A few are read by the C++ kernels with `getenv`; they are listed too, marked `reader="C++"`. Values are read when
asked for, not cached at import: the engines start processes with their own environments, and tests change them.
Standard library only: this is imported at plugin-load time in every engine process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str
    reader: str = "Python"


_SETTINGS = (
    # glm_plugin's own
    Setting("GLM_PLUGIN_DISABLE", "", "comma list of parts to leave to the engine: parsers, model, kernels, or all"),
    Setting("GLM_PLUGIN_GPU_KERNELS", "0", "1: glm_plugin's FP8 MoE kernels on GPUs too (the engines' stay the "
            "default there)"),
    Setting("GLM_PLUGIN_KERNEL", "auto", "force one FP8 MoE implementation: auto, reference, cpp, triton or cuda"),
    Setting("GLM_PLUGIN_CUDA_NO_BUILD", "0", "1: this process never compiles the CUDA kernel, it only loads a "
            "prebuilt one (the GPU check's steps after its build)"),
    Setting("GLM_PLUGIN_CACHE", "", "where compiled kernels are kept (empty: $XDG_CACHE_HOME/glm_plugin)"),
    Setting("GLM_PLUGIN_CPU_ISA", "", "avx2 or scalar: cap the C++ CPU kernel's instruction set", reader="C++"),
    Setting("GLM_PLUGIN_KERNEL_POISON", "", "1: the C++ CPU kernel fills its outputs and scratch with NaN first "
            "(tests)", reader="C++"),
    Setting("GLM_API_KEY", "", "the API key `glm-plugin serve`, `chat`, `check` and `claude-code` use by default"),
    # other tools' variables that glm_plugin honours
    Setting("XDG_CACHE_HOME", "~/.cache", "the cache root when GLM_PLUGIN_CACHE is unset"),
    Setting("CXX", "c++", "the C++ compiler for the CPU kernels and the CUDA kernel's host code"),
    Setting("NVCC", "", "the CUDA compiler (else $CUDA_HOME/bin/nvcc, nvcc on PATH, /usr/local/cuda/bin/nvcc)"),
    Setting("CUDA_HOME", "", "where the CUDA toolkit is, for nvcc"),
    Setting("CUTLASS_INCLUDE", "", "CUTLASS headers for the CUDA kernel (else the nvidia-cutlass wheel's)"),
    Setting("CUOBJDUMP", "", "cuobjdump for reading the CUDA kernel's SASS (else beside nvcc, on PATH, or a wheel's)"),
    Setting("NVDISASM", "", "nvdisasm, found the same way as CUOBJDUMP"),
    Setting("TORCH_CUDA_ARCH_LIST", "", "set to 9.0a while the CUDA kernel builds; yours is restored after"),
    Setting("TRITON_INTERPRET", "", "1: run the Triton kernel in Triton's interpreter on CPU tensors"),
    Setting("CUDA_VISIBLE_DEVICES", "", "the GPUs `glm-plugin serve` counts when --gpus is not given"),
    Setting("ATEN_CPU_CAPABILITY", "", "torch's; avx2 or default also caps the C++ CPU kernel", reader="C++"),
)

SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _SETTINGS}


def value(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value in `environ` (default: this process's), its default when unset or empty."""
    setting = SETTINGS[name]  # a name missing here is a bug: add it to the table (and the docs) first
    return (os.environ if environ is None else environ).get(name) or setting.default


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set at all, empty included (CUDA_VISIBLE_DEVICES="" hides every GPU)."""
    return name in SETTINGS and name in (os.environ if environ is None else environ)
