// Prefill configuration: CTA tile 128 x 128 x 128 with a 2x1 cluster, so the two CTAs working on neighbouring
// weight-row tiles of the same tokens receive the activation tile by TMA multicast (one L2 read for both).
#include "moe_gemm_sm90.cuh"

GLM_MOE_DEFINE_GEMM(kPrefill, glm_moe::kPrefillTileN, 2)
