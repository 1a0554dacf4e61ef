"""glm_plugin/kernels/build_cuda.py's loading rule, with the GPU simulated: an engine process only loads the library
built ahead of time (`python -m glm_plugin.kernels.build_cuda`) and never compiles, opted in or not; the build
command and the GPU check's build step compile; $GLM_PLUGIN_CUDA_NO_BUILD makes even those load only. And a failed
build is reported by the compiler's error lines and last lines, not by its command line."""

from __future__ import annotations

import pytest

from glm_plugin.kernels import build_cuda, jit_cache


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    """A process that sees an sm_90 GPU and every compile tool; records what it compiles and loads."""
    did = {"built": [], "loaded": []}
    monkeypatch.setattr(build_cuda, "_missing_gpu", lambda: None)
    monkeypatch.setattr(build_cuda, "missing_compile_tools", lambda: None)
    monkeypatch.setattr(build_cuda, "extension_dir", lambda: tmp_path)
    monkeypatch.setattr(build_cuda, "_build", lambda verbose: did["built"].append(verbose))
    monkeypatch.setattr(build_cuda, "_load", jit_cache.LoadOnce("CUDA kernels"))
    monkeypatch.delenv(build_cuda.ENV_NO_BUILD, raising=False)
    monkeypatch.setenv("GLM_PLUGIN_GPU_KERNELS", "1")  # opting in changes nothing here
    import torch

    monkeypatch.setattr(torch.ops, "load_library", lambda path: did["loaded"].append(path))
    monkeypatch.setattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", lambda *a: False)
    return did


def test_an_engine_process_loads_the_prebuilt_library_and_compiles_nothing(gpu, tmp_path):
    (tmp_path / f"{build_cuda.EXTENSION_NAME}.so").write_bytes(b"")
    assert build_cuda.load_cuda_extension()
    assert gpu == {"built": [], "loaded": [str(tmp_path / "glm_plugin_cuda.so")]}


def test_without_a_prebuilt_library_an_engine_process_says_which_command_builds_it(gpu, tmp_path):
    assert not build_cuda.load_cuda_extension()
    assert gpu == {"built": [], "loaded": []}
    reason = build_cuda.unavailable_reason()
    assert f"not built ahead of time in {tmp_path}" in reason and "python -m glm_plugin.kernels.build_cuda" in reason
    assert "never compiles inside an engine" in reason


def test_the_build_command_compiles(gpu):
    assert build_cuda.load_cuda_extension(build=True)
    assert gpu["built"] == [False]


def test_no_build_env_makes_even_the_build_command_load_only(gpu, monkeypatch, tmp_path):
    monkeypatch.setenv(build_cuda.ENV_NO_BUILD, "1")
    assert not build_cuda.load_cuda_extension(build=True)
    assert gpu["built"] == []
    assert f"{build_cuda.ENV_NO_BUILD} is set" in build_cuda.unavailable_reason()


def test_a_failed_build_reports_the_compilers_error_not_its_command_line(gpu, monkeypatch):
    nvcc_output = "\n".join(
        ["[1/5] /usr/local/cuda/bin/nvcc " + "-I/some/include " * 60 + "-c moe_fp8_sm90.cu",
         "FAILED: moe_fp8_sm90.cuda.o",
         "moe_fp8_sm90.cu(137): error: identifier \"job\" is undefined",
         "1 error detected in the compilation of \"moe_fp8_sm90.cu\".",
         "ninja: build stopped: subcommand failed."])

    def fail(verbose):
        raise RuntimeError(f"Error building extension 'glm_plugin_cuda': {nvcc_output}")

    monkeypatch.setattr(build_cuda, "_build", fail)
    assert not build_cuda.load_cuda_extension(build=True)
    reason = build_cuda.unavailable_reason()
    assert "moe_fp8_sm90.cu(137): error: identifier \"job\" is undefined" in reason
    assert "-I/some/include" not in reason


def test_the_build_command_prints_the_compilers_error_and_exits_1(gpu, monkeypatch, capsys):
    def fail(verbose):
        raise RuntimeError("Error building extension 'glm_plugin_cuda': [1/5] nvcc -c x.cu\n"
                           "x.cu(3): error: expected a \";\"\nninja: build stopped: subcommand failed.")

    monkeypatch.setattr(build_cuda, "_build", fail)
    assert build_cuda.main([]) == 1
    err = capsys.readouterr().err
    last = err[err.index("NOT built"):]
    assert "x.cu(3): error: expected a \";\"" in last and "ninja: build stopped" in last


def test_compiler_excerpt_keeps_error_lines_and_the_end():
    text = "\n".join(["nvcc -O3 " + "-Iinclude " * 100] + [f"note {i}" for i in range(30)]
                     + ["a.cu(1): error: bad", "more", "last line"])
    excerpt = jit_cache.compiler_excerpt(text, tail=3)
    assert excerpt.splitlines() == ["a.cu(1): error: bad", "...", "more", "last line"]
