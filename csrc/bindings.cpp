// Registers the CPU kernels as private ops of the glm_plugin torch.library namespace.
//
// The public ops (glm_plugin::fp8_moe_experts, fp8_linear, glm_route) and their fake implementations are
// defined in Python (glm_plugin/kernels/ops.py) so that they exist even where this library cannot be compiled;
// their CPU implementation calls these `*_cpu` ops when the library loaded. Hence a TORCH_LIBRARY_FRAGMENT: the
// namespace is shared with the Python definitions. A CUDA build would add `*_cuda` ops the same way.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <string>

#include "cpu/moe.h"

namespace {

using glm_plugin_cpu::DType;
using glm_plugin_cpu::Layout;

Layout parse_layout(const std::string& layout) {
  TORCH_CHECK(layout == "block" || layout == "channel",
              "glm_plugin: layout must be 'block' (128x128 weight_scale_inv) or 'channel' (per-output-channel "
              "weight_scale), got '", layout, "'");
  return layout == "block" ? Layout::kBlock : Layout::kChannel;
}

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kHalf;
    case at::kFloat: return DType::kFloat;
    default: TORCH_CHECK(false, "glm_plugin: activations must be bfloat16, float16 or float32, got ", t.scalar_type());
  }
}

const uint8_t* fp8_bytes(const at::Tensor& w, const char* name) {
  TORCH_CHECK(w.scalar_type() == at::kFloat8_e4m3fn, "glm_plugin: ", name, " must be float8_e4m3fn, got ",
              w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), "glm_plugin: ", name, " must be contiguous");
  return reinterpret_cast<const uint8_t*>(w.data_ptr());
}

void check_scale(const at::Tensor& s, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK(s.scalar_type() == at::kFloat, "glm_plugin: ", name, " must be float32, got ", s.scalar_type());
  TORCH_CHECK(s.sizes() == expected, "glm_plugin: ", name, " has shape ", s.sizes(), ", expected ", expected);
  TORCH_CHECK(s.is_contiguous(), "glm_plugin: ", name, " must be contiguous");
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

at::Tensor fp8_moe_experts_cpu(const at::Tensor& hidden, const at::Tensor& w13, const at::Tensor& w13_scale,
                               const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& topk_weights,
                               const at::Tensor& topk_ids, const std::string& layout) {
  const Layout lay = parse_layout(layout);
  TORCH_CHECK(hidden.dim() == 2 && w13.dim() == 3 && w2.dim() == 3, "glm_plugin: expected hidden [T, H], w13 [E, 2I, H], w2 [E, H, I]");
  const int64_t T = hidden.size(0), H = hidden.size(1), E = w13.size(0), I = w13.size(1) / 2;
  TORCH_CHECK(w13.size(1) == 2 * I && w13.size(2) == H, "glm_plugin: w13 has shape ", w13.sizes(), ", expected [E, 2I, ", H, "]");
  TORCH_CHECK(w2.size(0) == E && w2.size(1) == H && w2.size(2) == I, "glm_plugin: w2 has shape ", w2.sizes(), ", expected [", E, ", ", H, ", ", I, "]");
  TORCH_CHECK(topk_ids.dim() == 2 && topk_ids.size(0) == T && topk_weights.sizes() == topk_ids.sizes(),
              "glm_plugin: topk_weights and topk_ids must both be [T, k]");
  if (lay == Layout::kBlock) {
    check_scale(w13_scale, {E, cdiv(2 * I, 128), cdiv(H, 128)}, "w13_scale");
    check_scale(w2_scale, {E, cdiv(H, 128), cdiv(I, 128)}, "w2_scale");
  } else {
    check_scale(w13_scale, {E, 2 * I, 1}, "w13_scale");
    check_scale(w2_scale, {E, H, 1}, "w2_scale");
  }
  const at::Tensor x = hidden.to(at::kFloat).contiguous();
  const at::Tensor tw = topk_weights.to(at::kFloat).contiguous();
  const at::Tensor ids = topk_ids.to(at::kLong).contiguous();
  at::Tensor out = at::empty({T, H}, hidden.options());
  if (glm_plugin_cpu::poison_requested()) out.fill_(std::numeric_limits<float>::quiet_NaN());
  glm_plugin_cpu::MoeArgs a{};
  a.x = x.data_ptr<float>();
  a.T = T; a.H = H; a.I = I; a.E = E; a.topk = topk_ids.size(1);
  a.w13 = fp8_bytes(w13, "w13");
  a.w13_scale = w13_scale.data_ptr<float>();
  a.w2 = fp8_bytes(w2, "w2");
  a.w2_scale = w2_scale.data_ptr<float>();
  a.topk_weights = tw.data_ptr<float>();
  a.topk_ids = ids.data_ptr<int64_t>();
  a.layout = lay;
  a.dtype = dtype_of(hidden);
  a.out = out.data_ptr();
  glm_plugin_cpu::fp8_moe_experts(a);
  return out;
}

at::Tensor fp8_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_scale,
                          const c10::optional<at::Tensor>& bias, const std::string& layout) {
  const Layout lay = parse_layout(layout);
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1),
              "glm_plugin: fp8_linear expects x [..., K] and weight [N, K], got ", x.sizes(), " and ", weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1);
  if (lay == Layout::kBlock) check_scale(weight_scale, {cdiv(N, 128), cdiv(K, 128)}, "weight_scale");
  else check_scale(weight_scale, {N, 1}, "weight_scale");
  const at::Tensor xf = x.reshape({-1, K}).to(at::kFloat).contiguous();
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == N, "glm_plugin: bias must have ", N, " elements, got ", bias->numel());
    b = bias->to(at::kFloat).contiguous();
  }
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  at::Tensor out = at::empty(out_shape, x.options());
  if (glm_plugin_cpu::poison_requested()) out.fill_(std::numeric_limits<float>::quiet_NaN());
  glm_plugin_cpu::LinearArgs a{};
  a.x = xf.data_ptr<float>();
  a.M = xf.size(0); a.K = K; a.N = N;
  a.w = fp8_bytes(weight, "weight");
  a.scale = weight_scale.data_ptr<float>();
  a.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  a.layout = lay;
  a.dtype = dtype_of(x);
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
