// Host build of moe_plan.h behind a C ABI, for tests/cuda_build (loaded with ctypes; no torch, no CUDA).
//
// glm_moe_emulate_layout runs the CUDA op's whole pipeline on the CPU in scalar C++ with the exact buffers, index
// formulas and roundings of the GPU path: permute + 1x128 FP8 activation quantisation, the grouped gate/up GEMM
// reading scales through the CUTLASS MN-major layouts, SiLU-and-mul rounded to the activation dtype and
// re-quantised, the grouped down GEMM, and the weighted gather-reduce (for the channel layout: unit weight scales
// in the GEMMs, each output row's scale applied where SiLU-and-mul and the gather-reduce read it). Comparing it with
// glm_plugin.kernels.reference checks the GPU path's bookkeeping on machines without a GPU.
//
// It runs what the GPU runs, not only what a correct run needs: the buffers are carved from one workspace laid out
// by workspace_layout and filled with garbage first (as at::empty hands it over: another call's stale rows and
// pairs, random bits), the permutation writes only the slots the device kernels write, and the per-row stages run
// one emulated block per routed pair (R = T * topk blocks, as launched), each deciding its work with the device's
// own row_job. Every access goes through a bounds-checked view, so a block that follows a stale index is reported
// (which stage, which buffer, which index) instead of silently passing.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
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

// The first out-of-bounds access of an emulated run, by stage and buffer.
struct Faults {
  const char* stage = "setup";
  std::string first;
  void note(const char* buffer, int64_t i, int64_t n) {
    if (!first.empty()) return;
    char text[256];
    std::snprintf(text, sizeof(text), "%s: %s[%lld] outside [0, %lld)", stage, buffer, static_cast<long long>(i),
                  static_cast<long long>(n));
    first = text;
  }
};

// A bounds-checked window on a buffer: an access outside [0, n) is recorded and lands on a scratch value, so the
// run finishes and the fault is reported rather than crashing the test process.
template <class T>
struct View {
  T* data;
  int64_t n;
  const char* name;
  Faults* faults;
  T& operator[](int64_t i) const {
    if (i >= 0 && i < n) return data[i];
    faults->note(name, i, n);
    static thread_local std::remove_const_t<T> scratch;
    scratch = {};
    return scratch;
  }
};

