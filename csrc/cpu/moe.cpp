// Scheduling driver for the CPU FP8 kernels: routing bookkeeping, per-ISA microkernel choice, scales, the fused
// SiLU-and-mul, and the weighted combine. Compiled for baseline x86-64; only the microkernels are ISA-specific.
//
// Work is split into (expert, 32-row weight tile) items handed out dynamically in one OpenMP region on torch's
// pool, so decode (a few tokens, 8 experts) still spreads over every core by output rows, and prefill spreads
// over experts. Each item streams its weight tile once per block of up to 16 tokens routed to that expert; an
// expert's down-projection tiles start as soon as its gate/up tiles are done.
//
// Block scales are folded into the activations instead of the weights: for a tile of rows inside one 128-row
// scale block, x'[k] = x[k] * s[row_block][k/128], so the inner loop is a plain FP8 x fp32 dot. Tiles therefore
// never straddle a 128-row boundary (of the gate rows or of the up rows).
#include "moe.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "fp8_dot.h"

namespace glm_plugin_cpu {

namespace {

constexpr int64_t kBlock = 128;      // FP8 scale block side
constexpr int kRowTile = 32;         // weight rows per work item
constexpr int kTokBlock = kMaxDotTokens;
constexpr int64_t kTokenChunk = 512; // bounds the [pairs, H] fp32 scratch for long prefills

constexpr E4m3Table make_e4m3_table() {
  E4m3Table t{};
  for (int b = 0; b < 256; ++b) {
    const int e = (b >> 3) & 15, m = b & 7;
    float v = e ? 1.0f + m / 8.0f : m / 8.0f;
    int p = e ? e - 7 : -6;
    for (; p > 0; --p) v *= 2.0f;
    for (; p < 0; ++p) v *= 0.5f;
    t.v[b] = (b & 0x80) ? -v : v;
  }
  return t;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

DotFn select_dot(const char** name) {
  const bool scalar_only = env_is("GLM_PLUGIN_CPU_ISA", "scalar") || env_is("ATEN_CPU_CAPABILITY", "default");
  const bool no_avx512 = scalar_only || env_is("GLM_PLUGIN_CPU_ISA", "avx2") || env_is("ATEN_CPU_CAPABILITY", "avx2");
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (!no_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    *name = "avx512";
    return dot_avx512;
  }
  if (!scalar_only && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    *name = "avx2";
    return dot_avx2;
  }
#endif
  *name = "scalar";
  return dot_scalar;
}

float round_to(DType t, float v) {
  switch (t) {
    case DType::kBFloat16: return static_cast<float>(c10::BFloat16(v));
    case DType::kHalf: return static_cast<float>(c10::Half(v));
    default: return v;
  }
}

void store(DType t, void* out, int64_t i, float v) {
  switch (t) {
    case DType::kBFloat16: static_cast<c10::BFloat16*>(out)[i] = c10::BFloat16(v); break;
    case DType::kHalf: static_cast<c10::Half*>(out)[i] = c10::Half(v); break;
    default: static_cast<float*>(out)[i] = v; break;
  }
}

float silu(float g) { return g / (1.0f + std::exp(-g)); }

// Runs first(i, scratch) for i in [0, n1) and second(i, scratch) for i in [0, n2), items handed out dynamically in
// order; a second-stage item starts once ready(i) holds (its expert's gate/up tiles are all done), so the down
// projection of early experts overlaps the gate/up work of later ones and there is no barrier between stages. A
// waiting thread yields its core instead of spinning: on a busy machine the thread it waits for may have none.
// (A region per stage measured 58 ms at 1 token on the GLM-4.5-Air shapes under load, one region 32 ms.) Runs on
// the OpenMP pool torch uses (same libgomp), so torch.set_num_threads applies.
template <class Scratch, class First, class Second, class Ready>
void run_two_stages(int64_t n1, int64_t n2, const Scratch& proto, const First& first, const Second& second,
                    const Ready& ready) {
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), std::max(n1, n2));
  if (workers <= 1 || at::in_parallel_region()) {
    Scratch s = proto;
    for (int64_t i = 0; i < n1; ++i) first(i, s);
    for (int64_t i = 0; i < n2; ++i) second(i, s);
    return;
  }
  std::atomic<int64_t> next1{0}, next2{0};
#pragma omp parallel num_threads(static_cast<int>(workers))
  {
    Scratch s = proto;
    for (int64_t i = next1.fetch_add(1); i < n1; i = next1.fetch_add(1)) first(i, s);
    for (int64_t i = next2.fetch_add(1); i < n2; i = next2.fetch_add(1)) {
      while (!ready(i)) std::this_thread::yield();  // every first-stage item is claimed: this ends
      second(i, s);
    }
  }
}

template <class Scratch, class Body>
void run_items(int64_t n, const Scratch& proto, const Body& body) {
  run_two_stages(n, 0, proto, body, [](int64_t, Scratch&) {}, [](int64_t) { return true; });
}

// x'[k] = x[k] * scales[k / 128] (the block scales of one 128-row weight block).
void prescale(const float* x, const float* scales, int64_t K, float* dst) {
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const float s = scales[k0 / kBlock];
    const int64_t k1 = std::min(K, k0 + kBlock);
    for (int64_t k = k0; k < k1; ++k) dst[k] = x[k] * s;
  }
}

