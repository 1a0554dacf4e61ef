"""csrc/cuda compiled for sm_90a without a GPU: the build is warning-free, every kernel we ship uses no local
memory (no spills, no stack) and reports its registers, and both grouped GEMMs run FP8 warpgroup MMAs
(`QGMMA.*.E4M3.E4M3`, the SASS of wgmma with e4m3 operands) inside their main loop.

Both weight-scale layouts run these same GEMM instantiations: the channel layout (one scale per output row) gives
the blockwise main loop unit weight scales (`unit_scales`) and applies the row scales in the glue kernels that
read the GEMMs' outputs (silu_mul_quantize, gather_reduce), so every check of the GEMMs below holds for it too."""

from __future__ import annotations

import re
import subprocess

import cuda_objects as objdump  # `sass` is a fixture here
import pytest

from glm_plugin.kernels import build_cuda

# source -> CTA tile N
GEMM_SOURCES = {"cuda/moe_gemm_decode.cu": 16, "cuda/moe_gemm_medium.cu": 64, "cuda/moe_gemm_prefill.cu": 128}
GLUE_KERNELS = ("expert_counts", "expert_rows", "transpose_scales", "permute_quantize", "silu_mul_quantize",
                "gather_reduce")


def test_every_source_compiles_for_sm90a(sm90_objects):
    assert set(sm90_objects.objects) == set(build_cuda.KERNEL_SOURCES)
    for obj in sm90_objects.objects.values():
        assert obj.stat().st_size > 0


