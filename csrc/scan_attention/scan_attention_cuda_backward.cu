// Backward CUDA kernels of scan_attention, FlashAttention-2 style on mma.sync m16n8k16, recomputing the probabilities
// from the forward's lse (no N x N tensor), with the forward's tile skipping:
//   backward_kv_kernel  one block per key tile: dK and dV in registers across the query tiles that see the keys,
//                       five products per tile pair (S^T, dP^T, dV, dK, and dQ added to an fp32 buffer with atomics);
//   backward_q_kernel   the deterministic alternative for dQ: one block per query tile (S, dP, dQ), when the call
//                       asks for no atomics (torch.use_deterministic_algorithms).
// delta = rowsum(dO * O) and lse come in as (B, H, N) fp32. Scores are in base 2, as in the forward.
#include "scan_attention/cuda_images.h"
#include "scan_attention/cuda_tile_math.h"
#include "scan_attention/scan_attention_cuda.h"

namespace ledit {
namespace scan_attention {
namespace cuda {
namespace {

// Per-query statistics of one query tile in shared memory: lse in base 2 and delta; padding queries get 0.
LEDIT_TILE_INLINE void load_row_stats(dev::Shared<float> lse2, dev::Shared<float> delta, dev::Global<const float> lse,
                                      dev::Global<const float> delta_in, int64_t head_offset, const TileTokens& tokens,
                                      int rows, int thread) {
  for (int i = thread; i < rows; i += kThreads) {
    const bool real = i < tokens.size();
    const int64_t index = head_offset + (real ? tokens.token(i) : 0);
    dev::st_shared(lse2 + i, real ? dev::ld_global(lse + index) * kLog2e : 0.f);
    dev::st_shared(delta + i, real ? dev::ld_global(delta_in + index) : 0.f);
  }
}

// How the 4 warps share dQ += dS K of one tile pair: one m16 query block each, then the output columns (in an even
// number of n8 blocks, for paired B fragments), then the keys (each warp adds a partial sum; atomics add them up).
template <int kQueryBlocks_, int kColumnBlocks>
struct DqSplit {
  static constexpr int kQueryBlocks = kQueryBlocks_;
  static constexpr int kParts = kWarps / kQueryBlocks;
  static constexpr int kColParts = (kColumnBlocks / kParts) % 2 == 0 ? kParts : (kColumnBlocks / 2) % 2 == 0 ? 2 : 1;
  static constexpr int kKeyParts = kParts / kColParts;
  static constexpr int kColBlocks = kColumnBlocks / kColParts;
  static_assert(kParts * kQueryBlocks == kWarps && kColBlocks * kColParts == kColumnBlocks, "uneven dQ split");
};

// Images (cuda_images.h): launch grid (key tiles * kSplits, B, H), or (a bound on them, 1, H) for a packed sequence.
template <typename T, int kDim, typename Images>
__global__ void __launch_bounds__(kThreads)
    backward_kv_kernel(dev::Global<const T> Q, dev::Global<const T> K, dev::Global<const T> V,
                       dev::Global<const T> dO, dev::Global<const float> LSE, dev::Global<const float> DELTA,
                       dev::Global<T> dK, dev::Global<T> dV, dev::Global<float> dQ_accum, KernelParams p,
                       Images images) {
  using Shape = BackwardShape<kDim>;
  constexpr int kQueries = Shape::kBlockM, kNq = kQueries / 8, kSteps = kDim / 16, kAccD = Shape::kDimAcc / 8;
  using KVTile = SmemTile<T, Shape::kBlockN, kDim>;
  using QTile = SmemTile<T, kQueries, kDim>;
  using DsTile = SmemTile<T, Shape::kBlockN, kQueries>;
  constexpr int kStageElements = 2 * QTile::kElements + 2 * kQueries * sizeof(float) / sizeof(T);
  const int thread = dev::thread_idx().x, lane = dev::lane_id(), warp = dev::warp_id(), key_row0 = 16 * warp;
  const ImageSite site = images.locate(static_cast<int>(dev::block_idx().x / Shape::kSplits));
  if (!site.real) return;
  const int64_t batch = site.batch, head = dev::block_idx().z;
  const int w = site.w;
  const int split = dev::block_idx().x % Shape::kSplits, col0 = split * Shape::kDimAcc;
  const TileGrid q_tiles = images.tiles(p.q_tiles, site, kQueries);

  // Shared memory: K, V, dS^T, then per stage Q, dO, lse2, delta.
  const KVTile k_s{dev::dynamic_shared<T>()}, v_s{k_s.base + KVTile::kElements};
  const DsTile ds_s{v_s.base + KVTile::kElements};
  const dev::Shared<T> stages = ds_s.base + DsTile::kElements;
  auto q_s = [&](int stage) { return QTile{stages + stage * kStageElements}; };
  auto do_s = [&](int stage) { return QTile{stages + stage * kStageElements + QTile::kElements}; };
  auto lse2_s = [&](int stage) { return dev::cast<float>(stages + stage * kStageElements + 2 * QTile::kElements); };
  auto delta_s = [&](int stage) { return lse2_s(stage) + kQueries; };

  const HeadRows<T> q_rows{Q + first_row(p.q, site, head), p.q.token};
  const HeadRows<T> do_rows{dO + first_row(p.o, site, head), p.o.token};
  const int64_t stats_offset = (batch * p.heads + head) * p.tokens + site.token0;
  const TileRect k_rect = images.tiles(p.k_tiles, site, Shape::kBlockN).rect(site.tile);
  const TileTokens k_tokens(k_rect, w);
  const HeadRows<T> k_rows{K + first_row(p.k, site, head), p.k.token};
  const HeadRows<T> v_rows{V + first_row(p.v, site, head), p.v.token};
  copy_tiles_async<2>({k_s, v_s}, {k_rows, v_rows}, k_tokens, p.dim, thread);

  float dk[1][kAccD][4], dv[1][kAccD][4];
  zero(dk);
  zero(dv);
  constexpr int kKVFragments = Shape::kKVInRegisters ? kSteps : 1;
  uint32_t k_frag[kKVFragments][4], v_frag[kKVFragments][4];
  bool kv_in_registers = false;

  auto issue = [&](const TileRect& rect, int stage) {
    const TileTokens q_tokens(rect, w);
    copy_tiles_async<2>({q_s(stage), do_s(stage)}, {q_rows, do_rows}, q_tokens, p.dim, thread);
    load_row_stats(lse2_s(stage), delta_s(stage), LSE, DELTA, stats_offset, q_tokens, kQueries, thread);
  };
  // A fragments of the warp's 16 rows of K or V: from registers, or ldmatrix when they do not fit there.
  auto warp_rows = [&](const KVTile& x, const uint32_t (&frag)[kKVFragments][4]) {
    return [&, x](int, int step, uint32_t (&a)[4]) {
      if constexpr (Shape::kKVInRegisters) {
        LEDIT_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = frag[step][i];
      } else {
        load_a(a, x, key_row0, 16 * step, lane);
      }
    };
  };
  auto accumulate = [&](const TileRect& rect, TileVisibility visibility, int stage) {
    if constexpr (Shape::kKVInRegisters) {
      if (!kv_in_registers) {
        LEDIT_UNROLL
        for (int step = 0; step < kSteps; ++step) {
          load_a(k_frag[step], k_s, key_row0, 16 * step, lane);
          load_a(v_frag[step], v_s, key_row0, 16 * step, lane);
        }
        kv_in_registers = true;
      }
    }
    const TileTokens q_tokens(rect, w);
    const bool masked =
        visibility == TileVisibility::kPartial || q_tokens.size() < kQueries || k_tokens.size() < Shape::kBlockN;
    uint32_t visible[1][2];
    if (masked) {
      with_scan(p.scan, [&](auto scan) {
        visibility_bits<1, kNq, decltype(scan)::value>(visible, k_tokens, key_row0, q_tokens, false, w, lane);
      });
    }
    // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys against the tile's queries.
    float st[1][kNq][4], dpt[1][kNq][4];
    zero(st);
    zero(dpt);
    mma_a_xt<T, 1, kNq, kSteps>(st, warp_rows(k_s, k_frag), q_s(stage), 0, 0, lane);
    mma_a_xt<T, 1, kNq, kSteps>(dpt, warp_rows(v_s, v_frag), do_s(stage), 0, 0, lane);
    if (masked) apply_mask(st, visible);
    // P^T = 2^(S^T scale - lse2[query]) and dS^T = P^T (dP^T - delta[query]), in place.
    const dev::Shared<float> lse2 = lse2_s(stage), delta = delta_s(stage);
    LEDIT_UNROLL
    for (int n = 0; n < kNq; ++n) {
      const int col = 8 * n + 2 * (lane % 4);
      const float2 l2 = dev::ld_shared(dev::cast<float2>(lse2 + col));
      const float2 dl = dev::ld_shared(dev::cast<float2>(delta + col));
      LEDIT_UNROLL
      for (int i = 0; i < 4; ++i) {
        const float prob = dev::exp2(fmaf(st[0][n][i], p.qk_scale, -(i % 2 ? l2.y : l2.x)));
        st[0][n][i] = prob;
        dpt[0][n][i] = prob * (dpt[0][n][i] - (i % 2 ? dl.y : dl.x));
      }
    }
    uint32_t pt_frag[1][kNq / 2][4], dst_frag[1][kNq / 2][4];
    to_a_fragments<T>(pt_frag, st);
    to_a_fragments<T>(dst_frag, dpt);
    auto from = [](const uint32_t (&frag)[1][kNq / 2][4]) {
      return [&frag](int, int step, uint32_t (&a)[4]) {
        LEDIT_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = frag[0][step][i];
      };
    };
    mma_a_x<T, 1, kAccD, kNq / 2>(dv, from(pt_frag), do_s(stage), 0, col0, lane);  // dV += P^T dO
    mma_a_x<T, 1, kAccD, kNq / 2>(dk, from(dst_frag), q_s(stage), 0, col0, lane);  // dK += dS^T Q
    if (dQ_accum == nullptr) return;

    // dQ += dS K over this block's keys: dS^T to shared memory (each A fragment register is a (row, 2 columns)
    // pair), then the warps split the tile's queries (DqSplit) and add their parts to dQ_accum.
    LEDIT_UNROLL
    for (int j = 0; j < kNq / 2; ++j) {
      LEDIT_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int row = key_row0 + lane / 4 + 8 * (i % 2), col = 16 * j + 8 * (i / 2) + 2 * (lane % 4);
        dev::st_shared(dev::cast<uint32_t>(ds_s.at(row, col)), dst_frag[0][j][i]);
      }
    }
    dev::sync_threads();
    using Split = DqSplit<kQueries / 16, kAccD>;
    const int query_row0 = 16 * (warp % Split::kQueryBlocks);
    const int part = warp / Split::kQueryBlocks, part_col0 = col0 + 8 * Split::kColBlocks * (part % Split::kColParts);
    const int key0 = Shape::kBlockN / Split::kKeyParts * (part / Split::kColParts);
    float dq[1][Split::kColBlocks][4];
    zero(dq);
    mma_a_x<T, 1, Split::kColBlocks, Shape::kBlockN / 16 / Split::kKeyParts>(
        dq, [&](int, int step, uint32_t (&a)[4]) { load_a_of_transpose(a, ds_s, query_row0, key0 + 16 * step, lane); },
        k_s, key0, part_col0, lane);
    LEDIT_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int row = query_row0 + 8 * h + lane / 4;
      if (row >= q_tokens.size()) continue;
      // dQ_accum's rows are kDim wide (padding columns get zeros and are dropped by the caller), so no column needs
      // a test and every atomic is this lane's first column plus a compile-time offset (an immediate).
      const dev::Global<float> dq_lane =
          dQ_accum + (((batch * p.tokens + site.token0 + q_tokens.token(row)) * p.heads + head) * kDim + part_col0 +
                      2 * (lane % 4));
      LEDIT_UNROLL
      for (int n = 0; n < Split::kColBlocks; ++n) {
        LEDIT_UNROLL
        for (int e = 0; e < 2; ++e) dev::atomic_add(dq_lane + (8 * n + e), dq[0][n][2 * h + e]);
      }
    }
  };
  for_each_visible_tile(q_tiles, k_rect, /*own_is_query=*/false, p.scan, w, p.double_buffer, issue, accumulate);

