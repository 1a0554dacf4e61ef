// Medium configuration: CTA tile 128 x 64 x 128, no cluster, for batches where an active expert sees a few dozen
// rows (GLM decode at batch ~64-512): one column of tiles per expert, a quarter of the prefill tile's padding.
#include "moe_gemm_sm90.cuh"

GLM_MOE_DEFINE_GEMM(kMedium, glm_moe::kMediumTileN, 1)
