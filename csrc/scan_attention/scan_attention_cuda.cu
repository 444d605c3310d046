// CUDA kernel of scan_attention (sm_80+; runs on sm_90): tiled online-softmax attention under a 2D scan mask on
// tensor cores, forward and FlashAttention-2-style backward (one pass for dK/dV per key tile, one for dQ per
// query tile, both recomputing the probabilities from the saved lse; no atomics).
//
// One thread block per (tile, batch, head), one warp per 16 rows of the tile. Tiles, tile-pair classification and
// the per-element mask come from scan_tiles.h / scan_mask.h, the code the CPU kernel runs and its tests exercise.
// Matrix products use WMMA 16x16x16 fragments (mma.sync on the tensor cores, fp32 accumulation) on shared-memory
// tiles; the head dim is padded in shared memory only to the next multiple of 16 (72 -> 80), by zero-filled
// predicated loads. Scores are in base 2 (q.k * softmax_scale * log2(e)); lse is saved in natural-log units.
//
// This file depends on nothing of torch (only the CUDA runtime), so it compiles with nvcc alone;
// scan_attention_cuda_ops.cpp wraps the launchers for torch.library.
#include <cstdint>
#include <type_traits>

#include "common/device.h"
#include "common/device_wmma.h"
#include "scan_attention/scan_attention_cuda.h"

