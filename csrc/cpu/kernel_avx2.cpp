// AVX2 + FMA + F16C FP8 dot microkernel: the fallback for x86-64 CPUs without AVX-512 (and the path tests force
// on AVX-512 machines with GLM_PLUGIN_CPU_ISA=avx2). Same e4m3 bit trick as kernel_avx512.cpp, 16 weights a step.
#include <immintrin.h>

#include <cstdint>

#include "fp8_dot.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace glm_plugin_cpu {
namespace {

inline void widen16(const uint8_t* p, __m256& lo, __m256& hi) {
  __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
  lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

constexpr int kPrefetch = 1024;  // bytes ahead in each weight row; see kernel_avx512.cpp

// 16 ymm registers: 4 rows x 2 tokens x 1 set, or 4 rows x 1 token x 2 sets, fit with room for operands.
template <int RB, int NB>
void tile(const uint8_t* w, int64_t ldw, const float* const* x, int64_t K, float* out, int64_t ldo) {
  constexpr int NA = NB == 1 ? 2 : 1;
  __m256 acc[NA][RB][NB];
#pragma GCC unroll 8
  for (int a = 0; a < NA; ++a)
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[a][r][n] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256 xl[NB], xh[NB];
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      xl[n] = _mm256_loadu_ps(x[n] + k);
      xh[n] = _mm256_loadu_ps(x[n] + k + 8);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      __m256 lo, hi;
      if ((k & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(w + r * ldw + k + kPrefetch), _MM_HINT_T0);
      widen16(w + r * ldw + k, lo, hi);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) {
        acc[0][r][n] = _mm256_fmadd_ps(lo, xl[n], acc[0][r][n]);
        acc[NA - 1][r][n] = _mm256_fmadd_ps(hi, xh[n], acc[NA - 1][r][n]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      __m256 s = acc[0][r][n];
      if (NA == 2) s = _mm256_add_ps(s, acc[NA - 1][r][n]);
      float v = hsum(s) * 256.0f;
      for (int64_t t = k; t < K; ++t) v += kE4m3.v[w[r * ldw + t]] * x[n][t];  // K % 16 tail
      out[n * ldo + r] = v;
    }
}

template <int RB>
void rows_block(const uint8_t* w, int64_t ldw, const float* const* x, int ntok, int64_t K, float* out,
                int64_t ldo) {
  int n = 0;
  for (; n + 2 <= ntok; n += 2) tile<RB, 2>(w, ldw, x + n, K, out + n * ldo, ldo);
  if (n < ntok) tile<RB, 1>(w, ldw, x + n, K, out + n * ldo, ldo);
}

}  // namespace

void dot_avx2(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K, float* out,
              int64_t ldo) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) rows_block<4>(w + r * ldw, ldw, x, ntok, K, out + r, ldo);
  for (; r < rows; ++r) rows_block<1>(w + r * ldw, ldw, x, ntok, K, out + r, ldo);
}

}  // namespace glm_plugin_cpu

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
