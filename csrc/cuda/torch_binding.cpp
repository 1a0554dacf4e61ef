// torch.library binding of the sm_90a FP8 MoE kernel: glm_plugin::fp8_moe_experts_cuda (CUDA dispatch key).
//
// The public op glm_plugin::fp8_moe_experts is defined in Python (glm_plugin/kernels/ops.py); its CUDA
// implementation calls this op when the dispatcher finds it registered, hence a TORCH_LIBRARY_FRAGMENT in the
// shared namespace (as csrc/bindings.cpp does for the *_cpu ops). This is the only file of csrc/cuda that includes
// torch headers, so the kernels themselves compile (and are checked in CI) with nvcc and no CUDA torch. The
// user-facing argument checks are the Python op's; ../op_checks.h holds the bounds checks shared with the CPU ops.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "../op_checks.h"
#include "moe_cuda.h"

namespace {

glm_moe::ActDType act_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return glm_moe::ActDType::kBFloat16;
    case at::kHalf: return glm_moe::ActDType::kHalf;
    case at::kFloat: return glm_moe::ActDType::kFloat;
    default: TORCH_CHECK(false, "glm_plugin: activations must be bfloat16, float16 or float32, got ", t.scalar_type());
  }
}

const uint8_t* fp8(const at::Tensor& w, const char* name) {
  const uint8_t* bytes = glm_plugin_checks::fp8_bytes(w, name);
  TORCH_CHECK(reinterpret_cast<uintptr_t>(bytes) % 16 == 0, "glm_plugin: ", name,
              " must start at a 16-byte aligned address (TMA); use .clone() on a sliced view");
  return bytes;
}

// The grouped GEMMs' weight-scale operand (moe_prepare_weight_scales), made once per weight-scale tensor and kept
// while that tensor lives unchanged: the transpose (block) or the buffer of ones (channel) does not depend on the
// tokens, so it runs at the first call after the weights load instead of at every decode step. An entry is valid
// while its source tensor is alive (weak reference), at the same address and version counter (an in-place weight
// update bumps it). Not cached, so prepared per call as before: scales converted for this call (not float32
// contiguous), inference tensors (no version counter), calls being captured into a CUDA graph.
class PreparedScales {
 public:
  const float* get(const at::Tensor& scale, glm_moe::ScaleLayout layout, int64_t E, int64_t M, int64_t K,
                   cudaStream_t stream) {
    if (scale.scalar_type() != at::kFloat || !scale.is_contiguous() || scale.is_inference()) return nullptr;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capturing) != cudaSuccess || capturing != cudaStreamCaptureStatusNone)
      return nullptr;
    const std::lock_guard<std::mutex> lock(mu_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.source.expired(); }),
                   entries_.end());
    const auto version = scale._version();
    for (const Entry& e : entries_) {
      if (e.source._unsafe_get_target() == scale.unsafeGetTensorImpl() && e.data == scale.data_ptr() &&
          e.version == version && e.layout == layout)
        return e.prepared.data_ptr<float>();
    }
    at::Tensor prepared = at::empty({glm_moe::moe_weight_scale_mn_bytes(E, M, K) / 4}, scale.options());
    if (const char* err = glm_moe::moe_prepare_weight_scales(scale.data_ptr<float>(), layout, E, M, K,
                                                             prepared.data_ptr<float>(), stream)) {
      TORCH_CHECK(false, "glm_plugin: ", err);
    }
    // Once per weight tensor: finished before any other stream may read it.
    TORCH_CHECK(cudaStreamSynchronize(stream) == cudaSuccess, "glm_plugin: preparing the weight scales failed");
    entries_.push_back(Entry{Weak(scale.getIntrusivePtr()), version, scale.data_ptr(), layout, prepared});
    return prepared.data_ptr<float>();
  }

 private:
  using Weak = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  struct Entry {
    Weak source;
    int64_t version;
    const void* data;
    glm_moe::ScaleLayout layout;
    at::Tensor prepared;
  };
  std::mutex mu_;
  std::vector<Entry> entries_;
};

PreparedScales& prepared_scales() {
  static PreparedScales* cache = new PreparedScales();  // never destroyed: CUDA may be gone at exit
  return *cache;
}

