"""Fixtures for the GPU-less checks of csrc/cuda: one compile-only sm_90a build per session (cached on disk by a
hash of sources, flags and tool versions, so a rerun costs nothing), and the host build of moe_plan.h.

Missing tools skip with the command that installs them; CI has nvcc and installs the wheels (Makefile)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="session")
def sm90_objects():
    """CompiledKernels for every .cu in csrc/cuda (sm_90a, -Werror on our code)."""
    import cuda_objects

    reason = cuda_objects.missing_compile_tools()
    if reason:
        pytest.skip(f"sm_90a compile checks need nvcc and CUTLASS: {reason}")
    start = time.monotonic()
    built = cuda_objects.compile_kernels()
    took = time.monotonic() - start
    print(f"\nsm_90a kernels {'from cache' if built.cached else 'compiled'} in {took:.1f} s "
          f"(per source when compiled: {built.seconds}) -> {built.directory}")
    return built


@pytest.fixture(scope="session")
def host_plan():
    """moe_host_capi.cpp (moe_plan.h on the host) loaded with ctypes."""
    import ctypes

    import cuda_objects

    try:
        lib = ctypes.CDLL(str(cuda_objects.build_host_library()))
    except cuda_objects.CompileError as exc:
        pytest.skip(f"host build of csrc/cuda/moe_plan.h unavailable: {exc}")
    i64, p = ctypes.c_int64, ctypes.c_void_p
    lib.glm_moe_build_permutation.argtypes = [p, i64, i64, p, p, p, p]
    lib.glm_moe_build_permutation.restype = i64
    lib.glm_moe_problem.argtypes = [ctypes.c_int, i64, i64, i64, i64, i64, i64, p]
    lib.glm_moe_act_scale_index.argtypes = [i64] * 5
    lib.glm_moe_act_scale_index.restype = i64
    lib.glm_moe_choose_config.argtypes = [i64, i64, i64]
    lib.glm_moe_e4m3_encode.argtypes = [p, i64, p]
    lib.glm_moe_workspace.argtypes = [i64] * 7 + [p]
    lib.glm_moe_emulate.argtypes = [p, i64, i64, i64, i64, i64, p, p, p, p, p, p, ctypes.c_int, p]
    lib.glm_moe_emulate_layout.argtypes = [p, i64, i64, i64, i64, i64, p, p, p, p, p, p, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_uint64, p, p, i64]
    lib.glm_moe_row_scale_index.argtypes = [i64] * 3
    lib.glm_moe_row_scale_index.restype = i64
    assert lib.glm_moe_abi_version() == 2
    return lib