  // dK (times the softmax scale) and dV through K's and V's tiles, now free.
  dev::sync_threads();
  const float dk_scale[1][2] = {{p.softmax_scale, p.softmax_scale}}, dv_scale[1][2] = {{1.f, 1.f}};
  store_rows(dk, dk_scale, k_s, key_row0, dK + first_row(p.dk, site, head), p.dk.token, k_tokens, col0,
             p.dim, lane);
  store_rows(dv, dv_scale, v_s, key_row0, dV + first_row(p.dv, site, head), p.dv.token, k_tokens, col0,
             p.dim, lane);
}

// Images (cuda_images.h): launch grid (query tiles, B, H), or (a bound on them, 1, H) for a packed sequence.
template <typename T, int kDim, typename Images>
__global__ void __launch_bounds__(kThreads)
    backward_q_kernel(dev::Global<const T> Q, dev::Global<const T> K, dev::Global<const T> V, dev::Global<const T> dO,
                      dev::Global<const float> LSE, dev::Global<const float> DELTA, dev::Global<T> dQ,
                      KernelParams p, Images images) {
  using Shape = BackwardShape<kDim>;
  constexpr int kN = Shape::kQBlockN / 8, kSteps = kDim / 16, kD = kDim / 8;
  constexpr bool kInRegisters = Shape::kQInRegisters;
  using QTile = SmemTile<T, Shape::kQBlockM, kDim>;
  using KVTile = SmemTile<T, Shape::kQBlockN, kDim>;
  const int thread = dev::thread_idx().x, lane = dev::lane_id(), row0 = 16 * dev::warp_id();
  const ImageSite site = images.locate(static_cast<int>(dev::block_idx().x));
  if (!site.real) return;
  const int64_t batch = site.batch, head = dev::block_idx().z;
  const int w = site.w;
  const TileGrid k_tiles = images.tiles(p.k_tiles, site, Shape::kQBlockN);

  // Shared memory: Q, dO, then K and V of stage 0, then of stage 1.
  const QTile q_s{dev::dynamic_shared<T>()}, do_s{q_s.base + QTile::kElements};
  auto k_s = [&](int stage) { return KVTile{do_s.base + QTile::kElements + 2 * stage * KVTile::kElements}; };
  auto v_s = [&](int stage) { return KVTile{do_s.base + QTile::kElements + (2 * stage + 1) * KVTile::kElements}; };
  const HeadRows<T> k_rows{K + first_row(p.k, site, head), p.k.token};
  const HeadRows<T> v_rows{V + first_row(p.v, site, head), p.v.token};

  const TileRect q_rect = images.tiles(p.q_tiles, site, Shape::kQBlockM).rect(site.tile);
  const TileTokens q_tokens(q_rect, w);
  const HeadRows<T> q_rows{Q + first_row(p.q, site, head), p.q.token};
  const HeadRows<T> do_rows{dO + first_row(p.o, site, head), p.o.token};
  copy_tiles_async<2>({q_s, do_s}, {q_rows, do_rows}, q_tokens, p.dim, thread);
  float lse2[2], delta[2];
  LEDIT_UNROLL
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h + lane / 4;
    const bool real = row < q_tokens.size();
    const int64_t index = (batch * p.heads + head) * p.tokens + site.token0 + (real ? q_tokens.token(row) : 0);
    lse2[h] = real ? dev::ld_global(LSE + index) * kLog2e : 0.f;
    delta[h] = real ? dev::ld_global(DELTA + index) : 0.f;
  }