namespace ledit {
namespace scan_attention {
namespace cuda {
namespace {

namespace dev = ::ledit::device;
namespace wmma = dev::wmma;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kFrag = 16;

// Loads a tile's rows of a contiguous (B, N, H, D) tensor (base = element (b, 0, head, 0)) into shared memory as
// [kTile][dim_padded], 16 bytes per access; rows past the tile's tokens and columns past D are zero.
template <int kTile, typename T>
__device__ void load_tile(dev::Shared<T> dst, dev::Global<const T> base, const TileGrid& grid, const TileRect& rect,
                          const Params& p) {
  const int chunks_per_row = p.dim_padded / 8;
  for (int c = dev::thread_idx().x; c < kTile * chunks_per_row; c += dev::block_dim().x) {
    const int i = c / chunks_per_row, col = (c % chunks_per_row) * 8;
    const bool real = i < rect.size() && col < p.dim;
    const int64_t token = real ? grid.token(rect, i) : 0;
    const uint4 value = dev::ld_global_if(real, dev::cast<const uint4>(base + token * p.heads * p.dim + col));
    dev::st_shared(dev::cast<uint4>(dst + i * p.dim_padded + col), value);
  }
}

// One warp: C[16 x n_cols] (+)= A[16 x depth] * B[depth x n_cols], A row-major 16-bit in shared memory, C fp32
// in shared memory. B is row-major [depth][n_cols] (kBTransposed = false) or stored as its transpose
// [n_cols][depth] (kBTransposed = true: B = X^T for a row-major tile X).
template <bool kBTransposed, typename T>
__device__ void warp_mma(dev::Shared<T> A, int lda, dev::Shared<T> B, int ldb, dev::Shared<float> C,
                         int ldc, int n_cols, int depth, bool accumulate) {
  using BLayout = typename std::conditional<kBTransposed, wmma::col_major, wmma::row_major>::type;
  wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, T, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, BLayout> b;
  wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> c;
  for (int n = 0; n < n_cols; n += kFrag) {
    if (accumulate)
      wmma::load_matrix_sync(c, C + n, ldc, wmma::mem_row_major);
    else
      wmma::fill_fragment(c, 0.f);
    for (int k = 0; k < depth; k += kFrag) {
      wmma::load_matrix_sync(a, A + k, lda);
      wmma::load_matrix_sync(b, kBTransposed ? B + n * ldb + k : B + k * ldb + n, ldb);
      wmma::mma_sync(c, a, b, c);
    }
    wmma::store_matrix_sync(C + n, c, ldc, wmma::mem_row_major);
  }
}

// Whether element (i, j) of a (query tile, key tile) score block takes part: j is a real key, and for a partial
// pair the scan mask admits it. Fully visible pairs of full tiles skip this test entirely.
__device__ __forceinline__ bool pair_visible(const Params& p, const TileRect& q, const TileRect& k, int i, int j) {
  if (i >= q.size() || j >= k.size()) return false;
  return scan_visible(p.scan, q.row0 + i / q.cols, q.col0 + i % q.cols, k.row0 + j / k.cols, k.col0 + j % k.cols,
                      p.grid.w);
}

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, dev::shfl_xor(x, offset));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += dev::shfl_xor(x, offset);
  return x;
}

template <int kTile>
__device__ __forceinline__ bool needs_mask(TileVisibility visibility, const TileRect& q, const TileRect& k) {
  return visibility == TileVisibility::kPartial || q.size() < kTile || k.size() < kTile;
}

// Where this thread works: its lane, the first of its warp's 16 tile rows, the (batch, head) of the block (grid is
// (tiles, batch, heads)), and the offset of element (b, 0, head, 0) of a contiguous (B, N, H, D) tensor.
struct BlockPlace {
  int lane, row0, bh;
  int64_t base;
  __device__ explicit BlockPlace(const Params& p)
      : lane(dev::lane_id()),
        row0(dev::warp_id() * kFrag),
        bh(dev::block_idx().y * p.heads + dev::block_idx().z),
        base(int64_t{dev::block_idx().y} * p.tokens * p.heads * p.dim + int64_t{dev::block_idx().z} * p.dim) {}
};

// Shared-memory carve-up: n_tiles 16-bit row tiles (kTile x dim_padded), one 16-bit kTile x kTile block (P, P^T
// or dS), then the fp32 blocks. Every piece starts on a 32-byte boundary, as WMMA loads require.
template <int kTile, typename T>
struct Smem {
  dev::Shared<T> tiles;
  dev::Shared<T> square;
  dev::Shared<float> floats;
  __device__ Smem(int n_tiles, const Params& p)
      : tiles(dev::dynamic_shared<T>()),
        square(tiles + n_tiles * kTile * p.dim_padded),
        floats(dev::cast<float>(square + kTile * kTile)) {}
  __device__ dev::Shared<T> tile(int index, const Params& p) const { return tiles + index * kTile * p.dim_padded; }
};

template <int kTile, typename T>
__global__ void __launch_bounds__(kTile * 2) forward_kernel(dev::Global<const T> LEDIT_RESTRICT Q, dev::Global<const T> LEDIT_RESTRICT K,
                                                            dev::Global<const T> LEDIT_RESTRICT V, dev::Global<T> LEDIT_RESTRICT O,
                                                            dev::Global<float> LEDIT_RESTRICT LSE, Params p) {
  // 16-bit: Q, K, V, P; fp32: S (kTile x kTile), O (kTile x dim_padded), row max m, row sum l.
  const Smem<kTile, T> smem(3, p);
  const dev::Shared<T> q_s = smem.tile(0, p), k_s = smem.tile(1, p), v_s = smem.tile(2, p), p_s = smem.square;
  const dev::Shared<float> s_s = smem.floats;
  const dev::Shared<float> o_s = s_s + kTile * kTile;
  const dev::Shared<float> row_m = o_s + kTile * p.dim_padded;
  const dev::Shared<float> row_l = row_m + kTile;
  const BlockPlace place(p);
  const int lane = place.lane, row0 = place.row0, bh = place.bh;
  const int64_t base = place.base;
  const TileRect q_rect = p.grid.rect(dev::block_idx().x);

  load_tile<kTile>(q_s, Q + base, p.grid, q_rect, p);
  for (int i = dev::thread_idx().x; i < kTile * p.dim_padded; i += dev::block_dim().x) dev::st_shared(o_s + i, 0.f);
  for (int i = dev::thread_idx().x; i < kTile; i += dev::block_dim().x) {
    dev::st_shared(row_m + i, -INFINITY);
    dev::st_shared(row_l + i, 0.f);
  }
  for (int k_tile = 0; k_tile < p.grid.num_tiles(); ++k_tile) {
    const TileRect k_rect = p.grid.rect(k_tile);
    const TileVisibility visibility = classify_tiles(p.scan, q_rect, k_rect, p.grid.w);
    if (visibility == TileVisibility::kMasked) continue;  // uniform across the block
    dev::sync_threads();  // previous K/V tiles no longer in use
    load_tile<kTile>(k_s, K + base, p.grid, k_rect, p);
    load_tile<kTile>(v_s, V + base, p.grid, k_rect, p);
    dev::sync_threads();
    const dev::Shared<float> s_rows = s_s + row0 * kTile;
    warp_mma<true>(q_s + row0 * p.dim_padded, p.dim_padded, k_s, p.dim_padded, s_rows, kTile, kTile, p.dim_padded,
                   false);
    dev::sync_warp();
    const bool masked = needs_mask<kTile>(visibility, q_rect, k_rect);
    for (int r = 0; r < kFrag; ++r) {
      const int i = row0 + r;
      float s[kTile / 32];
      float mx = -INFINITY;
      for (int t = 0; t < kTile / 32; ++t) {
        const int j = lane + 32 * t;
        s[t] = (masked && !pair_visible(p, q_rect, k_rect, i, j)) ? -INFINITY : dev::ld_shared(s_rows + (r * kTile + j)) * p.qk_scale;
        mx = fmaxf(mx, s[t]);
      }
      const float m_old = dev::ld_shared(row_m + i);
      const float m_new = fmaxf(m_old, warp_max(mx));
      const float m_safe = m_new == -INFINITY ? 0.f : m_new;  // no visible key for this row yet
      float sum = 0.f;
      for (int t = 0; t < kTile / 32; ++t) {
        const float prob = dev::exp2(s[t] - m_safe);
        sum += prob;
        dev::st_shared(p_s + (i * kTile + lane + 32 * t), dev::from_float<T>(prob));
      }
      sum = warp_sum(sum);
      const float alpha = dev::exp2(m_old - m_safe);
      for (int d = lane; d < p.dim_padded; d += 32) {
        const dev::Shared<float> o = o_s + i * p.dim_padded + d;
        dev::st_shared(o, dev::ld_shared(o) * alpha);
      }
      dev::sync_warp();
      if (lane == 0) {
        dev::st_shared(row_m + i, m_new);
        dev::st_shared(row_l + i, dev::ld_shared(row_l + i) * alpha + sum);
      }
    }
    dev::sync_warp();
    warp_mma<false>(p_s + row0 * kTile, kTile, v_s, p.dim_padded, o_s + row0 * p.dim_padded, p.dim_padded,
                    p.dim_padded, kTile, true);
  }
  dev::sync_warp();
  for (int r = 0; r < kFrag; ++r) {
    const int i = row0 + r;
    if (i >= q_rect.size()) break;
    const int token = p.grid.token(q_rect, i);
    const float l = dev::ld_shared(row_l + i);
    const dev::Global<T> out = O + base + int64_t{token} * p.heads * p.dim;
    for (int d = lane; d < p.dim; d += 32)
      dev::st_global(out + d, dev::from_float<T>(dev::ld_shared(o_s + (i * p.dim_padded + d)) / l));
    if (lane == 0)
      dev::st_global(LSE + (int64_t{bh} * p.tokens + token), (dev::ld_shared(row_m + i) + dev::log2(l)) * kLn2);
  }
}

// Per-query lse (in base 2) and delta = rowsum(dO * O) of one query tile into shared memory; padding rows get 0.
template <int kTile>
__device__ void load_row_stats(dev::Shared<float> lse2, dev::Shared<float> delta, dev::Global<const float> LSE,
                               dev::Global<const float> DELTA, int bh,
                               const TileRect& rect, const Params& p) {
  for (int i = dev::thread_idx().x; i < kTile; i += dev::block_dim().x) {
    const bool real = i < rect.size();
    const int64_t index = int64_t{bh} * p.tokens + (real ? p.grid.token(rect, i) : 0);
    dev::st_shared(lse2 + i, real ? dev::ld_global(LSE + index) * kLog2e : 0.f);
    dev::st_shared(delta + i, real ? dev::ld_global(DELTA + index) : 0.f);
  }
}

// dK and dV of one key tile. Each warp owns 16 keys: it computes S^T = K Q^T for them, so every product it
// accumulates (dV += P^T dO, dK += dS^T Q) stays in its own rows.
template <int kTile, typename T>
__global__ void __launch_bounds__(kTile * 2) backward_dkdv_kernel(
    dev::Global<const T> LEDIT_RESTRICT Q, dev::Global<const T> LEDIT_RESTRICT K, dev::Global<const T> LEDIT_RESTRICT V, dev::Global<const T> LEDIT_RESTRICT dO,
    dev::Global<const float> LEDIT_RESTRICT LSE, dev::Global<const float> LEDIT_RESTRICT DELTA, dev::Global<T> LEDIT_RESTRICT dK, dev::Global<T> LEDIT_RESTRICT dV,
    Params p) {
  // 16-bit: K, V, Q, dO, P^T/dS^T; fp32: S^T then P^T, dP^T, dK, dV, lse2, delta.
  const Smem<kTile, T> smem(4, p);
  const dev::Shared<T> k_s = smem.tile(0, p), v_s = smem.tile(1, p), q_s = smem.tile(2, p), do_s = smem.tile(3, p);
  const dev::Shared<T> pt_s = smem.square;
  const dev::Shared<float> st_s = smem.floats;
  const dev::Shared<float> dpt_s = st_s + kTile * kTile;
  const dev::Shared<float> dk_s = dpt_s + kTile * kTile;
  const dev::Shared<float> dv_s = dk_s + kTile * p.dim_padded;
  const dev::Shared<float> lse2 = dv_s + kTile * p.dim_padded;
  const dev::Shared<float> delta = lse2 + kTile;
  const BlockPlace place(p);
  const int lane = place.lane, row0 = place.row0, bh = place.bh;
  const int64_t base = place.base;
  const TileRect k_rect = p.grid.rect(dev::block_idx().x);

  load_tile<kTile>(k_s, K + base, p.grid, k_rect, p);
  load_tile<kTile>(v_s, V + base, p.grid, k_rect, p);
  for (int i = dev::thread_idx().x; i < kTile * p.dim_padded; i += dev::block_dim().x) {
    dev::st_shared(dk_s + i, 0.f);
    dev::st_shared(dv_s + i, 0.f);
  }
  for (int q_tile = 0; q_tile < p.grid.num_tiles(); ++q_tile) {
    const TileRect q_rect = p.grid.rect(q_tile);
    const TileVisibility visibility = classify_tiles(p.scan, q_rect, k_rect, p.grid.w);
    if (visibility == TileVisibility::kMasked) continue;
    dev::sync_threads();
    load_tile<kTile>(q_s, Q + base, p.grid, q_rect, p);
    load_tile<kTile>(do_s, dO + base, p.grid, q_rect, p);
    load_row_stats<kTile>(lse2, delta, LSE, DELTA, bh, q_rect, p);
    dev::sync_threads();
    const dev::Shared<float> st_rows = st_s + row0 * kTile;
    const dev::Shared<float> dpt_rows = dpt_s + row0 * kTile;
    const dev::Shared<T> pt_rows = pt_s + row0 * kTile;
    warp_mma<true>(k_s + row0 * p.dim_padded, p.dim_padded, q_s, p.dim_padded, st_rows, kTile, kTile,
                   p.dim_padded, false);
    dev::sync_warp();
    const bool masked = needs_mask<kTile>(visibility, q_rect, k_rect);
    for (int e = lane; e < kFrag * kTile; e += 32) {  // e = (key r, query i)
      const int r = e / kTile, i = e % kTile;
      const bool keep = !masked || pair_visible(p, q_rect, k_rect, i, row0 + r);
      const float prob =
          keep ? dev::exp2(dev::ld_shared(st_rows + e) * p.qk_scale - dev::ld_shared(lse2 + i)) : 0.f;
      dev::st_shared(st_rows + e, prob);
      dev::st_shared(pt_rows + e, dev::from_float<T>(prob));
    }
    dev::sync_warp();
    warp_mma<false>(pt_rows, kTile, do_s, p.dim_padded, dv_s + row0 * p.dim_padded, p.dim_padded, p.dim_padded,
                    kTile, true);
    warp_mma<true>(v_s + row0 * p.dim_padded, p.dim_padded, do_s, p.dim_padded, dpt_rows, kTile, kTile,
                   p.dim_padded, false);
    dev::sync_warp();
    for (int e = lane; e < kFrag * kTile; e += 32) {
      const int i = e % kTile;
      const float ds = dev::ld_shared(st_rows + e) * (dev::ld_shared(dpt_rows + e) - dev::ld_shared(delta + i));
      dev::st_shared(pt_rows + e, dev::from_float<T>(ds));  // dS^T
    }
    dev::sync_warp();
    warp_mma<false>(pt_rows, kTile, q_s, p.dim_padded, dk_s + row0 * p.dim_padded, p.dim_padded, p.dim_padded,
                    kTile, true);
  }
  dev::sync_warp();
  for (int r = 0; r < kFrag; ++r) {
    const int j = row0 + r;
    if (j >= k_rect.size()) break;
    const int64_t offset = base + int64_t{p.grid.token(k_rect, j)} * p.heads * p.dim;
    for (int d = lane; d < p.dim; d += 32) {
      dev::st_global(dK + (offset + d), dev::from_float<T>(dev::ld_shared(dk_s + (j * p.dim_padded + d)) * p.softmax_scale));
      dev::st_global(dV + (offset + d), dev::from_float<T>(dev::ld_shared(dv_s + (j * p.dim_padded + d))));
    }
  }
}

// dQ of one query tile; each warp owns 16 queries.
template <int kTile, typename T>
__global__ void __launch_bounds__(kTile * 2) backward_dq_kernel(
    dev::Global<const T> LEDIT_RESTRICT Q, dev::Global<const T> LEDIT_RESTRICT K, dev::Global<const T> LEDIT_RESTRICT V, dev::Global<const T> LEDIT_RESTRICT dO,
    dev::Global<const float> LEDIT_RESTRICT LSE, dev::Global<const float> LEDIT_RESTRICT DELTA, dev::Global<T> LEDIT_RESTRICT dQ, Params p) {
  // 16-bit: Q, dO, K, V, dS; fp32: S then P, dP, dQ, lse2, delta.
  const Smem<kTile, T> smem(4, p);
  const dev::Shared<T> q_s = smem.tile(0, p), do_s = smem.tile(1, p), k_s = smem.tile(2, p), v_s = smem.tile(3, p);
  const dev::Shared<T> ds_s = smem.square;
  const dev::Shared<float> s_s = smem.floats;
  const dev::Shared<float> dp_s = s_s + kTile * kTile;
  const dev::Shared<float> dq_s = dp_s + kTile * kTile;
  const dev::Shared<float> lse2 = dq_s + kTile * p.dim_padded;
  const dev::Shared<float> delta = lse2 + kTile;
  const BlockPlace place(p);
  const int lane = place.lane, row0 = place.row0, bh = place.bh;
  const int64_t base = place.base;
  const TileRect q_rect = p.grid.rect(dev::block_idx().x);

  load_tile<kTile>(q_s, Q + base, p.grid, q_rect, p);
  load_tile<kTile>(do_s, dO + base, p.grid, q_rect, p);
  load_row_stats<kTile>(lse2, delta, LSE, DELTA, bh, q_rect, p);
  for (int i = dev::thread_idx().x; i < kTile * p.dim_padded; i += dev::block_dim().x) dev::st_shared(dq_s + i, 0.f);
  for (int k_tile = 0; k_tile < p.grid.num_tiles(); ++k_tile) {
    const TileRect k_rect = p.grid.rect(k_tile);
    const TileVisibility visibility = classify_tiles(p.scan, q_rect, k_rect, p.grid.w);
    if (visibility == TileVisibility::kMasked) continue;
    dev::sync_threads();
    load_tile<kTile>(k_s, K + base, p.grid, k_rect, p);
    load_tile<kTile>(v_s, V + base, p.grid, k_rect, p);
    dev::sync_threads();
    const dev::Shared<float> s_rows = s_s + row0 * kTile;
    const dev::Shared<float> dp_rows = dp_s + row0 * kTile;
    const dev::Shared<T> ds_rows = ds_s + row0 * kTile;
    warp_mma<true>(q_s + row0 * p.dim_padded, p.dim_padded, k_s, p.dim_padded, s_rows, kTile, kTile, p.dim_padded,
                   false);
    warp_mma<true>(do_s + row0 * p.dim_padded, p.dim_padded, v_s, p.dim_padded, dp_rows, kTile, kTile,
                   p.dim_padded, false);
    dev::sync_warp();
    const bool masked = needs_mask<kTile>(visibility, q_rect, k_rect);
    for (int e = lane; e < kFrag * kTile; e += 32) {  // e = (query r, key j)
      const int r = e / kTile, j = e % kTile, i = row0 + r;
      const bool keep = !masked || pair_visible(p, q_rect, k_rect, i, j);
      const float prob =
          keep ? dev::exp2(dev::ld_shared(s_rows + e) * p.qk_scale - dev::ld_shared(lse2 + i)) : 0.f;
      const float ds = prob * (dev::ld_shared(dp_rows + e) - dev::ld_shared(delta + i));
      dev::st_shared(ds_rows + e, dev::from_float<T>(ds));
    }
    dev::sync_warp();
    warp_mma<false>(ds_rows, kTile, k_s, p.dim_padded, dq_s + row0 * p.dim_padded, p.dim_padded, p.dim_padded,
                    kTile, true);
  }
  dev::sync_warp();
  for (int r = 0; r < kFrag; ++r) {
    const int i = row0 + r;
    if (i >= q_rect.size()) break;
    const int64_t offset = base + int64_t{p.grid.token(q_rect, i)} * p.heads * p.dim;
    for (int d = lane; d < p.dim; d += 32)
      dev::st_global(dQ + (offset + d), dev::from_float<T>(dev::ld_shared(dq_s + (i * p.dim_padded + d)) * p.softmax_scale));
  }
}

// Bytes of a Smem layout: n_tiles 16-bit row tiles, the 16-bit square block, then the fp32 blocks.
size_t smem_bytes(int tile, int n_tiles, int n_score_blocks, int n_row_blocks, int n_row_vectors, int dim_padded) {
  const size_t t = static_cast<size_t>(tile), dp = static_cast<size_t>(dim_padded);
  return 2 * (static_cast<size_t>(n_tiles) * t * dp + t * t) +
         sizeof(float) * (static_cast<size_t>(n_score_blocks) * t * t + static_cast<size_t>(n_row_blocks) * t * dp +
                          static_cast<size_t>(n_row_vectors) * t);
}

// Each kernel's layout, as its comment lists it.
size_t forward_smem(int tile, int dim_padded) { return smem_bytes(tile, 3, 1, 1, 2, dim_padded); }
size_t dkdv_smem(int tile, int dim_padded) { return smem_bytes(tile, 4, 2, 2, 2, dim_padded); }
size_t dq_smem(int tile, int dim_padded) { return smem_bytes(tile, 4, 2, 1, 2, dim_padded); }

int padded_dim(int dim) { return (dim + 15) / 16 * 16; }

template <auto kKernel, typename... Args>
cudaError_t launch(int tile, size_t smem, const Params& p, int64_t batch, cudaStream_t stream, Args... args) {
  // Tiles fastest, so blocks running together share a head's K/V in L2; batch and heads each stay under 65536.
  const dim3 blocks(p.grid.num_tiles(), static_cast<unsigned>(batch), static_cast<unsigned>(p.heads));
  return dev::launch<kKernel>(dev::LaunchConfig{blocks, dim3(tile * 2), smem, stream}, args..., p);
}

template <typename T, int kTile>
cudaError_t forward_typed(const ForwardArgs& a, const Params& p, cudaStream_t stream) {
  return launch<forward_kernel<kTile, T>>(kTile, forward_smem(kTile, p.dim_padded), p, a.batch, stream, static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
                static_cast<T*>(a.out), a.lse);
}

template <typename T, int kTile>
cudaError_t backward_typed(const BackwardArgs& a, const Params& p, cudaStream_t stream) {
  const auto *q = static_cast<const T*>(a.q), *k = static_cast<const T*>(a.k), *v = static_cast<const T*>(a.v);
  const auto* dout = static_cast<const T*>(a.dout);
  const cudaError_t error =
      launch<backward_dkdv_kernel<kTile, T>>(kTile, dkdv_smem(kTile, p.dim_padded), p, a.batch, stream, q, k, v, dout, a.lse, a.delta, static_cast<T*>(a.dk), static_cast<T*>(a.dv));
  if (error != cudaSuccess) return error;
  return launch<backward_dq_kernel<kTile, T>>(kTile, dq_smem(kTile, p.dim_padded), p, a.batch, stream, q, k, v, dout, a.lse, a.delta, static_cast<T*>(a.dq));
}

}  // namespace

size_t shared_memory_bytes(int tile, int dim, bool backward) {
  return backward ? dkdv_smem(tile, padded_dim(dim)) : forward_smem(tile, padded_dim(dim));
}

int choose_tile(int dim, bool backward, size_t smem_limit) {
  for (int tile = padded_dim(dim) <= 96 ? 64 : 32; tile >= 32; tile /= 2) {
    if (shared_memory_bytes(tile, dim, backward) <= smem_limit) return tile;
  }
  return 0;
}

Params make_params(int h, int w, Scan scan, int tokens, int heads, int dim, float softmax_scale, int tile) {
  return {make_tile_grid(h, w, tile), scan, tile, tokens, heads, dim, padded_dim(dim), softmax_scale,
          softmax_scale * kLog2e};
}

cudaError_t launch_forward(const ForwardArgs& args, const Params& p, DType dtype, cudaStream_t stream) {
  const bool big_tile = p.tile == 64;
  if (dtype == DType::kFloat16)
    return big_tile ? forward_typed<dev::half, 64>(args, p, stream) : forward_typed<dev::half, 32>(args, p, stream);
  return big_tile ? forward_typed<dev::bfloat16, 64>(args, p, stream)
                  : forward_typed<dev::bfloat16, 32>(args, p, stream);
}

cudaError_t launch_backward(const BackwardArgs& args, const Params& p, DType dtype, cudaStream_t stream) {
  const bool big_tile = p.tile == 64;
  if (dtype == DType::kFloat16)
    return big_tile ? backward_typed<dev::half, 64>(args, p, stream) : backward_typed<dev::half, 32>(args, p, stream);
  return big_tile ? backward_typed<dev::bfloat16, 64>(args, p, stream)
                  : backward_typed<dev::bfloat16, 32>(args, p, stream);
}

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
