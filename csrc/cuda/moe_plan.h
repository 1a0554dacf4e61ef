// The MoE bookkeeping shared by the CUDA kernels and the host: routing -> per-expert row blocks, GEMM problem
// sizes per expert, where every scale lives, the workspace layout, tile counts and FP8 e4m3 rounding.
//
// Why one header for both sides: every index formula the GPU uses is compiled for the host too and tested there
// against the PyTorch reference (tests/cuda_build/), so an off-by-one in scale indexing or in the expert
// permutation shows up in CI on machines without a GPU. No CUDA or torch headers: plain C++17 (with
// __host__ __device__ under nvcc).
//
// Conventions (the "swap-AB" grouped GEMM, see docs/kernels-cuda.md):
//   R = T * topk routed rows. Pair p = t * topk + k routes token t to expert ids[p].
//   Rows are grouped by expert (expert 0's rows first); inside an expert they keep pair order (a stable sort),
//   so the permutation is deterministic.
//   GEMM of expert e: D[m, n] = sum_k W_e[m, k] * X_e[n, k]; M = weight rows (2I or H), N = the expert's rows,
//   K = H or I. CUTLASS sees A = W_e (row-major M x K), B = X_e (row-major N x K), D column-major M x N, which
//   is the row-major [rows, M] activation the next step reads.
//   Scales (SM90 CUTLASS blockwise scaling reads MN-major scales only):
//     weights: checkpoint layout [E, Mb, Kb] (K-major) is transposed to [E, Kb, Mb], once per weight tensor.
//     activations (1 x 128 token groups): per expert segment [Kb, count_e], i.e. element (row r of expert e,
//     k-block kb) at offset_e * Kb + kb * count_e + (r - offset_e).
//   Channel layout (one weight scale per output row, [E, M, 1]): the same GEMMs run with unit weight scales
//   (the transposed-scale buffer filled with 1) and the row scale multiplies the GEMM's float output where it is
//   consumed (SiLU-and-mul for gate/up, the gather-reduce for down): row_scale_index.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GLM_HD __host__ __device__ __forceinline__
#else
#define GLM_HD inline
#endif