at::Tensor fp8_moe_experts_cuda(const at::Tensor& hidden, const at::Tensor& w13, const at::Tensor& w13_scale,
                                const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& topk_weights,
                                const at::Tensor& topk_ids, const std::string& layout) {
  namespace chk = glm_plugin_checks;
  const chk::ScaleLayout scales = chk::parse_layout(layout);
  TORCH_CHECK(hidden.is_cuda(), "glm_plugin: fp8_moe_experts_cuda needs CUDA tensors");
  for (const at::Tensor* t : {&w13, &w13_scale, &w2, &w2_scale, &topk_weights, &topk_ids}) {
    TORCH_CHECK(t->device() == hidden.device(), "glm_plugin: fp8_moe_experts_cuda needs every tensor on ",
                hidden.device(), ", got one on ", t->device());
  }
  const c10::cuda::CUDAGuard guard(hidden.device());
  const chk::MoeShape s = chk::check_moe_shapes(hidden, w13, w13_scale, w2, w2_scale, topk_weights, topk_ids,
                                                scales);
  const int64_t T = s.T, H = s.H, E = s.E, I = s.I, K = s.K;
  // Per chunk: a batch of any size is split into chunks of kMaxTokensPerCall tokens below.
  if (const char* why = glm_moe::moe_unsupported(std::min(T, glm_moe::kMaxTokensPerCall), H, I, E, K))
    TORCH_CHECK(false, "glm_plugin: ", why);

  const at::Tensor x = hidden.contiguous();
  const at::Tensor w13c = w13.contiguous(), w2c = w2.contiguous();
  const at::Tensor s13 = w13_scale.to(at::kFloat).contiguous(), s2 = w2_scale.to(at::kFloat).contiguous();
  const at::Tensor tw = topk_weights.to(at::kFloat).contiguous();
  // int64 ids are clamped before narrowing, so one past 2^31 cannot wrap onto an expert of this rank (-1 and E
  // both mean "not here" to the kernel).
  const at::Tensor ids = topk_ids.scalar_type() == at::kInt ? topk_ids.contiguous()
                                                            : topk_ids.clamp(-1, E).to(at::kInt).contiguous();
  at::Tensor out = at::empty_like(x);
  if (T == 0) return out;

  const int device = hidden.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const auto kernel_layout =
      scales == chk::ScaleLayout::kChannel ? glm_moe::ScaleLayout::kChannel : glm_moe::ScaleLayout::kBlock;
  // One workspace for every chunk of at most kMaxTokensPerCall tokens (enqueued in order on one stream).
  const int64_t chunk = std::min(T, glm_moe::kMaxTokensPerCall);
  const int64_t bytes = glm_moe::moe_workspace_bytes(chunk, H, I, E, K, -1, device);
  at::Tensor workspace = at::empty({bytes}, hidden.options().dtype(at::kByte));

  glm_moe::MoeCudaArgs a{};
  a.dtype = act_dtype(x);
  a.H = H; a.I = I; a.E = E; a.topk = K;
  a.w13 = fp8(w13c, "w13");
  a.layout = kernel_layout;
  a.w13_scale = s13.data_ptr<float>();
  a.w2 = fp8(w2c, "w2");
  a.w2_scale = s2.data_ptr<float>();
  a.w13_scale_mn = prepared_scales().get(w13_scale, kernel_layout, E, 2 * I, H, stream);
  a.w2_scale_mn = prepared_scales().get(w2_scale, kernel_layout, E, H, I, stream);
  a.workspace = workspace.data_ptr();
  a.workspace_bytes = bytes;
  a.config = -1;
  a.device = device;
  const int64_t row_bytes = H * x.element_size();
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    a.T = std::min(chunk, T - t0);
    a.hidden = static_cast<const char*>(x.data_ptr()) + t0 * row_bytes;
    a.out = static_cast<char*>(out.data_ptr()) + t0 * row_bytes;
    a.topk_weights = tw.data_ptr<float>() + t0 * K;
    a.topk_ids = ids.data_ptr<int32_t>() + t0 * K;
    if (const char* err = glm_moe::moe_fp8_experts_sm90(a, stream)) TORCH_CHECK(false, "glm_plugin: ", err);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(glm_plugin, m) {
  m.def("fp8_moe_experts_cuda(Tensor hidden, Tensor w13, Tensor w13_scale, Tensor w2, Tensor w2_scale, "
        "Tensor topk_weights, Tensor topk_ids, str layout) -> Tensor");
}

TORCH_LIBRARY_IMPL(glm_plugin, CUDA, m) { m.impl("fp8_moe_experts_cuda", &fp8_moe_experts_cuda); }