// Quantises one row of `n` floats (x[x0 ..]) into 1x128 groups: q[q0 + k], scales through act_scale_index.
void quantize_row(const View<const float>& x, int64_t x0, int64_t n, const View<uint8_t>& q, int64_t q0,
                  const View<float>& scales, int64_t row, int64_t offset, int64_t count) {
  const int64_t kb_n = cdiv(n, kBlock);
  for (int64_t kb = 0; kb < kb_n; ++kb) {
    const int64_t k0 = kb * kBlock, k1 = k0 + kBlock < n ? k0 + kBlock : n;
    float amax = 0.0f;
    for (int64_t k = k0; k < k1; ++k) amax = std::fmax(amax, std::fabs(x[x0 + k]));
    const float s = group_scale(amax);
    for (int64_t k = k0; k < k1; ++k) {
      float v = x[x0 + k] / s;
      v = std::fmin(std::fmax(v, -kFp8Max), kFp8Max);
      q[q0 + k] = e4m3_from_float(v);
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

// The workspace segment at byte `offset` as a checked view of n elements.
template <class T>
View<T> carve(char* ws, Faults* faults, int64_t offset, int64_t n, const char* name) {
  return View<T>{reinterpret_cast<T*>(ws + offset), n, name, faults};
}

// A reproducible pseudo-random stream (xorshift64*) for the workspace's garbage.
struct Garbage {
  uint64_t state;
  uint32_t next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return static_cast<uint32_t>((state * 0x2545F4914F6CDD1Dull) >> 32);
  }
};

// The GPU pipeline on the host over a garbage-filled workspace; see glm_moe_emulate_layout. Returns 0, or 1 with
// the first out-of-bounds access in `fault`.
int emulate(const float* x, int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, const uint8_t* w13,
            const float* w13_scale, const uint8_t* w2, const float* w2_scale, const float* topk_w, const int32_t* ids,
            int round_bf16_act, bool channel, uint64_t seed, float* out, std::string* fault) {
  const int64_t R = T * topk;
  Faults faults;
  // The workspace as the op allocates it (no CUTLASS segments: the GEMMs below take plain pointers), garbage first.
  const Workspace w = workspace_layout(T, H, I, E, topk, 0, 0);
  std::vector<uint32_t> words(static_cast<size_t>(cdiv(w.total, 4)));
  Garbage g{seed * 0x9E3779B97F4A7C15ull + 1};
  for (uint32_t& word : words) word = g.next();
  char* ws = reinterpret_cast<char*>(words.data());
  const View<int32_t> counts = carve<int32_t>(ws, &faults, w.counts, E, "counts");
  const View<int32_t> offsets = carve<int32_t>(ws, &faults, w.offsets, E + 1, "offsets");
  const View<int32_t> pos = carve<int32_t>(ws, &faults, w.pos, R, "pos");
  const View<int32_t> src_pair = carve<int32_t>(ws, &faults, w.src_pair, R, "src_pair");
  // A reused allocation holds the last call's row and pair numbers: half the slots get such in-range stale values
  // (which send a stray block to a real row), the rest keep random bits (which send it out of bounds).
  for (int64_t r = 0; r < R; ++r) {
    if (g.next() & 1) src_pair.data[r] = static_cast<int32_t>(g.next() % R);
    if (g.next() & 1) pos.data[r] = static_cast<int32_t>(g.next() % R);
  }
  const int64_t Kh = cdiv(H, kBlock), Ki = cdiv(I, kBlock);
  float* s13 = reinterpret_cast<float*>(ws + w.w13_scale_t);
  float* s2 = reinterpret_cast<float*>(ws + w.w2_scale_t);
  const View<uint8_t> xq = carve<uint8_t>(ws, &faults, w.xq, R * H, "xq");
  const View<float> xs = carve<float>(ws, &faults, w.xs, R * Kh, "xs");
  const View<float> gate_up = carve<float>(ws, &faults, w.gate_up, R * 2 * I, "gate_up");
  const View<uint8_t> aq = carve<uint8_t>(ws, &faults, w.aq, R * I, "aq");
  const View<float> as = carve<float>(ws, &faults, w.as, R * Ki, "as");
  const View<float> y = carve<float>(ws, &faults, w.y, R * H, "y");
  const View<const int32_t> ids_v{ids, R, "topk_ids", &faults};
  const View<const float> hidden{x, T * H, "hidden", &faults};
  const View<const float> row13{w13_scale, channel ? E * 2 * I : 0, "w13_scale", &faults};
  const View<const float> row2{w2_scale, channel ? E * H : 0, "w2_scale", &faults};

  // expert_counts / expert_rows: counts and offsets in full, pos for in-range pairs, src_pair for placed rows.
  faults.stage = "expert_rows";
  {
    std::vector<int32_t> c(E), o(E + 1), ps(R), sp(R);
    const int64_t rows = build_permutation(ids, R, E, c.data(), o.data(), ps.data(), sp.data());
    for (int64_t e = 0; e < E; ++e) counts[e] = c[e];
    for (int64_t e = 0; e <= E; ++e) offsets[e] = o[e];
    for (int64_t p = 0; p < R; ++p)
      if (routed_here(ids[p], E)) pos[p] = ps[p];
    for (int64_t r = 0; r < rows; ++r) src_pair[r] = sp[r];
  }
  // Weight scales to [E, Kb, Mb] as the transpose kernel does; all 1 for the channel layout (unit_scales).
  auto transpose = [&](const float* s, int64_t M, int64_t K, float* t) {
    const int64_t Mb = cdiv(M, kBlock), Kb = cdiv(K, kBlock);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t mb = 0; mb < Mb; ++mb)
        for (int64_t kb = 0; kb < Kb; ++kb)
          t[weight_scale_t_index(e, mb, kb, Mb, Kb)] = channel ? 1.0f : s[weight_scale_index(e, mb, kb, Mb, Kb)];
  };
  transpose(w13_scale, 2 * I, H, s13);
  transpose(w2_scale, H, I, s2);

  // permute_quantize: one block per routed pair.
  faults.stage = "permute_quantize";
  for (int64_t r = 0; r < R; ++r) {
    const RowJob job = row_job(r, E, offsets, src_pair, ids_v);
    if (job.pair < 0) continue;
    quantize_row(hidden, (job.pair / topk) * H, H, xq, r * H, xs, r, offsets[job.expert], counts[job.expert]);
  }
  // Grouped GEMM 1 (gate/up): each expert's placed rows only.
  faults.stage = "grouped GEMM 1";
  for (int64_t e = 0; e < E; ++e)
    grouped_gemm(gemm1_problem(e, offsets[e], counts[e], H, I), w13, s13, xq.data, xs.data, gate_up.data);
  // silu_mul_quantize: one block per routed pair; SiLU-and-mul (after the channel layout's row scales), rounded to
  // the activation dtype, re-quantised.
  faults.stage = "silu_mul_quantize";
  std::vector<float> act(I);
  const View<const float> act_v{act.data(), I, "activation row", &faults};
  for (int64_t r = 0; r < R; ++r) {
    const RowJob job = row_job(r, E, offsets, src_pair, ids_v);
    if (job.pair < 0) continue;
    const int32_t e = job.expert;
    for (int64_t j = 0; j < I; ++j) {
      float gv = gate_up[r * 2 * I + j], uv = gate_up[r * 2 * I + I + j];
      if (channel) {
        gv *= row13[row_scale_index(e, j, 2 * I)];
        uv *= row13[row_scale_index(e, I + j, 2 * I)];
      }
      const float a = gv / (1.0f + std::exp(-gv)) * uv;
      act[j] = round_bf16_act ? round_bf16(a) : a;
    }
    quantize_row(act_v, 0, I, aq, r * I, as, r, offsets[e], counts[e]);
  }
  // Grouped GEMM 2 (down).
  faults.stage = "grouped GEMM 2";
  for (int64_t e = 0; e < E; ++e)
    grouped_gemm(gemm2_problem(e, offsets[e], counts[e], H, I), w2, s2, aq.data, as.data, y.data);
  // gather_reduce: weighted, in pair order, in-range pairs only (after the channel layout's row scales).
  faults.stage = "gather_reduce";
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (int64_t k = 0; k < topk; ++k) {
        const int64_t p = t * topk + k;
        const int32_t e = ids_v[p];
        if (!routed_here(e, E)) continue;
        float v = y[static_cast<int64_t>(pos[p]) * H + h];
        if (channel) v *= row2[row_scale_index(e, h, H)];
        acc += topk_w[p] * v;
      }
      out[t * H + h] = acc;
    }
  if (faults.first.empty()) return 0;
  if (fault) *fault = faults.first;
  return 1;
}

}  // namespace

