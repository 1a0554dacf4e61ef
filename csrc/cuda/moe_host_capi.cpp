// Host build of moe_plan.h behind a C ABI, for tests/cuda_build (loaded with ctypes; no torch, no CUDA).
//
// glm_moe_emulate runs the CUDA op's whole pipeline on the CPU in scalar C++ with the exact buffers, index
// formulas and roundings of the GPU path: permute + 1x128 FP8 activation quantisation, the grouped gate/up GEMM
// reading scales through the CUTLASS MN-major layouts, SiLU-and-mul rounded to the activation dtype and
// re-quantised, the grouped down GEMM, and the weighted gather-reduce (for the channel layout: unit weight scales
// in the GEMMs, each output row's scale applied where SiLU-and-mul and the gather-reduce read it). Comparing it with
// glm_plugin.kernels.reference checks the GPU path's bookkeeping on machines without a GPU.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "moe_plan.h"

using namespace glm_moe;

namespace {

float round_bf16(float f) {  // round-to-nearest-even to bfloat16, back to float
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if (std::isnan(f)) return f;
  b += 0x7fffu + ((b >> 16) & 1u);
  b &= 0xffff0000u;
  float r;
  std::memcpy(&r, &b, 4);
  return r;
}

// Quantises one row of `n` floats into 1x128 groups: q[k] and scales written through act_scale_index.
void quantize_row(const float* x, int64_t n, uint8_t* q, float* scales, int64_t row, int64_t offset, int64_t count) {
  const int64_t kb_n = cdiv(n, kBlock);
  for (int64_t kb = 0; kb < kb_n; ++kb) {
    const int64_t k0 = kb * kBlock, k1 = k0 + kBlock < n ? k0 + kBlock : n;
    float amax = 0.0f;
    for (int64_t k = k0; k < k1; ++k) amax = std::fmax(amax, std::fabs(x[k]));
    const float s = group_scale(amax);
    for (int64_t k = k0; k < k1; ++k) {
      float v = x[k] / s;
      v = std::fmin(std::fmax(v, -kFp8Max), kFp8Max);
      q[k] = e4m3_from_float(v);
    }
    scales[act_scale_index(row, offset, count, kb, kb_n)] = s;
  }
}

// One expert's blockwise-scaled GEMM as CUTLASS computes it: per 128-deep k-block an exact-ish partial sum,
// promoted into the float accumulator with scale_a * scale_b. SFA [Kb, Mb] and SFB [Kb, N] are MN-major.
void grouped_gemm(const Problem& p, const uint8_t* w, const float* sfa, const uint8_t* x, const float* sfb,
                  float* d) {
  float lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = e4m3_to_float(static_cast<uint8_t>(v));
  const int64_t Mb = cdiv(p.M, kBlock), Kb = cdiv(p.K, kBlock);
  const uint8_t* A = w + p.a_offset;
  const uint8_t* B = x + p.b_offset;
  const float* SA = sfa + p.sfa_offset;
  const float* SB = sfb + p.sfb_offset;
  float* D = d + p.d_offset;
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t m = 0; m < p.M; ++m) {
      float acc = 0.0f;
      for (int64_t kb = 0; kb < Kb; ++kb) {
        float part = 0.0f;
        const int64_t k1 = (kb + 1) * kBlock < p.K ? (kb + 1) * kBlock : p.K;
        for (int64_t k = kb * kBlock; k < k1; ++k)
          part += lut[A[m * p.K + k]] * lut[B[n * p.K + k]];
        acc += part * (SA[kb * Mb + m / kBlock] * SB[kb * p.N + n]);
      }
      D[n * p.M + m] = acc;  // column-major M x N == row-major [rows, M]
    }
  }
}

// The GPU pipeline on the host; see glm_moe_emulate_layout.
int emulate(const float* x, int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, const uint8_t* w13,
            const float* w13_scale, const uint8_t* w2, const float* w2_scale, const float* topk_w, const int32_t* ids,
            int round_bf16_act, bool channel, float* out) {
  const int64_t R = T * topk;
  std::vector<int32_t> counts(E), offsets(E + 1), pos(R), src(R);
  const int64_t rows = build_permutation(ids, R, E, counts.data(), offsets.data(), pos.data(), src.data());
  // Weight scales to [E, Kb, Mb] as the transpose kernel does; all 1 for the channel layout (unit_scales).
  auto transpose = [&](const float* s, int64_t M, int64_t K) {
    const int64_t Mb = cdiv(M, kBlock), Kb = cdiv(K, kBlock);
    std::vector<float> t(E * Mb * Kb, 1.0f);
    if (channel) return t;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t mb = 0; mb < Mb; ++mb)
        for (int64_t kb = 0; kb < Kb; ++kb)
          t[weight_scale_t_index(e, mb, kb, Mb, Kb)] = s[weight_scale_index(e, mb, kb, Mb, Kb)];
    return t;
  };
  const std::vector<float> s13 = transpose(w13_scale, 2 * I, H), s2 = transpose(w2_scale, H, I);
  // Stage 0: permute + quantise.
  std::vector<uint8_t> xq(R * H), aq(R * I);
  std::vector<float> xs(R * cdiv(H, kBlock)), as(R * cdiv(I, kBlock)), gate_up(R * 2 * I), y(R * H), act(I);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t p = src[r], e = ids[p];
    quantize_row(x + (p / topk) * H, H, xq.data() + r * H, xs.data(), r, offsets[e], counts[e]);
  }
  // Stage 1: gate/up.
  for (int64_t e = 0; e < E; ++e)
    grouped_gemm(gemm1_problem(e, offsets[e], counts[e], H, I), w13, s13.data(), xq.data(), xs.data(),
                 gate_up.data());
  // SiLU-and-mul (after the channel layout's row scales), rounded to the activation dtype, re-quantised.
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t e = ids[src[r]];
    for (int64_t j = 0; j < I; ++j) {
      float g = gate_up[r * 2 * I + j], u = gate_up[r * 2 * I + I + j];
      if (channel) {
        g *= w13_scale[row_scale_index(e, j, 2 * I)];
        u *= w13_scale[row_scale_index(e, I + j, 2 * I)];
      }
      const float a = g / (1.0f + std::exp(-g)) * u;
      act[j] = round_bf16_act ? round_bf16(a) : a;
    }
    quantize_row(act.data(), I, aq.data() + r * I, as.data(), r, offsets[e], counts[e]);
  }
  // Stage 2: down.
  for (int64_t e = 0; e < E; ++e)
    grouped_gemm(gemm2_problem(e, offsets[e], counts[e], H, I), w2, s2.data(), aq.data(), as.data(), y.data());
  // Weighted gather-reduce in pair order (after the channel layout's row scales).
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (int64_t k = 0; k < topk; ++k) {
        const int64_t p = t * topk + k;
        if (pos[p] < 0) continue;
        float v = y[pos[p] * H + h];
        if (channel) v *= w2_scale[row_scale_index(ids[p], h, H)];
        acc += topk_w[p] * v;
      }
      out[t * H + h] = acc;
    }
  return 0;
}

}  // namespace

