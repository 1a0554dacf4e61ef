// AVX-512 (F + BW + VL) FP8 dot microkernel. The whole translation unit is compiled for AVX-512 via a target
// pragma rather than a global -mavx512f, so one build serves every x86-64 CPU: the driver only calls
// dot_avx512 after __builtin_cpu_supports says the CPU has it (isa.cpp).
//
// e4m3 -> fp32 bit trick: sign-extend the byte to 16 bits, shift left by 7 and clear bit 14. That yields the
// fp16 with the same sign, exponent field eeee (4 of fp16's 5 bits) and mantissa mmm, whose value is exactly
// 2^-8 times the e4m3 value, subnormals included; vcvtph2ps widens it exactly and the 2^8 is applied once per
// output. No lookup/gather in the loop, no fp32 subnormals (so DAZ/FTZ settings cannot change results).
#include <immintrin.h>

#include <cstdint>

#include "fp8_dot.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

namespace glm_plugin_cpu {
namespace {

inline void widen32(__m256i bytes, __m512& lo, __m512& hi) {
  __m512i h = _mm512_cvtepi8_epi16(bytes);
  h = _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16(static_cast<short>(0xBFFF)));
  lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
  hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

// RB weight rows x NB activation rows. With one or two activation rows the FMA chains are short, so two
// accumulator sets (for the low and high 16 lanes) keep enough FMAs in flight.
// Software prefetch distance (bytes ahead in each weight row): one core streaming several rows is limited by
// its outstanding misses more than by DRAM, and the hardware prefetcher ramps up slowly on short rows.
#ifndef GLM_PLUGIN_PF
#define GLM_PLUGIN_PF 1024
#endif
constexpr int PF = GLM_PLUGIN_PF;

template <int RB, int NB>
void tile(const uint8_t* w, int64_t ldw, const float* const* x, int64_t K, float* out, int64_t ldo) {
  constexpr int NA = NB <= 2 ? 2 : 1;
  __m512 acc[NA][RB][NB];
#pragma GCC unroll 8
  for (int a = 0; a < NA; ++a)
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[a][r][n] = _mm512_setzero_ps();

  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512 xl[NB], xh[NB];
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      xl[n] = _mm512_loadu_ps(x[n] + k);
      xh[n] = _mm512_loadu_ps(x[n] + k + 16);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      __m512 lo, hi;
      if (PF > 0 && (k & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(w + r * ldw + k + PF), _MM_HINT_T0);
      widen32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * ldw + k)), lo, hi);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) {
        acc[0][r][n] = _mm512_fmadd_ps(lo, xl[n], acc[0][r][n]);
        acc[NA - 1][r][n] = _mm512_fmadd_ps(hi, xh[n], acc[NA - 1][r][n]);
      }
    }
  }
  if (k < K) {  // masked tail: lanes past K load as zero in both operands
    const int rem = static_cast<int>(K - k);
    const __mmask32 mb = rem >= 32 ? 0xFFFFFFFFu : ((1u << rem) - 1u);
    const __mmask16 ml = static_cast<__mmask16>(mb & 0xFFFFu);
    const __mmask16 mh = static_cast<__mmask16>(mb >> 16);
    __m512 xl[NB], xh[NB];
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      xl[n] = _mm512_maskz_loadu_ps(ml, x[n] + k);
      xh[n] = _mm512_maskz_loadu_ps(mh, x[n] + k + 16);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      __m512 lo, hi;
      widen32(_mm256_maskz_loadu_epi8(mb, w + r * ldw + k), lo, hi);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) {
        acc[0][r][n] = _mm512_fmadd_ps(lo, xl[n], acc[0][r][n]);
        acc[NA - 1][r][n] = _mm512_fmadd_ps(hi, xh[n], acc[NA - 1][r][n]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      __m512 s = acc[0][r][n];
      if (NA == 2) s = _mm512_add_ps(s, acc[NA - 1][r][n]);
      out[n * ldo + r] = _mm512_reduce_add_ps(s) * 256.0f;
    }
}

template <int RB>
void rows_block(const uint8_t* w, int64_t ldw, const float* const* x, int ntok, int64_t K, float* out,
                int64_t ldo) {
  int n = 0;
  for (; n + 4 <= ntok; n += 4) tile<RB, 4>(w, ldw, x + n, K, out + n * ldo, ldo);
  switch (ntok - n) {
    case 3: tile<RB, 3>(w, ldw, x + n, K, out + n * ldo, ldo); break;
    case 2: tile<RB, 2>(w, ldw, x + n, K, out + n * ldo, ldo); break;
    case 1: tile<RB, 1>(w, ldw, x + n, K, out + n * ldo, ldo); break;
    default: break;
  }
}

}  // namespace

void dot_avx512(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K, float* out,
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
