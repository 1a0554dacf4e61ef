// C++ entry point of the sm_90a FP8 MoE experts op, free of torch headers (the binding, torch_binding.cpp, wraps
// it). Semantics: glm_plugin.kernels.reference.fp8_moe_experts for layouts "block" and "channel", with activations
// quantised to e4m3 per 1 x 128 token group on the way into each GEMM (as DeepGEMM and SGLang/vLLM's block-FP8
// paths do; for "channel" too, so both layouts share one GEMM main loop).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace glm_moe {

enum class ActDType : int { kBFloat16 = 0, kHalf = 1, kFloat = 2 };
// Weight scales: 128 x 128 blocks (weight_scale_inv) or one per output row (compressed-tensors channel).
enum class ScaleLayout : int { kBlock = 0, kChannel = 1 };

struct MoeCudaArgs {
  const void* hidden;          // [T, H] in `dtype`
  ActDType dtype;
  int64_t T, H, I, E, topk;
  const uint8_t* w13;          // e4m3 [E, 2I, H]
  ScaleLayout layout;
  const float* w13_scale;      // block: [E, 2I/128, H/128]; channel: [E, 2I, 1]
  const uint8_t* w2;           // e4m3 [E, H, I]
  const float* w2_scale;       // block: [E, H/128, I/128]; channel: [E, H, 1]
  // The two weight scales as the grouped GEMMs read them (MN-major [E, Kb, Mb]; all ones for "channel"), prepared
  // once per weight tensor by moe_prepare_weight_scales; nullptr: prepared in the workspace on every call.
  const float* w13_scale_mn;
  const float* w2_scale_mn;
  const float* topk_weights;   // [T, topk]
  const int32_t* topk_ids;     // [T, topk], each in [0, E)
  void* out;                   // [T, H] in `dtype`
  void* workspace;             // moe_workspace_bytes(...) bytes, 256-byte aligned
  int64_t workspace_bytes;
  int config;                  // -1: choose_config; 0/1/2: decode/medium/prefill tiles (moe_plan.h)
  int device;
};

// Tokens per enqueue the binding splits a larger batch into: the workspace (moe_workspace_bytes) grows with the
// routed rows, and this caps it (1.29 GB at GLM-4.5's shape, docs/kernels-cuda.md) while every expert of a chunk
// still sees enough rows for the prefill tiles.
constexpr int64_t kMaxTokensPerCall = 4096;

// nullptr if the shape is supported, else why not (H and I multiples of 128, non-empty expert set...).
const char* moe_unsupported(int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk);

// Workspace bytes for these sizes on `device` (the CUTLASS workspace depends on the SM count).
int64_t moe_workspace_bytes(int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, int config, int device);

// Bytes of the MN-major weight-scale operand of a weight [E, M, K] (either layout): moe_prepare_weight_scales'
// output.
int64_t moe_weight_scale_mn_bytes(int64_t E, int64_t M, int64_t K);

// Writes weight scales in the checkpoint layout (block [E, Mb, Kb]; channel [E, M, 1]) as the grouped GEMMs'
// operand: transposed to [E, Kb, Mb] for block scales, ones for channel scales (their row scales are applied after
// the GEMMs). Independent of the tokens: the binding runs it once per weight tensor. nullptr on success.
const char* moe_prepare_weight_scales(const float* scale, ScaleLayout layout, int64_t E, int64_t M, int64_t K,
                                      float* out, cudaStream_t stream);

// Enqueues the whole op on `stream`; nullptr on success, else a message naming what failed.
const char* moe_fp8_experts_sm90(MoeCudaArgs const& args, cudaStream_t stream);

}  // namespace glm_moe
