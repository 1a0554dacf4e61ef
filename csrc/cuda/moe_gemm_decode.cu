// Decode configuration: CTA tile 128 (weight rows) x 16 (tokens) x 128 (k), no cluster. At decode each active
// expert sees a handful of tokens, the GEMM is bound by streaming the expert's weights, and a 16-token tile keeps
// the wasted wgmma columns (and the epilogue) small.
#include "moe_gemm_sm90.cuh"

GLM_MOE_DEFINE_GEMM(kDecode, glm_moe::kDecodeTileN, 1)