extern "C" {

int glm_moe_abi_version() { return 1; }

// Returns the number of rows placed (pairs with an id in [0, E)).
int64_t glm_moe_build_permutation(const int32_t* ids, int64_t R, int64_t E, int32_t* counts, int32_t* offsets,
                                  int32_t* pos, int32_t* src_pair) {
  return build_permutation(ids, R, E, counts, offsets, pos, src_pair);
}

// out[9]: M, N, K, a_offset, b_offset, sfa_offset, sfb_offset, d_offset (stage 1 or 2), then tiles for tile_n.
void glm_moe_problem(int stage, int64_t e, int64_t offset, int64_t count, int64_t H, int64_t I, int64_t tile_n,
                     int64_t* out) {
  const Problem p = stage == 1 ? gemm1_problem(e, offset, count, H, I) : gemm2_problem(e, offset, count, H, I);
  const int64_t v[9] = {p.M, p.N, p.K, p.a_offset, p.b_offset, p.sfa_offset, p.sfb_offset, p.d_offset,
                        tiles_of(p.M, p.N, kTileM, tile_n)};
  std::memcpy(out, v, sizeof(v));
}

int64_t glm_moe_act_scale_index(int64_t row, int64_t offset, int64_t count, int64_t kb, int64_t Kb) {
  return act_scale_index(row, offset, count, kb, Kb);
}

int64_t glm_moe_row_scale_index(int64_t e, int64_t row, int64_t M) { return row_scale_index(e, row, M); }

int glm_moe_choose_config(int64_t T, int64_t topk, int64_t E) { return static_cast<int>(choose_config(T, topk, E)); }

void glm_moe_e4m3_encode(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = e4m3_from_float(x[i]);
}

// out[15]: the Workspace fields in declaration order.
void glm_moe_workspace(int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, int64_t args_bytes,
                       int64_t ws_bytes, int64_t* out) {
  const Workspace w = workspace_layout(T, H, I, E, topk, args_bytes, ws_bytes);
  const int64_t v[15] = {w.counts, w.offsets, w.pos, w.src_pair, w.w13_scale_t, w.w2_scale_t, w.xq, w.xs,
                         w.gate_up, w.aq, w.as, w.y, w.gemm_args, w.gemm_workspace, w.total};
  std::memcpy(out, v, sizeof(v));
}

// The GPU pipeline on the host. x [T, H] float (already representable in the activation dtype), w13 [E, 2I, H]
// and w2 [E, H, I] e4m3 bytes, scales in the checkpoint layout ([E, Mb, Kb] block, [E, M, 1] channel), topk_w
// float and ids int32 [T, topk]. round_bf16_act: round the SiLU-and-mul output to bfloat16 as the op does for
// bfloat16 activations. channel: 1 for per-row weight scales. Pairs with an id outside [0, E) contribute nothing.
// Returns 0.
int glm_moe_emulate_layout(const float* x, int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk,
                           const uint8_t* w13, const float* w13_scale, const uint8_t* w2, const float* w2_scale,
                           const float* topk_w, const int32_t* ids, int round_bf16_act, int channel, float* out) {
  return emulate(x, T, H, I, E, topk, w13, w13_scale, w2, w2_scale, topk_w, ids, round_bf16_act, channel != 0, out);
}

// glm_moe_emulate_layout for block scales.
int glm_moe_emulate(const float* x, int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, const uint8_t* w13,
                    const float* w13_scale, const uint8_t* w2, const float* w2_scale, const float* topk_w,
                    const int32_t* ids, int round_bf16_act, float* out) {
  return emulate(x, T, H, I, E, topk, w13, w13_scale, w2, w2_scale, topk_w, ids, round_bf16_act, false, out);
}

}  // extern "C"