struct Tile {
  int64_t expert, r0, r1;
};

struct Scratch {
  std::vector<float> xa, xb, ta, tb;
};

}  // namespace

const E4m3Table kE4m3 = make_e4m3_table();

void dot_scalar(const uint8_t* w, int64_t ldw, int rows, const float* const* x, int ntok, int64_t K, float* out,
                int64_t ldo) {
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < ntok; ++n) {
      float acc = 0.0f;
      const uint8_t* wr = w + r * ldw;
      for (int64_t k = 0; k < K; ++k) acc += kE4m3.v[wr[k]] * x[n][k];
      out[n * ldo + r] = acc;
    }
}

bool poison_requested() {
  const char* v = std::getenv("GLM_PLUGIN_KERNEL_POISON");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

const char* selected_isa() {
  const char* name = nullptr;
  select_dot(&name);
  return name;
}

void fp8_moe_experts(const MoeArgs& a) {
  const char* isa = nullptr;
  const DotFn dot = select_dot(&isa);
  const int64_t H = a.H, I = a.I, E = a.E, K = a.topk;
  const bool block = a.layout == Layout::kBlock;
  const int64_t sb13_r = cdiv(2 * I, kBlock), sb13_c = cdiv(H, kBlock);  // w13 block-scale grid
  const int64_t sb2_r = cdiv(H, kBlock), sb2_c = cdiv(I, kBlock);        // w2 block-scale grid

  // Gate/up tiles over the I dimension never straddle a 128-row block of the gate rows or of the up rows.
  std::vector<std::pair<int64_t, int64_t>> i_tiles;
  for (int64_t j = 0; j < I;) {
    int64_t end = std::min(I, j + kRowTile);
    end = std::min(end, (j / kBlock + 1) * kBlock);
    end = std::min(end, ((I + j) / kBlock + 1) * kBlock - I);
    i_tiles.emplace_back(j, end);
    j = end;
  }

  for (int64_t t0 = 0; t0 < a.T; t0 += kTokenChunk) {
    const int64_t T = std::min(kTokenChunk, a.T - t0), P = T * K;
    const int64_t* ids = a.topk_ids + t0 * K;
    const float* tw = a.topk_weights + t0 * K;

    // Counting sort of the (token, slot) pairs by expert: pairs of one expert become contiguous rows. Pairs whose
    // id lies outside [0, E) (expert parallelism marks other ranks' experts -1) get no row and add nothing.
    std::vector<int64_t> start(E + 1, 0), order(P), pos(P, -1);
    for (int64_t p = 0; p < P; ++p)
      if (ids[p] >= 0 && ids[p] < E) ++start[ids[p] + 1];
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    {
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t p = 0; p < P; ++p) {
        if (ids[p] < 0 || ids[p] >= E) continue;
        const int64_t q = fill[ids[p]]++;
        order[q] = p;
        pos[p] = q;
      }
    }
    std::vector<Tile> up_tiles, down_tiles;
    std::vector<std::atomic<int64_t>> pending(E);  // gate/up tiles of each expert not finished yet
    for (int64_t e = 0; e < E; ++e) {
      pending[e].store(start[e] == start[e + 1] ? 0 : static_cast<int64_t>(i_tiles.size()));
      if (start[e] == start[e + 1]) continue;
      for (auto& t : i_tiles) up_tiles.push_back({e, t.first, t.second});
      for (int64_t h = 0; h < H; h += kRowTile) down_tiles.push_back({e, h, std::min(H, h + kRowTile)});
    }

    const float fill = poison_requested() ? std::nanf("") : 0.0f;
    std::vector<float> act(P * I, fill), y(P * H, fill);
    Scratch proto;
    proto.xa.resize(block ? kTokBlock * std::max(H, I) : 0);
    proto.xb.resize(block ? kTokBlock * H : 0);
    proto.ta.assign(kTokBlock * kRowTile, fill);
    proto.tb.assign(kTokBlock * kRowTile, fill);

    // 1. act[q, j] = round(silu(gate_e(x)) * up_e(x)) for the rows j of each tile.
    auto gate_up = [&](int64_t item, Scratch& s) {
      const Tile tile = up_tiles[item];
      const int64_t e = tile.expert, j0 = tile.r0, rows = tile.r1 - tile.r0;
      const uint8_t* wg = a.w13 + (e * 2 * I + j0) * H;
      const uint8_t* wu = a.w13 + (e * 2 * I + I + j0) * H;
      const float* sg = a.w13_scale + (block ? (e * sb13_r + j0 / kBlock) * sb13_c : e * 2 * I + j0);
      const float* su = a.w13_scale + (block ? (e * sb13_r + (I + j0) / kBlock) * sb13_c : e * 2 * I + I + j0);
      const float* pg[kTokBlock];
      const float* pu[kTokBlock];
      for (int64_t qb = start[e]; qb < start[e + 1]; qb += kTokBlock) {
        const int nb = static_cast<int>(std::min<int64_t>(kTokBlock, start[e + 1] - qb));
        for (int n = 0; n < nb; ++n) {
          const float* xr = a.x + (t0 + order[qb + n] / K) * H;
          if (block) {
            prescale(xr, sg, H, s.xa.data() + n * H);
            prescale(xr, su, H, s.xb.data() + n * H);
            pg[n] = s.xa.data() + n * H;
            pu[n] = s.xb.data() + n * H;
          } else {
            pg[n] = pu[n] = xr;
          }
        }
        dot(wg, H, static_cast<int>(rows), pg, nb, H, s.ta.data(), kRowTile);
        dot(wu, H, static_cast<int>(rows), pu, nb, H, s.tb.data(), kRowTile);
        for (int n = 0; n < nb; ++n)
          for (int64_t r = 0; r < rows; ++r) {
            float g = s.ta[n * kRowTile + r], u = s.tb[n * kRowTile + r];
            if (!block) {
              g *= sg[r];
              u *= su[r];
            }
            act[(qb + n) * I + j0 + r] = round_to(a.dtype, silu(g) * u);
          }
      }
      pending[e].fetch_sub(1, std::memory_order_release);  // publishes this tile's act columns
    };
    // 2. y[q, h] = down_e(act[q]) for the rows h of each tile (once the expert's act rows are complete).
    auto down = [&](int64_t item, Scratch& s) {
      const Tile tile = down_tiles[item];
      const int64_t e = tile.expert, h0 = tile.r0, rows = tile.r1 - tile.r0;
      const uint8_t* w = a.w2 + (e * H + h0) * I;
      const float* sc = a.w2_scale + (block ? (e * sb2_r + h0 / kBlock) * sb2_c : e * H + h0);
      const float* px[kTokBlock];
      for (int64_t qb = start[e]; qb < start[e + 1]; qb += kTokBlock) {
        const int nb = static_cast<int>(std::min<int64_t>(kTokBlock, start[e + 1] - qb));
        for (int n = 0; n < nb; ++n) {
          const float* ar = act.data() + (qb + n) * I;
          if (block) {
            prescale(ar, sc, I, s.xa.data() + n * I);
            px[n] = s.xa.data() + n * I;
          } else {
            px[n] = ar;
          }
        }
        float* yo = y.data() + qb * H + h0;
        dot(w, I, static_cast<int>(rows), px, nb, I, yo, H);
        if (!block)
          for (int n = 0; n < nb; ++n)
            for (int64_t r = 0; r < rows; ++r) yo[n * H + r] *= sc[r];
      }
    };
    run_two_stages(static_cast<int64_t>(up_tiles.size()), static_cast<int64_t>(down_tiles.size()), proto, gate_up,
                   down, [&](int64_t item) {
                     return pending[down_tiles[item].expert].load(std::memory_order_acquire) == 0;
                   });

    // 3. out[t, h] = sum_k w[t, k] * y[pos(t, k), h], written once per element (no atomics, no zero-fill); with no
    //    routed slot (K = 0) the sum is empty and out is zero.
    // Decode-sized combines run inline: a parallel region costs more than 8 x 4096 multiply-adds.
    const int64_t hchunk = 256, nh = cdiv(H, hchunk), grain = std::max<int64_t>(1, (1 << 16) / (hchunk * std::max<int64_t>(K, 1)));
    at::parallel_for(0, T * nh, grain, [&](int64_t b, int64_t end) {
      for (int64_t it = b; it < end; ++it) {
        const int64_t t = it / nh, h0 = (it % nh) * hchunk, h1 = std::min(H, h0 + hchunk);
        for (int64_t h = h0; h < h1; ++h) {
          float acc = 0.0f;
          for (int64_t k = 0; k < K; ++k)
            if (pos[t * K + k] >= 0) acc += tw[t * K + k] * y[pos[t * K + k] * H + h];
          store(a.dtype, a.out, (t0 + t) * H + h, acc);
        }
      }
    });
  }
}