extern "C" {

int glm_moe_abi_version() { return 2; }

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
// bfloat16 activations. channel: 1 for per-row weight scales. garbage_seed: what the workspace holds beforehand.
// Pairs with an id outside [0, E) contribute nothing. Returns 0, or 1 when a stage accessed a buffer out of bounds
// (then `fault` holds the first such access, NUL-terminated, cut to fault_len).
int glm_moe_emulate_layout(const float* x, int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk,
                           const uint8_t* w13, const float* w13_scale, const uint8_t* w2, const float* w2_scale,
                           const float* topk_w, const int32_t* ids, int round_bf16_act, int channel,
                           uint64_t garbage_seed, float* out, char* fault, int64_t fault_len) {
  std::string why;
  const int rc = emulate(x, T, H, I, E, topk, w13, w13_scale, w2, w2_scale, topk_w, ids, round_bf16_act,
                         channel != 0, garbage_seed, out, &why);
  if (fault != nullptr && fault_len > 0) std::snprintf(fault, static_cast<size_t>(fault_len), "%s", why.c_str());
  return rc;
}

// glm_moe_emulate_layout for block scales over one fixed garbage pattern.
int glm_moe_emulate(const float* x, int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, const uint8_t* w13,
                    const float* w13_scale, const uint8_t* w2, const float* w2_scale, const float* topk_w,
                    const int32_t* ids, int round_bf16_act, float* out) {
  return emulate(x, T, H, I, E, topk, w13, w13_scale, w2, w2_scale, topk_w, ids, round_bf16_act, false, 1, out,
                 nullptr);
}

}  // extern "C"
