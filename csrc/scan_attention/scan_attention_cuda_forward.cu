// Forward CUDA kernel of scan_attention, FlashAttention-2 style on mma.sync m16n8k16 (sm_80+, runs on sm_90), under
// a 2D scan mask: one block per (query tile, batch, head); key tiles the scan masks entirely are never loaded; the
// others stream through shared memory with cp.async, double-buffered; S = Q K^T, P and O live in registers; the
// online softmax works on the accumulator fragments with quad shuffles; only partial tile pairs (and edge tiles)
// evaluate the mask per element. Tiles and the mask predicate are scan_tiles.h / scan_mask.h, shared with the CPU
// kernel. Scores are in base 2 (q.k * softmax_scale * log2(e)); lse is saved in natural-log units.
#include "scan_attention/cuda_images.h"
#include "scan_attention/cuda_tile_math.h"
#include "scan_attention/scan_attention_cuda.h"

namespace ledit {
namespace scan_attention {
namespace cuda {
namespace {

// One key tile of the online softmax (FlashAttention-2) on a warp's score fragments: each row's new maximum over
// the 4 lanes that hold it (two shuffles), O and the running sums rescaled once, and s replaced by
// P = 2^(s * scale - max). The running sums stay per lane until the end.
template <int kM, int kN, int kD>
LEDIT_TILE_INLINE void online_softmax(float (&s)[kM][kN][4], float (&row_max)[kM][2], float (&row_sum)[kM][2],
                                      float (&o)[kM][kD][4], float scale) {
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) {
    LEDIT_UNROLL
    for (int h = 0; h < 2; ++h) {
      float tile_max = -INFINITY;
      LEDIT_UNROLL
      for (int n = 0; n < kN; ++n) tile_max = fmaxf(tile_max, fmaxf(s[m][n][2 * h], s[m][n][2 * h + 1]));
      tile_max = fmaxf(tile_max, dev::shfl_xor(tile_max, 1));
      tile_max = fmaxf(tile_max, dev::shfl_xor(tile_max, 2));
      const float new_max = fmaxf(row_max[m][h], tile_max * scale);
      const float base = new_max == -INFINITY ? 0.f : new_max;  // no visible key in this row yet
      const float alpha = dev::exp2_approx(row_max[m][h] - base);
      row_max[m][h] = new_max;
      float sum = 0.f;
      LEDIT_UNROLL
      for (int n = 0; n < kN; ++n) {
        LEDIT_UNROLL
        for (int e = 0; e < 2; ++e) {
          float& x = s[m][n][2 * h + e];
          x = dev::exp2_approx(fmaf(x, scale, -base));
          sum += x;
        }
      }
      row_sum[m][h] = row_sum[m][h] * alpha + sum;
      LEDIT_UNROLL
      for (int d = 0; d < kD; ++d) {
        o[m][d][2 * h] *= alpha;
        o[m][d][2 * h + 1] *= alpha;
      }
    }
  }
}

// Images: ImageBatch (launch grid: query tiles, B, H) or PackedImages (a bound on the query tiles, 1, H).
template <typename T, int kDim, typename Images>
__global__ void __launch_bounds__(kThreads, 2)
    forward_kernel(dev::Global<const T> Q, dev::Global<const T> K, dev::Global<const T> V, dev::Global<T> O,
                   dev::Global<float> LSE, KernelParams p, Images images) {
  using Shape = ForwardShape<kDim>;
  constexpr int kM = Shape::kRowBlocks, kN = Shape::kBlockN / 8, kD = kDim / 8, kSteps = kDim / 16;
  using QTile = SmemTile<T, Shape::kBlockM, kDim>;
  using KVTile = SmemTile<T, Shape::kBlockN, kDim>;
  const int thread = dev::thread_idx().x, lane = dev::lane_id(), warp_row0 = dev::warp_id() * 16 * kM;
  const ImageSite site = images.locate(static_cast<int>(dev::block_idx().x));
  if (!site.real) return;
  const int64_t batch = site.batch, head = dev::block_idx().z;
  const int w = site.w;
  const TileGrid k_tiles = images.tiles(p.k_tiles, site, Shape::kBlockN);

  // Shared memory: Q, then K and V of stage 0, then of stage 1.
  const QTile q_s{dev::dynamic_shared<T>()};
  auto k_s = [&](int stage) { return KVTile{q_s.base + QTile::kElements + 2 * stage * KVTile::kElements}; };
  auto v_s = [&](int stage) { return KVTile{q_s.base + QTile::kElements + (2 * stage + 1) * KVTile::kElements}; };
  const HeadRows<T> q_rows{Q + first_row(p.q, site, head), p.q.token};
  const HeadRows<T> k_rows{K + first_row(p.k, site, head), p.k.token};
  const HeadRows<T> v_rows{V + first_row(p.v, site, head), p.v.token};

  const TileRect q_rect = images.tiles(p.q_tiles, site, Shape::kBlockM).rect(site.tile);
  const TileTokens q_tokens(q_rect, w);
  copy_tiles_async<1>({q_s}, {q_rows}, q_tokens, p.dim, thread);

  float o[kM][kD][4], row_max[kM][2], row_sum[kM][2];
  zero(o);
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) row_max[m][0] = row_max[m][1] = -INFINITY, row_sum[m][0] = row_sum[m][1] = 0.f;