  float dq[1][kD][4];
  zero(dq);
  uint32_t q_frag[kInRegisters ? kSteps : 1][4], do_frag[kInRegisters ? kSteps : 1][4];
  bool in_registers = false;
  auto rows_of = [&](const QTile& x, const uint32_t (&frag)[kInRegisters ? kSteps : 1][4]) {
    return [&, x](int, int step, uint32_t (&a)[4]) {
      if constexpr (kInRegisters) {
        LEDIT_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = frag[step][i];
      } else {
        load_a(a, x, row0, 16 * step, lane);
      }
    };
  };
  auto issue = [&](const TileRect& rect, int stage) {
    const TileTokens k_tokens(rect, w);
    copy_tiles_async<2>({k_s(stage), v_s(stage)}, {k_rows, v_rows}, k_tokens, p.dim, thread);
  };
  auto accumulate = [&](const TileRect& rect, TileVisibility visibility, int stage) {
    if constexpr (kInRegisters) {
      if (!in_registers) {
        LEDIT_UNROLL
        for (int step = 0; step < kSteps; ++step) {
          load_a(q_frag[step], q_s, row0, 16 * step, lane);
          load_a(do_frag[step], do_s, row0, 16 * step, lane);
        }
        in_registers = true;
      }
    }
    const TileTokens k_tokens(rect, w);
    const bool masked = visibility == TileVisibility::kPartial || k_tokens.size() < Shape::kQBlockN;
    uint32_t visible[1][2];
    if (masked) {
      with_scan(p.scan, [&](auto scan) {
        visibility_bits<1, kN, decltype(scan)::value>(visible, q_tokens, row0, k_tokens, true, w, lane);
      });
    }
    float s[1][kN][4], dp[1][kN][4];
    zero(s);
    zero(dp);
    mma_a_xt<T, 1, kN, kSteps>(s, rows_of(q_s, q_frag), k_s(stage), 0, 0, lane);
    mma_a_xt<T, 1, kN, kSteps>(dp, rows_of(do_s, do_frag), v_s(stage), 0, 0, lane);
    if (masked) apply_mask(s, visible);
    LEDIT_UNROLL
    for (int n = 0; n < kN; ++n) {
      LEDIT_UNROLL
      for (int i = 0; i < 4; ++i) {
        const float prob = dev::exp2(fmaf(s[0][n][i], p.qk_scale, -lse2[i / 2]));
        dp[0][n][i] = prob * (dp[0][n][i] - delta[i / 2]);  // dS
      }
    }
    uint32_t ds_frag[1][kN / 2][4];
    to_a_fragments<T>(ds_frag, dp);
    mma_a_x<T, 1, kD, kN / 2>(
        dq,
        [&](int, int step, uint32_t (&a)[4]) {
          LEDIT_UNROLL
          for (int i = 0; i < 4; ++i) a[i] = ds_frag[0][step][i];
        },
        k_s(stage), 0, 0, lane);  // dQ += dS K
  };
  for_each_visible_tile(k_tiles, q_rect, /*own_is_query=*/true, p.scan, w, p.double_buffer, issue, accumulate);