def test_werror_is_in_force_for_our_code(tmp_path):
    """A warning in our code fails the build (so the clean build above means warning-free)."""
    if build_cuda.missing_compile_tools():
        pytest.skip(build_cuda.missing_compile_tools())
    src = tmp_path / "warns.cu"
    src.write_text("__global__ void k(int* p) { int unused = 3; p[0] = 1; }\n")
    proc = subprocess.run([build_cuda.nvcc_path(), *build_cuda.nvcc_flags(), "-c", str(src), "-o",
                           str(tmp_path / "warns.o")], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "unused" in (proc.stderr + proc.stdout)


def test_local_memory_fails_the_build(tmp_path):
    """ptxas refuses local memory (spills, stack arrays) under our flags, so a clean build already means none."""
    if build_cuda.missing_compile_tools():
        pytest.skip(build_cuda.missing_compile_tools())
    src = tmp_path / "lmem.cu"
    src.write_text("__global__ void k(float* p, int i) {\n"
                   "  float a[1024];\n"
                   "  for (int j = 0; j < 1024; ++j) a[j] = p[j * i];\n"
                   "  p[0] = a[i & 1023];\n"
                   "}\n")
    proc = subprocess.run([build_cuda.nvcc_path(), *build_cuda.nvcc_flags(), "-c", str(src), "-o",
                           str(tmp_path / "lmem.o")], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "Local memory" in (proc.stderr + proc.stdout)


@pytest.fixture(scope="module")
def resources(sm90_objects):
    if objdump.cuobjdump_path() is None:
        pytest.skip(f"cuobjdump not found: pip install {objdump.TOOLS_PACKAGES}")
    return {rel: objdump.resource_usage(obj) for rel, obj in sm90_objects.objects.items()}


def test_no_kernel_spills_or_uses_stack(resources):
    lines = []
    for rel, kernels in resources.items():
        assert kernels, f"no kernels found in {rel}"
        for k in kernels:
            lines.append(f"{rel}: {k.registers} regs, local {k.local} B, stack {k.stack} B, {k.name[:80]}")
            assert k.local == 0 and k.stack == 0, f"{k.name} spills: local {k.local} B, stack {k.stack} B"
            assert 0 < k.registers <= 255
    print("\n" + "\n".join(lines))


def test_every_shipped_instantiation_is_present(resources):
    for rel in GEMM_SOURCES:
        names = [k.name for k in resources[rel]]
        assert sum("GemmUniversal" in n for n in names) == 1, names
        assert sum("fill_group_arguments" in n for n in names) == 1, names
    glue = [k.name for k in resources["cuda/moe_fp8_sm90.cu"]]
    for kernel in GLUE_KERNELS:
        per_dtype = 3 if kernel in ("permute_quantize", "silu_mul_quantize", "gather_reduce") else 1
        assert sum(kernel in n for n in glue) == per_dtype, (kernel, glue)


def test_channel_layout_glue_is_shipped_without_spills(resources):
    glue = [k for k in resources["cuda/moe_fp8_sm90.cu"] if "unit_scales" in k.name]
    assert len(glue) == 1, [k.name for k in resources["cuda/moe_fp8_sm90.cu"]]
    assert glue[0].local == 0 and glue[0].stack == 0 and 0 < glue[0].registers <= 255


def test_gemm_registers_fit_the_cooperative_schedule(resources):
    """384 threads (producer + 2 consumer warpgroups) per CTA: the launch register count must leave one CTA per SM
    possible (65536 / 384 = 170 registers); CUTLASS then rebalances with setmaxnreg."""
    for rel in GEMM_SOURCES:
        gemm = next(k for k in resources[rel] if "GemmUniversal" in k.name)
        assert gemm.registers * 384 <= 65536, gemm.registers


@pytest.fixture(scope="module")
def sass(sm90_objects):
    if objdump.cuobjdump_path() is None or objdump.nvdisasm_path() is None:
        pytest.skip(f"cuobjdump/nvdisasm not found: pip install {objdump.TOOLS_PACKAGES}")
    return {rel: objdump.sass_functions(sm90_objects.objects[rel]) for rel in GEMM_SOURCES}


@pytest.mark.parametrize("rel", sorted(GEMM_SOURCES))
def test_gemm_main_loop_runs_fp8_wgmma(sass, rel):
    functions = sass[rel]
    gemm = [name for name in functions if "GemmUniversal" in name]
    assert len(gemm) == 1
    instructions = functions[gemm[0]]
    total, in_loop = objdump.fp8_mma_loops(instructions)
    assert total > 0, "no FP8 (E4M3 x E4M3) warpgroup MMA in the grouped GEMM"
    assert in_loop == total, f"{total - in_loop} of {total} FP8 MMAs outside any loop"
    shapes = {m.group(0) for _, ins in instructions if (m := objdump.FP8_MMA.search(ins))}
    tile_n = GEMM_SOURCES[rel]
    assert shapes == {f"QGMMA.64x{tile_n}x32.F32.E4M3.E4M3"}, shapes
    print(f"\n{rel}: {total} x {shapes.pop()} in the main loop")


def test_glue_kernels_have_no_mma(sm90_objects):
    """The glue is memory-bound by design; an MMA there would mean a GEMM leaked out of CUTLASS."""
    if objdump.cuobjdump_path() is None or objdump.nvdisasm_path() is None:
        pytest.skip(f"cuobjdump/nvdisasm not found: pip install {objdump.TOOLS_PACKAGES}")
    functions = objdump.sass_functions(sm90_objects.objects["cuda/moe_fp8_sm90.cu"])
    assert functions
    for name, instructions in functions.items():
        assert objdump.fp8_mma_loops(instructions)[0] == 0, name


def test_torch_binding_compiles_against_torch_headers(tmp_path):
    """torch_binding.cpp is only built where CUDA torch exists; a syntax-only g++ pass against this torch's
    headers (plus the CUDA runtime headers and a stub for the one generated CUDA-build header CPU wheels lack)
    catches API drift here."""
    import shutil

    import torch.utils.cpp_extension as ext

    cuda_include = objdump.cuda_include()
    if cuda_include is None or shutil.which("g++") is None:
        pytest.skip("needs nvcc's toolkit (for the CUDA runtime headers) and g++")
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    includes = [f"-isystem{p}" for p in ext.include_paths()] + [f"-isystem{cuda_include}", f"-isystem{tmp_path}"]
    src = build_cuda.source_dir() / build_cuda.BINDING_SOURCE
    proc = subprocess.run(["g++", "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", *includes,
                           f"-I{src.parent}", str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[:3000]


@pytest.mark.parametrize("rel", sorted(GEMM_SOURCES))
def test_gemm_is_warp_specialised_with_tma(sass, rel):
    """The Hopper machinery is really in use: TMA loads (producer) and stores (epilogue), and the producer /
    consumer register split (`setmaxnreg`: producer warps give registers up, MMA warpgroups take them)."""
    name = next(n for n in sass[rel] if "GemmUniversal" in n)
    text = "\n".join(ins for _, ins in sass[rel][name])
    assert "UTMALDG" in text and "UTMASTG" in text
    dealloc = re.findall(r"USETMAXREG\.DEALLOC\S*\s+0x([0-9a-f]+)", text)
    alloc = re.findall(r"USETMAXREG\.TRY_ALLOC\S*\s+\S+\s+0x([0-9a-f]+)", text)
    assert dealloc and alloc, "no setmaxnreg: not the warp-specialised schedule"
    producer, consumer = int(dealloc[0], 16), int(alloc[0], 16)
    assert producer < consumer <= 255
    print(f"\n{rel}: setmaxnreg producer {producer}, consumers {consumer} registers")


def test_objects_link_and_size_their_workspace(sm90_objects, tmp_path):
    """All objects link into one program (no undefined or duplicate symbols, no libcuda needed: CUTLASS reaches
    the driver through the runtime), and the host side of moe_cuda.h answers without a GPU."""
    import pathlib

    exe = tmp_path / "link_smoke"
    arch = f"-gencode=arch=compute_{build_cuda.ARCH[3:]},code={build_cuda.ARCH}"
    driver = pathlib.Path(__file__).with_name("link_smoke.cu")
    cmd = [build_cuda.nvcc_path(), "-std=c++17", arch, f"-I{build_cuda.source_dir() / 'cuda'}", str(driver),
           *map(str, sm90_objects.objects.values()), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[:3000]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.strip().splitlines() if not line.startswith("workspace"))
    sizes = [int(line.split()[2]) for line in run.stdout.splitlines() if line.startswith("workspace")]
    rows, H, I = 64 * 8, 4096, 1408
    floor = rows * (H + 4 * 2 * I + I + 4 * H)  # the e4m3 and float activation buffers alone
    assert len(sizes) == 3 and all(floor < s < 2 * floor for s in sizes), sizes
    assert "multiples of 128" in lines["unsupported"]
    assert "workspace smaller" in lines["run"]
    assert "workspace smaller" in lines["run_channel"]
    assert "block or channel layout" in lines["layout"]
    assert int(lines["scale_mn_bytes"]) == 4 * 128 * 22 * 32
    assert "block or channel layout" in lines["prepare_layout"]
    assert int(lines["max_tokens"]) == 4096
