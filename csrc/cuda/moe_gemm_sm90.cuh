// One SM90 FP8 grouped GEMM with blockwise scaling (CUTLASS 3.x collectives), one group per expert.
//
// What is CUTLASS's: the warp-specialised cooperative ptr-array kernel (TMA producer warp, two consumer
// warpgroups issuing FP8 wgmma, per-128-k promotion of the accumulator with scale_A * scale_B, persistent group
// tile scheduler, TMA-store epilogue). What is ours: the kernel configuration for GLM's shapes (the "swap-AB"
// orientation, tile/cluster/stage choices, see docs/kernels-cuda.md), and filling the per-expert argument
// arrays on the device from the expert counts, so the host never waits for the routing.
//
// Included by moe_gemm_{decode,medium,prefill}.cu, each of which instantiates one configuration, so the (slow)
// CUTLASS compilations can run in parallel.
#pragma once

#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/dispatch_policy.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"

#include "moe_gemm.h"
#include "moe_plan.h"

#if !defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED) && defined(__CUDA_ARCH__)
#error "glm_plugin's FP8 MoE GEMM needs sm_90a (compile with -gencode arch=compute_90a,code=sm_90a)"
#endif

namespace glm_moe::sm90 {

using namespace cute;

template <int TileN, int ClusterM>
struct GroupedFp8Gemm {
  // A = expert weights [M, K] row-major, B = the expert's activation rows [N, K] row-major (CUTLASS calls that
  // column-major K x N), D = float, column-major M x N == row-major [rows, M].
  using ElementA = cutlass::float_e4m3_t;
  using ElementB = cutlass::float_e4m3_t;
  using ElementD = float;
  using ElementAcc = float;
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = cutlass::layout::ColumnMajor;
  using LayoutD = cutlass::layout::ColumnMajor;
  static constexpr int kAlignAB = 16;  // elements: 16 bytes of e4m3 (TMA)
  static constexpr int kAlignD = 4;    // 16 bytes of float

  using TileShape = Shape<_128, Int<TileN>, _128>;
  using ClusterShape = Shape<Int<ClusterM>, _1, _1>;  // M-neighbours share (multicast) the activation tile

  // Weights: one scale per 128 x 128 block; activations: one per row and 128-deep k group.
  using ScaleConfig = cutlass::detail::Sm90BlockwiseScaleConfig<kBlock, 1, kBlock>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementAcc,
      void, LayoutD*, kAlignD,  // no source tensor C: D = acc
      ElementD, LayoutD*, kAlignD, cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
      cutlass::epilogue::fusion::LinearCombination<ElementD, ElementAcc, void, ElementAcc>>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      ElementA, cute::tuple<LayoutA*, LayoutSFA*>, kAlignAB,
      ElementB, cute::tuple<LayoutB*, LayoutSFB*>, kAlignAB,
      ElementAcc, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperativeFP8Blockwise>::CollectiveOp;

  using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  using UnderlyingShape = typename ProblemShape::UnderlyingProblemShape;
  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideD = typename Kernel::InternalStrideD;

  // The per-group argument arrays, carved from one device buffer.
  struct ArgArrays {
    UnderlyingShape* shapes;
    ElementA const** ptr_a;
    ElementB const** ptr_b;
    float const** ptr_sfa;
    float const** ptr_sfb;
    ElementD** ptr_d;
    StrideA* stride_a;
    StrideB* stride_b;
    StrideD* stride_d;
    LayoutSFA* layout_sfa;
    LayoutSFB* layout_sfb;
    int64_t bytes;
  };

  static ArgArrays carve(void* base, int64_t groups) {
    ArgArrays a{};
    char* p = static_cast<char*>(base);
    int64_t at = 0;
    auto take = [&](int64_t bytes) {
      char* here = p ? p + at : nullptr;  // sizing pass when base is null
      at = align_up(at + bytes, kAlign);
      return here;
    };
    a.shapes = reinterpret_cast<UnderlyingShape*>(take(groups * sizeof(UnderlyingShape)));
    a.ptr_a = reinterpret_cast<ElementA const**>(take(groups * sizeof(void*)));
    a.ptr_b = reinterpret_cast<ElementB const**>(take(groups * sizeof(void*)));
    a.ptr_sfa = reinterpret_cast<float const**>(take(groups * sizeof(void*)));
    a.ptr_sfb = reinterpret_cast<float const**>(take(groups * sizeof(void*)));
    a.ptr_d = reinterpret_cast<ElementD**>(take(groups * sizeof(void*)));
    a.stride_a = reinterpret_cast<StrideA*>(take(groups * sizeof(StrideA)));
    a.stride_b = reinterpret_cast<StrideB*>(take(groups * sizeof(StrideB)));
    a.stride_d = reinterpret_cast<StrideD*>(take(groups * sizeof(StrideD)));
    a.layout_sfa = reinterpret_cast<LayoutSFA*>(take(groups * sizeof(LayoutSFA)));
    a.layout_sfb = reinterpret_cast<LayoutSFB*>(take(groups * sizeof(LayoutSFB)));
    a.bytes = at;
    return a;
  }