  dev::sync_threads();
  const float scale[1][2] = {{p.softmax_scale, p.softmax_scale}};
  store_rows(dq, scale, q_s, row0, dQ + first_row(p.dq, site, head), p.dq.token, q_tokens, 0, p.dim, lane);
}

KernelParams backward_params(const BackwardArgs& a, const Problem& problem, int query_tile, int key_tile) {
  KernelParams p = kernel_params(problem, query_tile, key_tile, a.double_buffer);
  p.q = a.q_layout;
  p.k = a.k_layout;
  p.v = a.v_layout;
  p.o = a.dout_layout;
  p.dq = a.dq_layout;
  p.dk = a.dk_layout;
  p.dv = a.dv_layout;
  return p;
}

template <typename T, int kDim>
cudaError_t launch_backward_typed(const BackwardArgs& a, const Problem& problem, const PackedGrids* packed,
                                  cudaStream_t stream) {
  using Shape = BackwardShape<kDim>;
  const auto *q = static_cast<const T*>(a.q), *k = static_cast<const T*>(a.k), *v = static_cast<const T*>(a.v);
  const auto* dout = static_cast<const T*>(a.dout);
  const auto batch = static_cast<unsigned>(a.batch), heads = static_cast<unsigned>(problem.heads);
  // Each kernel with Images = ImageBatch over the launch grid `tiles` x (B, H), or PackedImages over a bound.
  auto launch_over = [&](auto launch, unsigned tiles, int capacity, const int32_t* unit_offsets) {
    if (packed == nullptr) return launch(dim3(tiles, batch, heads), ImageBatch{problem.h, problem.w});
    return launch(dim3(packed_launch_tiles(*packed, problem, capacity), 1, heads),
                  PackedImages{packed->grids, packed->token_offsets, unit_offsets, packed->count});
  };
  const KernelParams kv = backward_params(a, problem, Shape::kBlockM, Shape::kBlockN);
  cudaError_t error = launch_over(
      [&](dim3 grid, auto images) {
        grid.x *= Shape::kSplits;
        return dev::launch<backward_kv_kernel<T, kDim, decltype(images)>>(
            dev::LaunchConfig{grid, dim3(kThreads), Shape::smem_kv(a.double_buffer), stream}, q, k, v, dout, a.lse, a.delta,
            static_cast<T*>(a.dk), static_cast<T*>(a.dv), a.dq_accum, kv, images);
      },
      kv.k_tiles.num_tiles(), Shape::kBlockN, packed != nullptr ? packed->key_units : nullptr);
  if (error != cudaSuccess || a.dq_accum != nullptr) return error;
  const KernelParams qp = backward_params(a, problem, Shape::kQBlockM, Shape::kQBlockN);
  return launch_over(
      [&](dim3 grid, auto images) {
        return dev::launch<backward_q_kernel<T, kDim, decltype(images)>>(
            dev::LaunchConfig{grid, dim3(kThreads), Shape::smem_q(a.double_buffer), stream}, q, k, v, dout, a.lse,
            a.delta, static_cast<T*>(a.dq), qp, images);
      },
      qp.q_tiles.num_tiles(), Shape::kQBlockM, packed != nullptr ? packed->dq_units : nullptr);
}

}  // namespace

cudaError_t launch_backward(const BackwardArgs& args, const Problem& problem, DType dtype, const PackedGrids* packed,
                            cudaStream_t stream) {
  return with_padded_dim(problem.dim, [&](auto padded) {
    constexpr int kDim = decltype(padded)::value;
    return dtype == DType::kFloat16 ? launch_backward_typed<dev::half, kDim>(args, problem, packed, stream)
                                    : launch_backward_typed<dev::bfloat16, kDim>(args, problem, packed, stream);
  });
}

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
