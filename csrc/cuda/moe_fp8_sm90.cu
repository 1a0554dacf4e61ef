// The MoE glue around the two grouped GEMMs, and the op's orchestration (moe_cuda.h).
//
//   1. expert_counts / expert_rows: routing -> rows per expert, stable expert-major permutation (moe_plan.h)
//   2. transpose_scales: checkpoint weight scales [E, Mb, Kb] -> the MN-major [E, Kb, Mb] CUTLASS SM90 reads
//      (channel layout: unit_scales fills that buffer with 1; the row scales are applied in steps 5 and 7).
//      Independent of the tokens: the binding runs it once per weight tensor (moe_prepare_weight_scales) and
//      passes the result in; only a caller that passes none gets it on every call.
//   3. permute_quantize: gathers each routed row and quantises it per 1 x 128 group to e4m3 (+ float scale)
//   4. grouped GEMM 1 (gate/up, float out)
//   5. silu_mul_quantize: silu(gate) * up, rounded to the activation dtype like the reference, re-quantised
//      (channel layout: gate and up first multiplied by their rows' w13 scales: GEMM 1's epilogue)
//   6. grouped GEMM 2 (down, float out)
//   7. gather_reduce: out[t] = sum_k w[t,k] * y[pos[t,k]], in pair order; each output row is written once by one
//      block, so the "weighted scatter-add" of the un-permutation needs no atomics and is deterministic
//      (channel layout: y scaled by its rows' w2 scales on the way: GEMM 2's epilogue).
// Why the channel layout's row scales are applied outside CUTLASS: the activations' 1 x 128 scales vary along k,
// so the blockwise main loop is needed anyway; with unit weight scales it is the block kernel's (same
// instantiations, same SASS), and the per-row multiply costs nothing in kernels that already read every output.
// Every index formula comes from moe_plan.h, which tests/cuda_build checks on the host.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "moe_cuda.h"
#include "moe_gemm.h"
#include "moe_plan.h"

namespace glm_moe {
namespace {

constexpr int kWarps = 4;  // quantisation kernels: one warp per 128-element group, 4 elements per lane

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Quantises the 128 values a warp holds (v[0..3] per lane, lane-major) into q (4 bytes per lane) and returns the
// group's scale, identical on every lane.
__device__ __forceinline__ float quantize_group(const float (&v)[4], uint8_t* q) {
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float s = group_scale(amax);
  uint32_t packed = 0;
  for (int i = 0; i < 4; ++i) {
    const float c = fminf(fmaxf(v[i] / s, -kFp8Max), kFp8Max);
    packed |= static_cast<uint32_t>(__nv_cvt_float_to_fp8(c, __NV_SATFINITE, __NV_E4M3)) << (8 * i);
  }
  *reinterpret_cast<uint32_t*>(q) = packed;
  return s;
}

__global__ void expert_counts(const int32_t* __restrict__ ids, int64_t R, int32_t* __restrict__ counts) {
  const int e = blockIdx.x;
  int n = 0;
  for (int64_t start = 0; start < R; start += blockDim.x) {
    const int64_t p = start + threadIdx.x;
    n += __syncthreads_count(p < R && ids[p] == e);
  }
  if (threadIdx.x == 0) counts[e] = n;
}

// One block per expert: its first row is the sum of the counts before it; its pairs get consecutive rows in pair
// order (a block-wide exclusive scan of hit flags per chunk of blockDim pairs).
__global__ void expert_rows(const int32_t* __restrict__ ids, int64_t R, int E, const int32_t* __restrict__ counts,
                            int32_t* __restrict__ offsets, int32_t* __restrict__ pos, int32_t* __restrict__ src_pair) {
  __shared__ int warp_hits[32];
  __shared__ int first_row;
  const int e = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (threadIdx.x == 0) {
    int o = 0;
    for (int i = 0; i < e; ++i) o += counts[i];
    first_row = o;
    offsets[e] = o;
    if (e == E - 1) offsets[E] = o + counts[e];
  }
  __syncthreads();
  int base = first_row;
  for (int64_t start = 0; start < R; start += blockDim.x) {
    const int64_t p = start + threadIdx.x;
    const bool hit = p < R && ids[p] == e;
    const unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_hits[warp] = __popc(mask);
    __syncthreads();
    int before = base, chunk = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_hits[w];
      chunk += warp_hits[w];
    }
    if (hit) {
      const int r = before + __popc(mask & ((1u << lane) - 1u));
      pos[p] = r;
      src_pair[r] = static_cast<int32_t>(p);
    }
    __syncthreads();
    base += chunk;
  }
}

__global__ void transpose_scales(const float* __restrict__ s, int64_t E, int64_t Mb, int64_t Kb,
                                 float* __restrict__ st) {
  const int64_t n = E * Mb * Kb;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t kb = i % Kb, mb = (i / Kb) % Mb, e = i / (Kb * Mb);
    st[weight_scale_t_index(e, mb, kb, Mb, Kb)] = s[i];
  }
}

