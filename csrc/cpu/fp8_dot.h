// FP8 (e4m3) x fp32 dot-product microkernels, one implementation per x86-64 ISA level.
//
// Why this shape: every GEMM in the MoE and in the dense FP8 linear reduces to "a tile of weight rows times a
// few activation rows", and at decode the weight bytes dominate, so the microkernel decodes each FP8 weight
// once (on the fly, in registers) and reuses it for every activation row it is given. The driver (moe.cpp)
// owns scheduling, scales and activations; this header is deliberately free of torch so the ISA translation
// units compile quickly and contain nothing but code for their own instruction set.
#pragma once

#include <cstdint>

namespace glm_plugin_cpu {

// out[n * ldo + r] = sum_{k < K} e4m3(w[r * ldw + k]) * x[n][k]   for r < rows, n < ntok.
// w holds raw float8_e4m3fn bytes; x[n] points at K fp32 values. Scales are applied by the caller.
using DotFn = void (*)(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K,
                       float* out, int64_t ldo);

// The largest number of activation rows a DotFn accepts in one call.
constexpr int kMaxDotTokens = 16;

void dot_scalar(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K, float* out,
                int64_t ldo);
// Defined in kernel_avx2.cpp / kernel_avx512.cpp; call only after checking the CPU (see isa.cpp).
void dot_avx2(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K, float* out,
              int64_t ldo);
void dot_avx512(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K, float* out,
                int64_t ldo);

// e4m3 -> fp32 for all 256 codes, built at compile time (NaN codes 0x7F/0xFF decode to +-480, as the vector
// bit trick does; quantised weights never contain them).
struct E4m3Table {
  float v[256];
};
extern const E4m3Table kE4m3;

}  // namespace glm_plugin_cpu
