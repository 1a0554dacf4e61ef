// The grouped FP8 GEMM entry points, one specialisation per shipped configuration
// (moe_gemm_{decode,medium,prefill}.cu). Declared here without CUTLASS, so the orchestration (moe_fp8_sm90.cu)
// compiles in seconds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "moe_plan.h"

namespace glm_moe {

// Everything one grouped GEMM call needs; device pointers, filled per expert on the device.
struct GroupedGemmArgs {
  int stage;                 // 1: gate/up (w13), 2: down (w2)
  int64_t groups;            // experts
  int64_t H, I;
  const int32_t* counts;     // [E] rows per expert
  const int32_t* offsets;    // [E+1] first row per expert
  const uint8_t* w;          // e4m3 expert weights [E, M, K]
  const float* sfa;          // transposed weight scales [E, Kb, Mb]
  const uint8_t* x;          // e4m3 permuted activations [R, K]
  const float* sfb;          // activation scales (act_scale_index)
  float* d;                  // float output [R, M]
  void* args_buffer;         // gemm_args_bytes<C>(groups) bytes
  void* gemm_workspace;      // gemm_workspace_bytes<C>(groups, sm_count) bytes
  int sm_count;
  int device;
};

template <Config C> int64_t gemm_args_bytes(int64_t groups);
template <Config C> int64_t gemm_workspace_bytes(int64_t groups, int sm_count);
// nullptr on success, else a message naming what failed.
template <Config C> const char* run_grouped_gemm(GroupedGemmArgs const& g, cudaStream_t stream);

}  // namespace glm_moe