void fp8_linear(const LinearArgs& a) {
  const char* isa = nullptr;
  const DotFn dot = select_dot(&isa);
  const int64_t M = a.M, K = a.K, N = a.N;
  const bool block = a.layout == Layout::kBlock;
  const int64_t sbc = cdiv(K, kBlock);
  constexpr int64_t kTokTile = 64;  // tokens per item, so prefill spreads over cores even when N is small
  const int64_t n_tiles = cdiv(N, kRowTile), m_tiles = cdiv(M, kTokTile);
  Scratch proto;
  proto.xa.resize(block ? kTokBlock * K : 0);
  proto.ta.assign(kTokBlock * kRowTile, poison_requested() ? std::nanf("") : 0.0f);
  run_items(n_tiles * m_tiles, proto, [&](int64_t item, Scratch& s) {
    const int64_t n0 = (item % n_tiles) * kRowTile, rows = std::min<int64_t>(kRowTile, N - n0);
    const int64_t m_begin = (item / n_tiles) * kTokTile, m_end = std::min(M, m_begin + kTokTile);
    const float* sc = a.scale + (block ? (n0 / kBlock) * sbc : n0);
    const float* px[kTokBlock];
    for (int64_t mb = m_begin; mb < m_end; mb += kTokBlock) {
      const int nb = static_cast<int>(std::min<int64_t>(kTokBlock, m_end - mb));
      for (int n = 0; n < nb; ++n) {
        const float* xr = a.x + (mb + n) * K;
        if (block) {
          prescale(xr, sc, K, s.xa.data() + n * K);
          px[n] = s.xa.data() + n * K;
        } else {
          px[n] = xr;
        }
      }
      dot(a.w + n0 * K, K, static_cast<int>(rows), px, nb, K, s.ta.data(), kRowTile);
      for (int n = 0; n < nb; ++n)
        for (int64_t r = 0; r < rows; ++r) {
          float v = s.ta[n * kRowTile + r];
          if (!block) v *= sc[r];
          if (a.bias) v += a.bias[n0 + r];
          store(a.dtype, a.out, (mb + n) * N + n0 + r, v);
        }
    }
  });
}

}  // namespace glm_plugin_cpu