namespace glm_moe {

constexpr int kBlock = 128;            // weight block side and activation group length
constexpr float kFp8Max = 448.0f;      // largest finite e4m3
constexpr float kMinAmax = 1e-12f;     // same floor as reference.quantize_fp8_block
constexpr int64_t kAlign = 256;        // workspace segment alignment (TMA wants 16 B; 256 keeps rows in step)

GLM_HD int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
GLM_HD int64_t align_up(int64_t a, int64_t b) { return cdiv(a, b) * b; }

// ---- scale indexing ---------------------------------------------------------------------------------------------

// Checkpoint weight scale [E, Mb, Kb] (weight_scale_inv, K-major).
GLM_HD int64_t weight_scale_index(int64_t e, int64_t mb, int64_t kb, int64_t Mb, int64_t Kb) {
  return (e * Mb + mb) * Kb + kb;
}
// The same scale after the per-call transpose the SM90 mainloop needs: [E, Kb, Mb] (MN-major).
GLM_HD int64_t weight_scale_t_index(int64_t e, int64_t mb, int64_t kb, int64_t Mb, int64_t Kb) {
  return (e * Kb + kb) * Mb + mb;
}
// Activation scale of permuted row `row` (belonging to an expert whose rows start at `offset` and number
// `count`) for k-block kb: MN-major within the expert's segment, segments back to back.
GLM_HD int64_t act_scale_index(int64_t row, int64_t offset, int64_t count, int64_t kb, int64_t Kb) {
  return offset * Kb + kb * count + (row - offset);
}

// Channel layout: the scale of output row `row` of expert e's [M, K] weight, checkpoint layout [E, M, 1].
GLM_HD int64_t row_scale_index(int64_t e, int64_t row, int64_t M) { return e * M + row; }

// ---- GEMM problem per expert -----------------------------------------------------------------------------------

struct Problem {
  int64_t M, N, K;           // D[M, N] = W[M, K] . X[N, K]^T
  int64_t a_offset;          // elements into the expert weight tensor (w13 or w2)
  int64_t b_offset;          // elements into the permuted FP8 activations
  int64_t sfa_offset;        // elements into the transposed weight scales
  int64_t sfb_offset;        // elements into the activation scales
  int64_t d_offset;          // elements into the float output
};

// Gate/up GEMM (stage 1): W = w13[e] [2I, H], X = quantised permuted hidden [R, H], D = gate_up [R, 2I].
GLM_HD Problem gemm1_problem(int64_t e, int64_t offset, int64_t count, int64_t H, int64_t I) {
  const int64_t M = 2 * I, K = H;
  return Problem{M, count, K, e * M * K, offset * K, e * cdiv(M, kBlock) * cdiv(K, kBlock), offset * cdiv(K, kBlock),
                 offset * M};
}
// Down GEMM (stage 2): W = w2[e] [H, I], X = quantised SiLU-and-mul output [R, I], D = y [R, H].
GLM_HD Problem gemm2_problem(int64_t e, int64_t offset, int64_t count, int64_t H, int64_t I) {
  const int64_t M = H, K = I;
  return Problem{M, count, K, e * M * K, offset * K, e * cdiv(M, kBlock) * cdiv(K, kBlock), offset * cdiv(K, kBlock),
                 offset * M};
}

// Output tiles of one expert's GEMM for a CTA tile of tile_m x tile_n (what the persistent scheduler walks).
GLM_HD int64_t tiles_of(int64_t M, int64_t N, int64_t tile_m, int64_t tile_n) {
  return N == 0 ? 0 : cdiv(M, tile_m) * cdiv(N, tile_n);
}

// ---- kernel configuration choice -------------------------------------------------------------------------------

// The CUTLASS instantiations we ship differ in the CTA tile's N (= routed rows of one expert per tile).
enum class Config : int { kDecode = 0, kMedium = 1, kPrefill = 2 };
constexpr int kDecodeTileN = 16;
constexpr int kMediumTileN = 64;
constexpr int kPrefillTileN = 128;
constexpr int kTileM = 128;

// By the average rows per active expert. Up to ~2000 routed rows GLM's MoE is bound by reading the active
// experts' weights once, so the tile is the narrowest that keeps most experts in ONE column of tiles (each
// weight tile then streams from HBM once) without padding the wgmma N so much that the MMAs, not the reads,
// set the time: avg <= 12 -> 16 (Poisson tails beyond 16 stay rare), <= 48 -> 64, else 128.
GLM_HD Config choose_config(int64_t T, int64_t topk, int64_t E) {
  const int64_t rows = T * topk;
  const int64_t active = rows < E ? rows : E;
  if (active == 0) return Config::kDecode;
  const int64_t avg = cdiv(rows, active);
  return avg <= 12 ? Config::kDecode : avg <= 48 ? Config::kMedium : Config::kPrefill;
}

// ---- FP8 e4m3 (float8_e4m3fn) rounding, bit-exact with the device's __nv_cvt_float_to_fp8(.., __NV_SATFINITE) --

// Round-to-nearest-even, saturating at +-448, NaN -> 0x7f. Used on the host; the device uses the intrinsic.
inline uint8_t e4m3_from_float(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  if (std::isnan(f)) return 0x7f;
  float a = std::fabs(f);
  if (a >= kFp8Max) return sign | 0x7e;  // satfinite (values between 448 and 464 round to 448 anyway)
  // Smallest normal is 2^-6; subnormals are multiples of 2^-9.
  int exp;
  std::frexp(a, &exp);  // a = m * 2^exp, m in [0.5, 1)
  int e = exp - 1;      // a = 1.x * 2^e
  if (e < -6) e = -6;   // subnormal range shares the 2^-9 quantum
  const float quantum = std::ldexp(1.0f, e - 3);
  float q = std::nearbyint(a / quantum);  // default rounding mode: to nearest even
  float r = q * quantum;
  if (r >= kFp8Max) return sign | 0x7e;
  // Encode r exactly.
  if (r == 0.0f) return sign;
  std::frexp(r, &exp);
  e = exp - 1;
  if (e < -6) {  // subnormal: mantissa = r / 2^-9
    return sign | static_cast<uint8_t>(std::lround(r / std::ldexp(1.0f, -9)));
  }
  const int mant = static_cast<int>(std::lround((r / std::ldexp(1.0f, e) - 1.0f) * 8.0f));
  return sign | static_cast<uint8_t>(((e + 7) << 3) | mant);
}

inline float e4m3_to_float(uint8_t v) {
  const float sign = (v & 0x80) ? -1.0f : 1.0f;
  const int e = (v >> 3) & 0xf, m = v & 0x7;
  if (e == 0xf && m == 0x7) return NAN;
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), -9);
  return sign * std::ldexp(1.0f + m / 8.0f, e - 7);
}

// Scale of one 1 x 128 activation group from its absolute maximum (reference.quantize_fp8_block's rule).
GLM_HD float group_scale(float amax) { return (amax > kMinAmax ? amax : kMinAmax) / kFp8Max; }

// ---- workspace --------------------------------------------------------------------------------------------------