// Channel layout: the blockwise main loop's weight scales are all 1 (the row scales come after the GEMM).
__global__ void unit_scales(float* __restrict__ st, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    st[i] = 1.0f;
}

// Block r quantises routed row r (token src_pair[r] / topk) into xq[r] and its scales; blocks past the placed
// rows (pairs routed outside [0, E) have none) return at once (moe_plan.h: row_job).
template <typename T>
__global__ void permute_quantize(const T* __restrict__ hidden, int64_t H, int topk, int E,
                                 const int32_t* __restrict__ ids, const int32_t* __restrict__ src_pair,
                                 const int32_t* __restrict__ counts, const int32_t* __restrict__ offsets,
                                 uint8_t* __restrict__ xq, float* __restrict__ xs) {
  const int64_t r = blockIdx.x;
  const RowJob job = row_job(r, E, offsets, src_pair, ids);
  if (job.pair < 0) return;
  const int32_t e = job.expert;
  const T* x = hidden + static_cast<int64_t>(job.pair / topk) * H;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t Kb = H / kBlock;
  for (int64_t kb = warp; kb < Kb; kb += kWarps) {
    const int64_t k = kb * kBlock + lane * 4;
    float v[4];
    for (int i = 0; i < 4; ++i) v[i] = to_float<T>(x[k + i]);
    const float s = quantize_group(v, xq + r * H + k);
    if (lane == 0) xs[act_scale_index(r, offsets[e], counts[e], kb, Kb)] = s;
  }
}

// row_scale: the w13 row scales [E, 2I, 1] for the channel layout, nullptr for the block layout (already applied).
// Blocks past the placed rows return at once, as in permute_quantize.
template <typename T>
__global__ void silu_mul_quantize(const float* __restrict__ gate_up, int64_t I, int E,
                                  const int32_t* __restrict__ ids, const int32_t* __restrict__ src_pair,
                                  const int32_t* __restrict__ counts, const int32_t* __restrict__ offsets,
                                  const float* __restrict__ row_scale, uint8_t* __restrict__ aq,
                                  float* __restrict__ as) {
  const int64_t r = blockIdx.x;
  const RowJob job = row_job(r, E, offsets, src_pair, ids);
  if (job.pair < 0) return;
  const int32_t e = job.expert;
  const float* g = gate_up + r * 2 * I;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t Kb = I / kBlock;
  for (int64_t kb = warp; kb < Kb; kb += kWarps) {
    const int64_t k = kb * kBlock + lane * 4;
    float v[4];
    for (int i = 0; i < 4; ++i) {
      float gate = g[k + i], up = g[I + k + i];
      if (row_scale != nullptr) {
        gate *= row_scale[row_scale_index(e, k + i, 2 * I)];
        up *= row_scale[row_scale_index(e, I + k + i, 2 * I)];
      }
      // The reference materialises this product in the activation dtype before the down projection.
      v[i] = to_float<T>(from_float<T>(gate / (1.0f + expf(-gate)) * up));
    }
    const float s = quantize_group(v, aq + r * I + k);
    if (lane == 0) as[act_scale_index(r, offsets[e], counts[e], kb, Kb)] = s;
  }
}

// Pairs routed outside [0, E) were given no row (their pos slot is stale): they contribute nothing, as in the
// reference (expert parallelism: vLLM maps experts of other ranks to -1). row_scale: the w2 row scales [E, H, 1]
// (channel layout) or nullptr.
template <typename T>
__global__ void gather_reduce(const float* __restrict__ y, int64_t H, int topk, const float* __restrict__ weights,
                              const int32_t* __restrict__ ids, int E, const int32_t* __restrict__ pos,
                              const float* __restrict__ row_scale, T* __restrict__ out) {
  const int64_t t = blockIdx.x;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < topk; ++k) {
      const int64_t p = t * topk + k;
      const int32_t e = ids[p];
      if (!routed_here(e, E)) continue;
      float v = y[static_cast<int64_t>(pos[p]) * H + h];
      if (row_scale != nullptr) v *= row_scale[row_scale_index(e, h, H)];
      acc += weights[p] * v;
    }
    out[t * H + h] = from_float<T>(acc);
  }
}

int sm_count_of(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) n = 132;
  return n;
}

