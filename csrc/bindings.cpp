// Registers the CPU kernels as private ops of the glm_plugin torch.library namespace.
//
// The public ops (glm_plugin::fp8_moe_experts, fp8_linear) and their fake implementations are
// defined in Python (glm_plugin/kernels/ops.py) so that they exist even where this library cannot be compiled;
// their CPU implementation calls these `*_cpu` ops when the library loaded. Hence a TORCH_LIBRARY_FRAGMENT: the
// namespace is shared with the Python definitions (csrc/cuda/torch_binding.cpp adds `*_cuda` ops the same way).
// The user-facing argument checks are the Python op's; op_checks.h holds the bounds checks both bindings share.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <string>
#include <vector>

#include "cpu/moe.h"
#include "op_checks.h"

namespace {

using glm_plugin_checks::ScaleLayout;
using glm_plugin_cpu::DType;
using glm_plugin_cpu::Layout;

Layout cpu_layout(ScaleLayout layout) { return layout == ScaleLayout::kBlock ? Layout::kBlock : Layout::kChannel; }

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kHalf;
    case at::kFloat: return DType::kFloat;
    default: TORCH_CHECK(false, "glm_plugin: activations must be bfloat16, float16 or float32, got ", t.scalar_type());
  }
}

at::Tensor fp8_moe_experts_cpu(const at::Tensor& hidden, const at::Tensor& w13, const at::Tensor& w13_scale,
                               const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& topk_weights,
                               const at::Tensor& topk_ids, const std::string& layout) {
  namespace chk = glm_plugin_checks;
  const ScaleLayout lay = chk::parse_layout(layout);
  const chk::MoeShape s = chk::check_moe_shapes(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids, lay);
  const DType dtype = dtype_of(hidden);
  const at::Tensor x = hidden.to(at::kFloat).contiguous();
  const at::Tensor tw = topk_weights.to(at::kFloat).contiguous();
  const at::Tensor ids = topk_ids.to(at::kLong).contiguous();
  at::Tensor out = at::empty({s.T, s.H}, hidden.options());
  if (glm_plugin_cpu::poison_requested()) out.fill_(std::numeric_limits<float>::quiet_NaN());
  glm_plugin_cpu::MoeArgs a{};
  a.x = x.data_ptr<float>();
  a.T = s.T; a.H = s.H; a.I = s.I; a.E = s.E; a.topk = s.K;
  a.w13 = chk::fp8_bytes(w13, "w13");
  a.w13_scale = chk::scale_floats(w13_scale, "w13_scale");
  a.w2 = chk::fp8_bytes(w2, "w2");
  a.w2_scale = chk::scale_floats(w2_scale, "w2_scale");
  a.topk_weights = tw.data_ptr<float>();
  a.topk_ids = ids.data_ptr<int64_t>();
  a.layout = cpu_layout(lay);
  a.dtype = dtype;
  a.out = out.data_ptr();
  glm_plugin_cpu::fp8_moe_experts(a);
  return out;
}

at::Tensor fp8_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_scale,
                          const c10::optional<at::Tensor>& bias, const std::string& layout) {
  namespace chk = glm_plugin_checks;
  const ScaleLayout lay = chk::parse_layout(layout);
  const auto [N, K] = chk::check_linear_shapes(x, weight, weight_scale, bias, lay);
  const DType dtype = dtype_of(x);
  const at::Tensor xf = x.reshape({-1, K}).to(at::kFloat).contiguous();
  const at::Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  at::Tensor out = at::empty(out_shape, x.options());
  if (glm_plugin_cpu::poison_requested()) out.fill_(std::numeric_limits<float>::quiet_NaN());
  glm_plugin_cpu::LinearArgs a{};
  a.x = xf.data_ptr<float>();
  a.M = xf.size(0); a.K = K; a.N = N;
  a.w = chk::fp8_bytes(weight, "weight");
  a.scale = chk::scale_floats(weight_scale, "weight_scale");
  a.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  a.layout = cpu_layout(lay);
  a.dtype = dtype;
  a.out = out.data_ptr();
  glm_plugin_cpu::fp8_linear(a);
  return out;
}

std::string cpu_kernel_isa() { return glm_plugin_cpu::selected_isa(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(glm_plugin, m) {
  m.def("fp8_moe_experts_cpu(Tensor hidden, Tensor w13, Tensor w13_scale, Tensor w2, Tensor w2_scale, "
        "Tensor topk_weights, Tensor topk_ids, str layout) -> Tensor");
  m.def("fp8_linear_cpu(Tensor x, Tensor weight, Tensor weight_scale, Tensor? bias, str layout) -> Tensor");
  m.def("cpu_kernel_isa() -> str", &cpu_kernel_isa);
}

TORCH_LIBRARY_IMPL(glm_plugin, CPU, m) {
  m.impl("fp8_moe_experts_cpu", &fp8_moe_experts_cpu);
  m.impl("fp8_linear_cpu", &fp8_linear_cpu);
}
