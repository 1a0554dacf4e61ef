"""The torch.library contract: opcheck on every op (schema, fake/meta shapes, autograd registration, AOT
dispatch), clear shape errors from the fake implementations, and the dispatch rules (choice, forcing, fallback)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from glm_plugin import kernels
from glm_plugin.kernels import reference
from moe_inputs import make_moe

kernels.register_ops()
OPS = torch.ops.glm_plugin


def _linear_args(layout, bias=True):
    w, s = reference.quantize_fp8(torch.randn(96, 160) * 0.1, layout)
    return (torch.randn(2, 3, 160, dtype=torch.bfloat16), w, s, torch.randn(96) if bias else None, layout)


# opcheck's test_schema compares every input before/after the call with torch.allclose, which has no CPU kernel
# for float8_e4m3fn in torch 2.13 ("mul_cpu_reduced_float" not implemented). The FP8 ops therefore run the other
# opcheck utilities, and test_fp8_ops_mutate_and_alias_nothing checks what test_schema would have (inputs
# bitwise unchanged, output aliasing no input) on the raw bytes.
FP8_OPCHECK = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _snapshot(args):
    return [a.view(torch.uint8).clone() if isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn
            else a.clone() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.fixture(params=["auto", "reference"])
def dispatch_mode(request, monkeypatch):
    if request.param == "reference":
        monkeypatch.setenv("GLM_PLUGIN_KERNEL", "reference")
    return request.param


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_opcheck_fp8_moe_experts(layout, dispatch_mode):
    p = make_moe(5, 160, 96, 8, 2, layout)
    torch.library.opcheck(OPS.fp8_moe_experts.default, p.args(), test_utils=FP8_OPCHECK)


@pytest.mark.parametrize("layout", ["block", "channel"])
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck_fp8_linear(layout, bias, dispatch_mode):
    torch.library.opcheck(OPS.fp8_linear.default, _linear_args(layout, bias), test_utils=FP8_OPCHECK)


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_fp8_ops_mutate_and_alias_nothing(layout, dispatch_mode):
    for op, args in ((OPS.fp8_moe_experts, make_moe(5, 160, 96, 8, 2, layout).args()),
                     (OPS.fp8_linear, _linear_args(layout))):
        before = _snapshot(args)
        out = op(*args)
        for a, b in zip(_snapshot(args), before):
            assert not isinstance(a, torch.Tensor) or torch.equal(a, b)
        for a in args:
            if isinstance(a, torch.Tensor):
                assert out.untyped_storage().data_ptr() != a.untyped_storage().data_ptr()


@pytest.mark.parametrize("layout", ["block", "channel"])
def test_empty_routing_gives_zeros(layout, dispatch_mode, cpu_kernels):
    """top-k 0 (`topk_ids` of shape [T, 0]) adds no expert: zeros, as the reference sums, in every implementation
    (the C++ driver once divided by top-k and died with SIGFPE)."""
    p = make_moe(5, 160, 96, 8, 2, layout)
    args = list(p.args())
    args[5], args[6] = p.topk_weights[:, :0].contiguous(), p.topk_ids[:, :0].contiguous()
    for out in (OPS.fp8_moe_experts(*args), reference.fp8_moe_experts(*args), OPS.fp8_moe_experts_cpu(*args)):
        assert out.shape == p.hidden.shape and out.dtype == p.hidden.dtype and not out.any()


def test_fake_shapes_under_meta():
    p = make_moe(5, 160, 96, 8, 2, "block")
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in p.args()]
    out = OPS.fp8_moe_experts(*meta)
    assert out.device.type == "meta" and out.shape == (5, 160) and out.dtype == torch.bfloat16
    x, w, s, b, lay = _linear_args("channel")
    out = OPS.fp8_linear(x.to("meta"), w.to("meta"), s.to("meta"), b.to("meta"), lay)
    assert out.shape == (2, 3, 96) and out.dtype == torch.bfloat16


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.__setitem__(1, a[1].to(torch.bfloat16)), "w13 must be torch.float8_e4m3fn"),
    (lambda a: a.__setitem__(2, a[2][:, :1]), "w13_scale has shape"),
    (lambda a: a.__setitem__(3, a[3][:, :, :64]), "w2 must be"),
    (lambda a: a.__setitem__(6, a[6].float()), "topk_ids must be"),
    (lambda a: a.__setitem__(7, "tensor"), "layout must be 'block'"),
])
def test_fake_rejects_bad_shapes_clearly(mutate, message):
    args = list(make_moe(5, 160, 96, 8, 2, "block").args())
    mutate(args)
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(ValueError, match=message):
        OPS.fp8_moe_experts(*meta)
    with pytest.raises(ValueError, match=message):  # the real implementation checks the same way
        OPS.fp8_moe_experts(*args)


def test_dispatch_prefers_cpp_on_cpu_and_logs_once(cpu_kernels, caplog):
    p = make_moe(2, 64, 32, 4, 2, "block")
    with caplog.at_level(logging.INFO, logger="glm_plugin.kernels"):
        kernels.fp8_moe_experts(*p.args())
        kernels.fp8_moe_experts(*p.args())
    assert kernels.implementation("fp8_moe_experts", "cpu") == "cpp"
    lines = [r.getMessage() for r in caplog.records if "fp8_moe_experts on cpu" in r.getMessage()]
    assert len(lines) == 1 and "cpp" in lines[0], lines


def test_forced_reference_and_bad_forcing(monkeypatch):
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "reference")
    assert kernels.implementation("fp8_moe_experts", "cpu") == "reference"
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "triton")
    with pytest.raises(RuntimeError, match="GLM_PLUGIN_KERNEL=triton but it cannot run"):
        kernels.implementation("fp8_moe_experts", "cpu")
    monkeypatch.setenv("GLM_PLUGIN_KERNEL", "fastest")
    with pytest.raises(ValueError, match="not one of auto"):
        kernels.implementation("fp8_moe_experts", "cpu")


def test_gpu_candidates_absent_here_are_named():
    # No CUDA kernel is registered and triton_fp8_moe may not exist yet: both must report, not raise.
    assert kernels.why_unavailable("cuda", "fp8_moe_experts", "cuda") is not None
    assert kernels.why_unavailable("reference", "fp8_moe_experts", "cuda") is None


def test_the_cuda_kernel_is_offered_only_what_it_implements():
    """csrc/cuda has MoE experts (both scale layouts) and no dense linear: the linear on a GPU goes to the next
    implementation instead of reaching a missing binding, and either layout is refused here only for the reason
    the kernel is not built."""
    assert "no fp8_linear" in kernels.why_unavailable("cuda", "fp8_linear", "cuda", "block")
    reason = kernels.why_unavailable("cuda", "fp8_moe_experts", "cuda", "block")
    assert "CUDA" in reason or "cuda" in reason  # this CPU build of torch: built nowhere, said why
    assert kernels.why_unavailable("cuda", "fp8_moe_experts", "cuda", "channel") == reason


def test_missing_compiler_falls_back_to_reference_with_one_message(tmp_path):
    """A machine without a C++ compiler: the ops still work (reference) and the log says why, once for both."""
    code = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "from glm_plugin import kernels\n"
        "from glm_plugin.kernels import reference as R\n"
        "w, s = R.quantize_fp8(torch.randn(32, 64), 'channel')\n"
        "x = torch.randn(3, 64, dtype=torch.bfloat16)\n"
        "for _ in range(2):\n"
        "    y = kernels.fp8_linear(x, w, s, None, 'channel')\n"
        "    kernels.fp8_moe_experts(x, w.view(1, 32, 64), s.view(1, 32, 1), w.view(64, 32)[:, :16].contiguous().view(1, 64, 16), s.new_ones(1, 64, 1),\n"
        "                            torch.ones(3, 1), torch.zeros(3, 1, dtype=torch.int32), 'channel')\n"
        "assert torch.equal(y, R.fp8_linear(x, w, s, None, 'channel'))\n"
        "print('IMPL', kernels.implementation('fp8_linear', 'cpu'))\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), GLM_PLUGIN_CACHE=str(tmp_path / "cache"))
    env.pop("GLM_PLUGIN_KERNEL", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "IMPL reference" in res.stdout
    warnings = [line for line in res.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0], res.stderr