  static typename Gemm::Arguments arguments(ArgArrays const& a, int64_t groups, int sm_count, int device) {
    cutlass::KernelHardwareInfo hw{device, sm_count};
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGrouped,
        {static_cast<int>(groups), a.shapes, nullptr},  // shapes live on the device only
        {a.ptr_a, a.stride_a, a.ptr_b, a.stride_b, a.ptr_sfa, a.layout_sfa, a.ptr_sfb, a.layout_sfb},
        {{}, nullptr, nullptr, a.ptr_d, a.stride_d},
        hw};
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = 0.0f;
    return args;
  }
};

// Writes group e's problem, pointers, strides and scale layouts (one thread per expert).
template <class G>
__global__ void fill_group_arguments(typename G::ArgArrays a, GroupedGemmArgs g) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= g.groups) return;
  const Problem p = g.stage == 1 ? gemm1_problem(e, g.offsets[e], g.counts[e], g.H, g.I)
                                 : gemm2_problem(e, g.offsets[e], g.counts[e], g.H, g.I);
  const int M = static_cast<int>(p.M), N = static_cast<int>(p.N), K = static_cast<int>(p.K);
  a.shapes[e] = typename G::UnderlyingShape{M, N, K};
  a.ptr_a[e] = reinterpret_cast<typename G::ElementA const*>(g.w) + p.a_offset;
  a.ptr_b[e] = reinterpret_cast<typename G::ElementB const*>(g.x) + p.b_offset;
  a.ptr_sfa[e] = g.sfa + p.sfa_offset;
  a.ptr_sfb[e] = g.sfb + p.sfb_offset;
  a.ptr_d[e] = g.d + p.d_offset;
  typename G::StrideA sa{};
  get<0>(sa) = K;  // A row-major M x K
  typename G::StrideB sb{};
  get<0>(sb) = K;  // B: N rows of K
  typename G::StrideD sd{};
  get<1>(sd) = M;  // D column-major M x N
  a.stride_a[e] = sa;
  a.stride_b[e] = sb;
  a.stride_d[e] = sd;
  a.layout_sfa[e] = G::ScaleConfig::tile_atom_to_shape_SFA(make_shape(M, N, K, 1));
  a.layout_sfb[e] = G::ScaleConfig::tile_atom_to_shape_SFB(make_shape(M, N, K, 1));
}

template <class G>
int64_t args_bytes(int64_t groups) {
  return G::carve(nullptr, groups).bytes;
}

template <class G>
int64_t workspace_bytes(int64_t groups, int sm_count) {
  typename G::ArgArrays a = G::carve(nullptr, groups);
  return static_cast<int64_t>(G::Gemm::get_workspace_size(G::arguments(a, groups, sm_count, 0)));
}

template <class G>
const char* run(GroupedGemmArgs const& g, cudaStream_t stream) {
  typename G::ArgArrays a = G::carve(g.args_buffer, g.groups);
  fill_group_arguments<G><<<static_cast<unsigned>(cdiv(g.groups, 128)), 128, 0, stream>>>(a, g);
  if (cudaGetLastError() != cudaSuccess) return "glm_plugin FP8 MoE: launching fill_group_arguments failed";
  typename G::Gemm gemm;
  auto args = G::arguments(a, g.groups, g.sm_count, g.device);
  if (gemm.can_implement(args) != cutlass::Status::kSuccess)
    return "glm_plugin FP8 MoE: CUTLASS cannot run this grouped GEMM (H and I must be multiples of 128)";
  if (gemm.initialize(args, g.gemm_workspace, stream) != cutlass::Status::kSuccess)
    return "glm_plugin FP8 MoE: CUTLASS grouped GEMM initialisation failed";
  if (gemm.run(stream) != cutlass::Status::kSuccess) return "glm_plugin FP8 MoE: CUTLASS grouped GEMM launch failed";
  return nullptr;
}

}  // namespace glm_moe::sm90

// Defines the three entry points of moe_gemm.h for configuration CFG with GroupedFp8Gemm<TILE_N, CLUSTER_M>.
#define GLM_MOE_DEFINE_GEMM(CFG, TILE_N, CLUSTER_M)                                                          \
  namespace glm_moe {                                                                                         \
  using Gemm_##CFG = sm90::GroupedFp8Gemm<TILE_N, CLUSTER_M>;                                                 \
  template <>                                                                                                 \
  int64_t gemm_args_bytes<Config::CFG>(int64_t groups) { return sm90::args_bytes<Gemm_##CFG>(groups); }      \
  template <>                                                                                                 \
  int64_t gemm_workspace_bytes<Config::CFG>(int64_t groups, int sm_count) {                                   \
    return sm90::workspace_bytes<Gemm_##CFG>(groups, sm_count);                                               \
  }                                                                                                           \
  template <>                                                                                                 \
  const char* run_grouped_gemm<Config::CFG>(GroupedGemmArgs const& g, cudaStream_t stream) {                 \
    return sm90::run<Gemm_##CFG>(g, stream);                                                                  \
  }                                                                                                           \
  }