// Byte offsets of every buffer the CUDA op needs besides its inputs and output; one allocation.
struct Workspace {
  int64_t counts, offsets, pos, src_pair;           // int32 [E], [E+1], [R], [R]
  int64_t w13_scale_t, w2_scale_t;                  // float, transposed weight scales
  int64_t xq, xs;                                   // fp8 [R, H], float [R * H/128]
  int64_t gate_up;                                  // float [R, 2I]
  int64_t aq, as;                                   // fp8 [R, I], float [R * I/128]
  int64_t y;                                        // float [R, H]
  int64_t gemm_args;                                // CUTLASS per-group argument arrays (gemm_args_bytes)
  int64_t gemm_workspace;                           // CUTLASS's own workspace (gemm_workspace_bytes)
  int64_t total;
};

inline Workspace workspace_layout(int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk,
                                  int64_t gemm_args_bytes, int64_t gemm_workspace_bytes) {
  const int64_t R = T * topk;
  Workspace w{};
  int64_t at = 0;
  auto take = [&](int64_t bytes) { const int64_t here = at; at = align_up(at + bytes, kAlign); return here; };
  w.counts = take(4 * E);
  w.offsets = take(4 * (E + 1));
  w.pos = take(4 * R);
  w.src_pair = take(4 * R);
  w.w13_scale_t = take(4 * E * cdiv(2 * I, kBlock) * cdiv(H, kBlock));
  w.w2_scale_t = take(4 * E * cdiv(H, kBlock) * cdiv(I, kBlock));
  w.xq = take(R * H);
  w.xs = take(4 * R * cdiv(H, kBlock));
  w.gate_up = take(4 * R * 2 * I);
  w.aq = take(R * I);
  w.as = take(4 * R * cdiv(I, kBlock));
  w.y = take(4 * R * H);
  w.gemm_args = take(gemm_args_bytes);
  w.gemm_workspace = take(gemm_workspace_bytes);
  w.total = at;
  return w;
}

// ---- expert permutation (host version; the device computes the same thing in moe_fp8_sm90.cu) -----------------

// counts[E], offsets[E+1], pos[R] (permuted row of pair p), src_pair[rows] (pair of permuted row r).
// Pairs routed outside [0, E) (expert parallelism's -1 for experts of other ranks) get no row (pos = -1) and
// contribute nothing, as on the device. Returns the number of rows placed (offsets[E]).
inline int64_t build_permutation(const int32_t* ids, int64_t R, int64_t E, int32_t* counts, int32_t* offsets,
                                 int32_t* pos, int32_t* src_pair) {
  for (int64_t e = 0; e < E; ++e) counts[e] = 0;
  for (int64_t p = 0; p < R; ++p)
    if (ids[p] >= 0 && ids[p] < E) ++counts[ids[p]];
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  // Stable counting sort: a cursor per expert walks forward in pair order.
  for (int64_t e = 0; e < E; ++e) counts[e] = 0;
  for (int64_t p = 0; p < R; ++p) {
    const int32_t e = ids[p];
    if (e < 0 || e >= E) {
      pos[p] = -1;
      continue;
    }
    const int32_t r = offsets[e] + counts[e]++;
    pos[p] = r;
    src_pair[r] = static_cast<int32_t>(p);
  }
  return offsets[E];
}

// ---- what one block of the per-row kernels works on -----------------------------------------------------------

// permute_quantize and silu_mul_quantize are launched with one block per routed pair (R = T * topk: the host
// knows R without waiting for the routing), but only offsets[E] rows are placed: pairs routed outside [0, E) get
// none. A block r >= offsets[E] must do nothing: its src_pair slot was never written this call (whatever the
// workspace held before), and following it would read ids, hidden, offsets, counts and row scales at garbage
// indices. RowJob.pair < 0 says so. Templated on the buffers' types so the host emulation (moe_host_capi.cpp) runs
// this very function over bounds-checked views of a garbage-filled workspace; the device passes raw pointers.
struct RowJob {
  int32_t pair;    // the routed pair whose row this block handles; < 0: no row (the block returns)
  int32_t expert;  // ids[pair], in [0, E) whenever pair >= 0
};

template <class Offsets, class SrcPair, class Ids>
GLM_HD RowJob row_job(int64_t r, int64_t E, const Offsets& offsets, const SrcPair& src_pair, const Ids& ids) {
  if (r >= offsets[E]) return RowJob{-1, -1};
  const int32_t p = src_pair[r];
  return RowJob{p, ids[p]};
}

// Whether a routed id names one of this call's experts: gather_reduce reads the rows of those pairs only (the
// others have no row, and their pos slot was never written).
GLM_HD bool routed_here(int32_t id, int64_t E) { return id >= 0 && id < E; }

}  // namespace glm_moe
