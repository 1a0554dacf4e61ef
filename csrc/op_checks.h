// The bounds checks of the private glm_plugin ops, shared by csrc/bindings.cpp (*_cpu) and
// csrc/cuda/torch_binding.cpp (*_cuda).
//
// Where each check lives: the public ops (glm_plugin/kernels/ops.py) own the user-facing checks; they refuse every
// bad shape, dtype and layout with a message naming it and its fix, before any implementation (and in the fake
// implementations, so torch.compile refuses the same calls). The private ops can still be called directly, and a
// kernel given tensors smaller than the shapes it derives reads or writes out of bounds, so each binding passes its
// arguments through these functions first: one copy of what "the tensors cover what the kernel touches" means per
// op. The messages are terse on purpose; reaching one means the public op was bypassed.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace glm_plugin_checks {

// Side of a weight-scale block (glm_plugin.kernels.reference.BLOCK).
constexpr int64_t kBlock = 128;

enum class ScaleLayout { kBlock, kChannel };

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline ScaleLayout parse_layout(const std::string& layout) {
  TORCH_CHECK(layout == "block" || layout == "channel",
              "glm_plugin: layout must be 'block' (", kBlock, "x", kBlock, " weight_scale_inv) or 'channel' "
              "(per-output-channel weight_scale), got '", layout, "'");
  return layout == "block" ? ScaleLayout::kBlock : ScaleLayout::kChannel;
}

// An FP8 weight as the kernels read it: e4m3 bytes, densely packed.
inline const uint8_t* fp8_bytes(const at::Tensor& w, const char* name) {
  TORCH_CHECK(w.scalar_type() == at::kFloat8_e4m3fn, "glm_plugin: ", name, " must be float8_e4m3fn, got ",
              w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), "glm_plugin: ", name, " must be contiguous");
  return reinterpret_cast<const uint8_t*>(w.data_ptr());
}

// The scale of one [rows, cols] FP8 weight (per leading index `lead`, if any) in `layout`.
inline void check_scale_shape(const at::Tensor& s, std::initializer_list<int64_t> lead, int64_t rows, int64_t cols,
                              ScaleLayout layout, const char* name) {
  std::vector<int64_t> expected(lead);
  if (layout == ScaleLayout::kBlock) {
    expected.push_back(cdiv(rows, kBlock));
    expected.push_back(cdiv(cols, kBlock));
  } else {
    expected.push_back(rows);
    expected.push_back(1);
  }
  TORCH_CHECK(s.sizes() == at::IntArrayRef(expected), "glm_plugin: ", name, " has shape ", s.sizes(), ", expected ",
              at::IntArrayRef(expected));
}

// A scale as a kernel reads it in place: float32, densely packed (its shape checked by check_scale_shape).
inline const float* scale_floats(const at::Tensor& s, const char* name) {
  TORCH_CHECK(s.scalar_type() == at::kFloat, "glm_plugin: ", name, " must be float32, got ", s.scalar_type());
  TORCH_CHECK(s.is_contiguous(), "glm_plugin: ", name, " must be contiguous");
  return s.data_ptr<float>();
}

struct MoeShape {
  int64_t T, H, I, E, K;  // tokens, hidden size, intermediate size, experts, experts per token
};

// fp8_moe_experts: hidden [T, H], w13 [E, 2I, H], w2 [E, H, I], topk_weights and topk_ids [T, K], scales per layout.
inline MoeShape check_moe_shapes(const at::Tensor& hidden, const at::Tensor& w13, const at::Tensor& w13_scale,
                                 const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& topk_weights,
                                 const at::Tensor& topk_ids, ScaleLayout layout) {
  TORCH_CHECK(hidden.dim() == 2 && w13.dim() == 3 && w2.dim() == 3,
              "glm_plugin: expected hidden [T, H], w13 [E, 2I, H], w2 [E, H, I]");
  const int64_t T = hidden.size(0), H = hidden.size(1), E = w13.size(0), I = w13.size(1) / 2;
  TORCH_CHECK(w13.size(1) == 2 * I && w13.size(2) == H, "glm_plugin: w13 has shape ", w13.sizes(),
              ", expected [E, 2I, ", H, "]");
  TORCH_CHECK(w2.size(0) == E && w2.size(1) == H && w2.size(2) == I, "glm_plugin: w2 has shape ", w2.sizes(),
              ", expected [", E, ", ", H, ", ", I, "]");
  TORCH_CHECK(topk_ids.dim() == 2 && topk_ids.size(0) == T && topk_weights.sizes() == topk_ids.sizes(),
              "glm_plugin: topk_weights and topk_ids must both be [T, k]");
  check_scale_shape(w13_scale, {E}, 2 * I, H, layout, "w13_scale");
  check_scale_shape(w2_scale, {E}, H, I, layout, "w2_scale");
  return MoeShape{T, H, I, E, topk_ids.size(1)};
}

// fp8_linear: x [..., K], weight [N, K], scale per layout, bias N elements or none. Returns {N, K}.
inline std::pair<int64_t, int64_t> check_linear_shapes(const at::Tensor& x, const at::Tensor& weight,
                                                       const at::Tensor& weight_scale,
                                                       const c10::optional<at::Tensor>& bias, ScaleLayout layout) {
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1),
              "glm_plugin: fp8_linear expects x [..., K] and weight [N, K], got ", x.sizes(), " and ", weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1);
  check_scale_shape(weight_scale, {}, N, K, layout, "weight_scale");
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == N, "glm_plugin: bias must have ", N, " elements, got ", bias->numel());
  }
  return {N, K};
}

}  // namespace glm_plugin_checks