Config resolve(int config, int64_t T, int64_t topk, int64_t E) {
  if (config == 0) return Config::kDecode;
  if (config == 1) return Config::kMedium;
  if (config == 2) return Config::kPrefill;
  return choose_config(T, topk, E);
}

int64_t args_bytes(Config c, int64_t E) {
  switch (c) {
    case Config::kDecode: return gemm_args_bytes<Config::kDecode>(E);
    case Config::kMedium: return gemm_args_bytes<Config::kMedium>(E);
    default: return gemm_args_bytes<Config::kPrefill>(E);
  }
}
int64_t cutlass_bytes(Config c, int64_t E, int sms) {
  switch (c) {
    case Config::kDecode: return gemm_workspace_bytes<Config::kDecode>(E, sms);
    case Config::kMedium: return gemm_workspace_bytes<Config::kMedium>(E, sms);
    default: return gemm_workspace_bytes<Config::kPrefill>(E, sms);
  }
}
const char* grouped_gemm(Config c, GroupedGemmArgs const& g, cudaStream_t stream) {
  switch (c) {
    case Config::kDecode: return run_grouped_gemm<Config::kDecode>(g, stream);
    case Config::kMedium: return run_grouped_gemm<Config::kMedium>(g, stream);
    default: return run_grouped_gemm<Config::kPrefill>(g, stream);
  }
}

// The MN-major weight-scale operand of a weight [E, M, K] (see moe_prepare_weight_scales).
void enqueue_weight_scales(const float* scale, ScaleLayout layout, int64_t E, int64_t M, int64_t K, float* out,
                           cudaStream_t stream) {
  if (layout == ScaleLayout::kChannel)
    unit_scales<<<64, 256, 0, stream>>>(out, E * cdiv(M, kBlock) * cdiv(K, kBlock));
  else
    transpose_scales<<<64, 256, 0, stream>>>(scale, E, cdiv(M, kBlock), cdiv(K, kBlock), out);
}

template <typename T>
const char* enqueue(MoeCudaArgs const& a, Config c, Workspace const& w, int sms, cudaStream_t stream) {
  char* ws = static_cast<char*>(a.workspace);
  auto i32 = [&](int64_t off) { return reinterpret_cast<int32_t*>(ws + off); };
  auto f32 = [&](int64_t off) { return reinterpret_cast<float*>(ws + off); };
  auto u8 = [&](int64_t off) { return reinterpret_cast<uint8_t*>(ws + off); };
  const int64_t R = a.T * a.topk, H = a.H, I = a.I, E = a.E;
  const int topk = static_cast<int>(a.topk);
  const unsigned grid_e = static_cast<unsigned>(E), grid_r = static_cast<unsigned>(R);

  expert_counts<<<grid_e, 256, 0, stream>>>(a.topk_ids, R, i32(w.counts));
  expert_rows<<<grid_e, 256, 0, stream>>>(a.topk_ids, R, static_cast<int>(E), i32(w.counts), i32(w.offsets),
                                          i32(w.pos), i32(w.src_pair));
  const bool channel = a.layout == ScaleLayout::kChannel;
  // The GEMMs' weight-scale operands: prepared at weight load (the binding's cache), else here on every call.
  const float* sfa13 = a.w13_scale_mn;
  const float* sfa2 = a.w2_scale_mn;
  if (sfa13 == nullptr) {
    enqueue_weight_scales(a.w13_scale, a.layout, E, 2 * I, H, f32(w.w13_scale_t), stream);
    sfa13 = f32(w.w13_scale_t);
  }
  if (sfa2 == nullptr) {
    enqueue_weight_scales(a.w2_scale, a.layout, E, H, I, f32(w.w2_scale_t), stream);
    sfa2 = f32(w.w2_scale_t);
  }
  permute_quantize<T><<<grid_r, 32 * kWarps, 0, stream>>>(static_cast<const T*>(a.hidden), H, topk,
                                                          static_cast<int>(E), a.topk_ids, i32(w.src_pair),
                                                          i32(w.counts), i32(w.offsets), u8(w.xq), f32(w.xs));
  if (cudaGetLastError() != cudaSuccess) return "glm_plugin FP8 MoE: launching the permutation kernels failed";

  GroupedGemmArgs g{};
  g.groups = E;
  g.H = H;
  g.I = I;
  g.counts = i32(w.counts);
  g.offsets = i32(w.offsets);
  g.args_buffer = ws + w.gemm_args;
  g.gemm_workspace = ws + w.gemm_workspace;
  g.sm_count = sms;
  g.device = a.device;

  g.stage = 1;
  g.w = a.w13;
  g.sfa = sfa13;
  g.x = u8(w.xq);
  g.sfb = f32(w.xs);
  g.d = f32(w.gate_up);
  if (const char* err = grouped_gemm(c, g, stream)) return err;

  silu_mul_quantize<T><<<grid_r, 32 * kWarps, 0, stream>>>(f32(w.gate_up), I, static_cast<int>(E), a.topk_ids,
                                                           i32(w.src_pair),
                                                           i32(w.counts), i32(w.offsets),
                                                           channel ? a.w13_scale : nullptr, u8(w.aq), f32(w.as));
  if (cudaGetLastError() != cudaSuccess) return "glm_plugin FP8 MoE: launching silu_mul_quantize failed";

  g.stage = 2;
  g.w = a.w2;
  g.sfa = sfa2;
  g.x = u8(w.aq);
  g.sfb = f32(w.as);
  g.d = f32(w.y);
  if (const char* err = grouped_gemm(c, g, stream)) return err;

  gather_reduce<T><<<static_cast<unsigned>(a.T), 256, 0, stream>>>(f32(w.y), H, topk, a.topk_weights, a.topk_ids,
                                                                   static_cast<int>(E), i32(w.pos),
                                                                   channel ? a.w2_scale : nullptr,
                                                                   static_cast<T*>(a.out));
  if (cudaGetLastError() != cudaSuccess) return "glm_plugin FP8 MoE: launching gather_reduce failed";
  return nullptr;
}

}  // namespace

