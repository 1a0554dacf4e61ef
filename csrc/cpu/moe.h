// Torch-free entry points of the CPU FP8 kernels (called by csrc/bindings.cpp after it has checked and
// converted the tensors): fused MoE experts and the dense FP8 linear, both on raw row-major buffers.
#pragma once

#include <cstdint>

namespace glm_plugin_cpu {

enum class DType { kFloat, kBFloat16, kHalf };
enum class Layout { kBlock, kChannel };  // 128x128 weight_scale_inv | per-output-row weight_scale

struct MoeArgs {
  const float* x;              // [T, H] activations, widened to fp32
  int64_t T, H, I, E, topk;
  const uint8_t* w13;          // [E, 2I, H] e4m3 (gate rows, then up rows)
  const float* w13_scale;      // block: [E, ceil(2I/128), ceil(H/128)]; channel: [E, 2I]
  const uint8_t* w2;           // [E, H, I] e4m3
  const float* w2_scale;       // block: [E, ceil(H/128), ceil(I/128)]; channel: [E, H]
  const float* topk_weights;   // [T, topk]
  const int64_t* topk_ids;     // [T, topk]; ids outside [0, E) (EP's -1) contribute nothing
  Layout layout;
  DType dtype;                 // activation dtype: the SiLU-and-mul intermediate is rounded to it
  void* out;                   // [T, H] in dtype
};

struct LinearArgs {
  const float* x;              // [M, K]
  int64_t M, K, N;
  const uint8_t* w;            // [N, K] e4m3
  const float* scale;          // block: [ceil(N/128), ceil(K/128)]; channel: [N]
  const float* bias;           // [N] or nullptr
  Layout layout;
  DType dtype;
  void* out;                   // [M, N] in dtype
};

void fp8_moe_experts(const MoeArgs& a);
void fp8_linear(const LinearArgs& a);

// GLM_PLUGIN_KERNEL_POISON=1 fills every output and scratch buffer with NaN before computing, so tests can
// prove each element is written (a skipped tile would otherwise read as plausible zeros or stale memory).
bool poison_requested();

// The microkernel the next call will use: "avx512", "avx2" or "scalar". GLM_PLUGIN_CPU_ISA=avx2|scalar
// (or ATEN_CPU_CAPABILITY=avx2|default) caps it, read at every call so tests can switch paths in-process.
const char* selected_isa();

}  // namespace glm_plugin_cpu
