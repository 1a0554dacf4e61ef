// Links every compiled kernel object into one program and runs the parts of moe_cuda.h that need no GPU: the
// workspace size of each configuration (CUTLASS's own sizing included), the shape refusal, the workspace check (both
// scale layouts), the layout checks and the prepared weight-scale size.
// An undefined or duplicate symbol across the objects fails the link here instead of at `import` on a GPU box.
#include <cstdio>

#include "moe_cuda.h"

int main() {
  using namespace glm_moe;
  for (int config = 0; config < 3; ++config)
    std::printf("workspace %d %lld\n", config,
                static_cast<long long>(moe_workspace_bytes(64, 4096, 1408, 128, 8, config, 0)));
  const char* why = moe_unsupported(4, 4096, 704, 128, 8);
  std::printf("unsupported %s\n", why ? why : "-");
  MoeCudaArgs a{};
  a.T = 4;
  a.H = 4096;
  a.I = 1408;
  a.E = 128;
  a.topk = 8;
  a.config = -1;
  const char* err = moe_fp8_experts_sm90(a, nullptr);  // no workspace: refused before any launch
  std::printf("run %s\n", err ? err : "-");
  a.layout = ScaleLayout::kChannel;
  err = moe_fp8_experts_sm90(a, nullptr);
  std::printf("run_channel %s\n", err ? err : "-");
  a.layout = static_cast<ScaleLayout>(7);  // neither layout: refused by name before any launch
  a.workspace_bytes = int64_t{1} << 40;
  err = moe_fp8_experts_sm90(a, nullptr);
  std::printf("layout %s\n", err ? err : "-");
  // The weight-scale operand prepared once per weight (GLM-4.5-Air's w13: 22 x 32 blocks per expert).
  std::printf("scale_mn_bytes %lld\n", static_cast<long long>(moe_weight_scale_mn_bytes(128, 2816, 4096)));
  err = moe_prepare_weight_scales(nullptr, static_cast<ScaleLayout>(7), 128, 2816, 4096, nullptr, nullptr);
  std::printf("prepare_layout %s\n", err ? err : "-");
  std::printf("max_tokens %lld\n", static_cast<long long>(kMaxTokensPerCall));
  return 0;
}