const char* moe_unsupported(int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk) {
  if (H % kBlock != 0 || I % kBlock != 0)
    return "the sm_90a FP8 MoE kernel needs hidden and moe_intermediate sizes that are multiples of 128 (GLM's "
           "are); per-rank intermediate sizes from tensor parallelism must stay multiples of 128 too";
  if (E < 1 || topk < 1 || T < 0) return "the sm_90a FP8 MoE kernel needs at least one expert and top_k >= 1";
  if (T * topk >= (int64_t{1} << 31) || T * topk * 2 * I >= (int64_t{1} << 40))
    return "too many routed rows for one call of the sm_90a FP8 MoE kernel; split the batch";
  return nullptr;
}

int64_t moe_workspace_bytes(int64_t T, int64_t H, int64_t I, int64_t E, int64_t topk, int config, int device) {
  const Config c = resolve(config, T, topk, E);
  const int sms = sm_count_of(device);
  return workspace_layout(T, H, I, E, topk, args_bytes(c, E), cutlass_bytes(c, E, sms)).total;
}

int64_t moe_weight_scale_mn_bytes(int64_t E, int64_t M, int64_t K) {
  return 4 * E * cdiv(M, kBlock) * cdiv(K, kBlock);
}

const char* moe_prepare_weight_scales(const float* scale, ScaleLayout layout, int64_t E, int64_t M, int64_t K,
                                      float* out, cudaStream_t stream) {
  if (layout != ScaleLayout::kBlock && layout != ScaleLayout::kChannel)
    return "glm_plugin FP8 MoE: weight scales must be in the block or channel layout";
  if (E < 1 || M < 1 || K < 1) return "glm_plugin FP8 MoE: preparing the scales of an empty weight";
  enqueue_weight_scales(scale, layout, E, M, K, out, stream);
  if (cudaGetLastError() != cudaSuccess) return "glm_plugin FP8 MoE: launching the weight-scale preparation failed";
  return nullptr;
}

const char* moe_fp8_experts_sm90(MoeCudaArgs const& a, cudaStream_t stream) {
  if (const char* why = moe_unsupported(a.T, a.H, a.I, a.E, a.topk)) return why;
  if (a.T == 0) return nullptr;
  const Config c = resolve(a.config, a.T, a.topk, a.E);
  const int sms = sm_count_of(a.device);
  const Workspace w = workspace_layout(a.T, a.H, a.I, a.E, a.topk, args_bytes(c, a.E), cutlass_bytes(c, a.E, sms));
  if (a.workspace_bytes < w.total) return "glm_plugin FP8 MoE: workspace smaller than moe_workspace_bytes()";
  if (a.layout != ScaleLayout::kBlock && a.layout != ScaleLayout::kChannel)
    return "glm_plugin FP8 MoE: weight scales must be in the block or channel layout";
  switch (a.dtype) {
    case ActDType::kBFloat16: return enqueue<__nv_bfloat16>(a, c, w, sms, stream);
    case ActDType::kHalf: return enqueue<__half>(a, c, w, sms, stream);
    case ActDType::kFloat: return enqueue<float>(a, c, w, sms, stream);
  }
  return "glm_plugin FP8 MoE: activations must be bfloat16, float16 or float32";
}

}  // namespace glm_moe
