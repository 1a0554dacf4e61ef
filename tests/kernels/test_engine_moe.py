"""bench/engine_moe.py, the engine baseline of the GPU bench, on a CPU: the torch stand-in for vLLM's
moe_align_block_size keeps its contract, and vLLM's own Triton fused_moe_kernel, cut out of the vLLM installed here
as `make gpu-carry` does, runs under Triton's interpreter through our launcher to the W8A8 answer."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("engine_moe", ROOT / "bench" / "engine_moe.py")
engine_moe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(engine_moe)


@pytest.mark.parametrize("T,E,topk,block_m", [(1, 8, 2, 16), (37, 8, 3, 16), (64, 160, 8, 64), (5, 4, 4, 16)])
def test_align_block_size_pads_each_experts_pairs_to_whole_blocks(T, E, topk, block_m):
    g = torch.Generator().manual_seed(T)
    ids = torch.stack([torch.randperm(E, generator=g)[:topk] for _ in range(T)]).int()
    sorted_ids, expert_ids, post = engine_moe.align_block_size(ids, E, block_m)
    R, flat = ids.numel(), ids.reshape(-1)
    counts = torch.bincount(flat.long(), minlength=E)
    padded = (counts + block_m - 1) // block_m * block_m
    assert int(post) == int(padded.sum()) and sorted_ids.numel() == R + E * (block_m - 1)
    at = 0
    for e in range(E):
        run = sorted_ids[at:at + padded[e]]
        pairs = (flat == e).nonzero().flatten().int()
        assert torch.equal(run[:counts[e]], pairs)           # the expert's pairs, in pair order
        assert (run[counts[e]:] == R).all()                  # then the sentinel
        assert (expert_ids[at // block_m:(at + padded[e]) // block_m] == e).all()
        at += int(padded[e])
    assert (sorted_ids[at:] == R).all()


RUN = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import engine_moe
    from glm_plugin.kernels import reference
    dest = Path(sys.argv[1])
    print("vllm", engine_moe.extract_vllm_kernel(dest))
    moe_kernel = engine_moe.load_kernel(dest)
    g = torch.Generator().manual_seed(0)
    T, H, I, E, topk = 5, 256, 128, 4, 2
    w13, s13 = reference.quantize_fp8_block(torch.randn(E, 2 * I, H, generator=g) * 0.05)
    w2, s2 = reference.quantize_fp8_block(torch.randn(E, H, I, generator=g) * 0.05)
    hidden = torch.randn(T, H, generator=g).bfloat16()
    ids = torch.rand(T, E, generator=g).topk(topk, dim=-1).indices.int()
    w = torch.rand(T, topk, generator=g)
    outs = [engine_moe.VllmTritonMoE(moe_kernel, w13, s13, w2, s2, swap_ab=swap)(hidden, w, ids).float()
            for swap in (False, True)]  # vLLM swaps A and B on Hopper for small token tiles
    # The W8A8 answer: activations quantised per 1x128 group before each GEMM, as vLLM's path does.
    x = engine_moe.quant_groups(hidden)
    xq = (x[0].float().reshape(T, -1, 128) * x[1][..., None]).reshape(T, H)
    want = torch.zeros(T, H)
    for t in range(T):
        for k in range(topk):
            e = int(ids[t, k])
            gu = xq[t] @ reference.dequantize_fp8(w13[e], s13[e], "block").t()
            act = (torch.nn.functional.silu(gu[:I]) * gu[I:]).bfloat16().float()[None]
            aq = engine_moe.quant_groups(act)
            a = (aq[0].float().reshape(1, -1, 128) * aq[1][..., None]).reshape(1, I)
            want[t] += w[t, k] * (a @ reference.dequantize_fp8(w2[e], s2[e], "block").t())[0]
    oracle = reference.fp8_moe_experts(hidden, w13, s13, w2, s2, w, ids, "block").float()
    rel = lambda a, b: float((a - b).norm() / b.norm())
    for out in outs:
        print("RESULT", rel(out, want), rel(out, oracle))
""")


def test_vllms_kernel_cut_from_the_installed_vllm_runs_to_the_w8a8_answer(tmp_path):
    pytest.importorskip("triton", reason="triton is not installed")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("no vLLM installed here to cut its fused_moe_kernel from")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "engine" / "k.py"), str(ROOT / "bench")],
                          capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert len(lines) == 2, lines
    for line in lines:  # each orientation
        to_w8a8, to_oracle = map(float, line.split()[1:])
        # bf16 intermediates and outputs against float maths: ~0.5 %; the activation quantisation against W8A16: ~4 %
        assert to_w8a8 < 0.02 and to_oracle < 0.08, (to_w8a8, to_oracle)
    head = (tmp_path / "engine" / "k.py").read_text().splitlines()[0]
    assert head.startswith("# vLLM 0.") and "not part of glm_plugin" in head
