"""dispatch.KERNELS names only kernels that exist (a binding registers each `*_cpu` / `*_cuda` op, the Triton module
defines each function), and the private C++ ops refuse tensors too small for the shapes they derive even when the
public op's checks are bypassed (csrc/op_checks.h)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from glm_plugin.kernels import dispatch, reference
from glm_plugin.kernels.jit_cache import source_dir
from moe_inputs import make_moe

TRITON_MODULE = Path(dispatch.__file__).with_name("triton_fp8_moe.py")


def _registered_ops(binding: str) -> set[str]:
    return set(re.findall(r'm\.def\("(\w+)\(', (source_dir() / binding).read_text()))


def test_every_kernel_in_the_table_exists():
    cpu_ops, cuda_ops = _registered_ops("bindings.cpp"), _registered_ops("cuda/torch_binding.cpp")
    triton_functions = {n.name for n in ast.parse(TRITON_MODULE.read_text()).body if isinstance(n, ast.FunctionDef)}
    for op, kernels in dispatch.KERNELS.items():
        assert hasattr(reference, op), op
        for impl in kernels:
            present = {"cpp": f"{op}_cpu" in cpu_ops, "cuda": f"{op}_cuda" in cuda_ops,
                       "triton": op in triton_functions}[impl]
            assert present, f"dispatch.KERNELS offers {impl} for {op}, which does not exist"


def test_the_table_is_what_the_policy_offers_on_a_gpu():
    assert dispatch.compiled_kernels("fp8_moe_experts", "cuda", "block") == ("cuda", "triton")
    assert dispatch.compiled_kernels("fp8_moe_experts", "cuda", "channel") == ("cuda", "triton")
    assert dispatch.compiled_kernels("fp8_linear", "cuda", "block") == ()


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_private_cpu_ops_refuse_out_of_bounds_shapes(cpu_kernels, layout):
    p = make_moe(3, 256, 128, 4, 2, layout)
    hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, _ = p.args()
    ops = torch.ops.glm_plugin
    bad = {
        "w2 has shape": (hidden, w13, w13_scale, w2[:, :128].contiguous(), w2_scale, topk_weights, topk_ids),
        "w2_scale has shape": (hidden, w13, w13_scale, w2, w2_scale[:, :1].contiguous(), topk_weights, topk_ids),
        "topk_weights and topk_ids": (hidden, w13, w13_scale, w2, w2_scale, topk_weights[:, :1].contiguous(),
                                      topk_ids),
    }
    for message, args in bad.items():
        with pytest.raises(RuntimeError, match=message):
            ops.fp8_moe_experts_cpu(*args, layout)
    w, s = reference.quantize_fp8(torch.randn(256, 256) * 0.1, layout)
    x = torch.randn(2, 256)
    with pytest.raises(RuntimeError, match="weight_scale has shape"):
        ops.fp8_linear_cpu(x, w, s[:1].contiguous(), None, layout)
    with pytest.raises(RuntimeError, match="bias must have 256 elements"):
        ops.fp8_linear_cpu(x, w, s, torch.zeros(255), layout)