  auto issue = [&](const TileRect& rect, int stage) {
    const TileTokens k_tokens(rect, w);
    copy_tiles_async<2>({k_s(stage), v_s(stage)}, {k_rows, v_rows}, k_tokens, p.dim, thread);
  };
  auto attend = [&](const TileRect& rect, TileVisibility visibility, int stage) {
    const TileTokens k_tokens(rect, w);
    const bool masked = visibility == TileVisibility::kPartial || k_tokens.size() < Shape::kBlockN;
    uint32_t visible[kM][2];
    if (masked) {
      with_scan(p.scan, [&](auto scan) {
        visibility_bits<kM, kN, decltype(scan)::value>(visible, q_tokens, warp_row0, k_tokens, true, w, lane);
      });
    }
    float s[kM][kN][4];
    zero(s);
    mma_a_xt<T, kM, kN, kSteps>(
        s,
        [&](int m, int step, uint32_t (&a)[4]) { load_a(a, q_s, warp_row0 + 16 * m, 16 * step, lane); },
        k_s(stage), 0, 0, lane);
    if (masked) apply_mask(s, visible);
    online_softmax(s, row_max, row_sum, o, p.qk_scale);
    uint32_t p_frag[kM][kN / 2][4];
    to_a_fragments<T>(p_frag, s);
    mma_a_x<T, kM, kD, kN / 2>(
        o,
        [&](int m, int step, uint32_t (&a)[4]) {
          LEDIT_UNROLL
          for (int i = 0; i < 4; ++i) a[i] = p_frag[m][step][i];
        },
        v_s(stage), 0, 0, lane);
  };
  for_each_visible_tile(k_tiles, q_rect, /*own_is_query=*/true, p.scan, w, p.double_buffer, issue, attend);

  // Epilogue: full row sums over the quad, O / l through Q's tile (now free) to global memory, and lse.
  float inv_sum[kM][2];
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) {
    LEDIT_UNROLL
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[m][h];
      sum += dev::shfl_xor(sum, 1);
      sum += dev::shfl_xor(sum, 2);
      inv_sum[m][h] = sum > 0.f ? 1.f / sum : 0.f;
      // One lane of the quad stores the row's lse; padding rows past the tile's tokens store nothing.
      const int row = warp_row0 + 16 * m + 8 * h + lane / 4;
      const bool real = row < q_tokens.size();
      const int64_t index = (batch * p.heads + head) * p.tokens + site.token0 + q_tokens.token(real ? row : 0);
      dev::st_global_if(lane % 4 == 0 && real, LSE + index, (row_max[m][h] + dev::log2(sum)) * kLn2);
    }
  }
  store_rows(o, inv_sum, q_s, warp_row0, O + first_row(p.o, site, head),
             p.o.token, q_tokens, 0, p.dim, lane);
}

template <typename T, int kDim>
cudaError_t launch_forward_typed(const ForwardArgs& a, const Problem& problem, const PackedGrids* packed,
                                 cudaStream_t stream) {
  using Shape = ForwardShape<kDim>;
  KernelParams p = kernel_params(problem, Shape::kBlockM, Shape::kBlockN, a.double_buffer);
  p.q = a.q_layout;
  p.k = a.k_layout;
  p.v = a.v_layout;
  p.o = a.out_layout;
  const auto heads = static_cast<unsigned>(p.heads);
  const size_t smem = Shape::smem(p.double_buffer);
  const auto *q = static_cast<const T*>(a.q), *k = static_cast<const T*>(a.k), *v = static_cast<const T*>(a.v);
  auto* out = static_cast<T*>(a.out);
  if (packed != nullptr) {
    const dim3 grid(packed_launch_tiles(*packed, problem, Shape::kBlockM), 1, heads);
    return dev::launch<forward_kernel<T, kDim, PackedImages>>(
        dev::LaunchConfig{grid, dim3(kThreads), smem, stream}, q, k, v, out, a.lse, p,
        PackedImages{packed->grids, packed->token_offsets, packed->forward_units, packed->count});
  }
  const dim3 grid(p.q_tiles.num_tiles(), static_cast<unsigned>(a.batch), heads);
  return dev::launch<forward_kernel<T, kDim, ImageBatch>>(dev::LaunchConfig{grid, dim3(kThreads), smem, stream}, q,
                                                          k, v, out, a.lse, p, ImageBatch{problem.h, problem.w});
}

}  // namespace

cudaError_t launch_forward(const ForwardArgs& args, const Problem& problem, DType dtype, const PackedGrids* packed,
                           cudaStream_t stream) {
  return with_padded_dim(problem.dim, [&](auto padded) {
    constexpr int kDim = decltype(padded)::value;
    return dtype == DType::kFloat16 ? launch_forward_typed<dev::half, kDim>(args, problem, packed, stream)
                                    : launch_forward_typed<dev::bfloat16, kDim>(args, problem, packed, stream);
  });
}

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
