// CUDA kernels of ledit::dwconv_modulate_fwd / _bwd, behind the launchers of dwconv_modulate_cuda.h.
//
// A CTA owns a tile of kTileRows x kTileCols tokens by kTileChannels channels: one warp lane per channel, the
// kWarps warps splitting the tile's tokens. The tile and its halo (pad = dilation * (k - 1) / 2 tokens on each
// side) are staged in shared memory as fp32, with zeros outside the grid, so the k*k taps need no bounds checks.
// A tile covers only 32 channels while LayerNorm needs all of a token's channels, so a stats kernel (a warp per
// token) runs first and writes the (B, N) mean and 1/std that the backward reuses.
//
// Backward: the tile kernel stages y (recomputed from x and the saved stats) and g = grad_out with halos, writes
// du (or dx without LN) and each token's partial channel sums of du and du * u, and reduces its token sums
// (dweight, dbias, dshift, dscale, dgate material, see dwconv_modulate.h) across warps into one row per CTA; no
// atomics, so results are deterministic. A second, elementwise kernel finishes the LayerNorm backward, and the
// per-CTA rows are summed by the caller.
//
// A batch and a packed sequence run the same tile code; only where a CTA's tile lies differs (the Tiles policy of
// the tile kernels). A batch's tiles come from the launch grid. A packed sequence's CTAs take the images' tiles end
// to end (common/packed_images.h): CTA u finds its image by binary search over unit_offsets, so the launch covers a
// bound from shapes only (no host read of the grids) and CTAs past the last tile exit. Each image has its own zero
// border and its own row of shift/scale/gate, so no tap reads another image.
#include <algorithm>

#include "common/device.h"
#include "common/packed_images.h"
#include "dwconv_modulate/dwconv_modulate.h"
#include "dwconv_modulate/dwconv_modulate_cuda.h"

namespace ledit {
namespace dwconv_modulate {
namespace cuda {
namespace {

namespace dev = ::ledit::device;

constexpr int kTileChannels = 32;  // one lane per channel: shared-memory rows of 32 floats are conflict-free
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// What every CTA of a launch shares; tokens counts the call's tokens (all images).
struct TileGeometry {
  int channels, dilation, pad, halo_rows, halo_cols, channel_tiles;
  int64_t tokens;
};

TileGeometry make_tile_geometry(int channels, int k, int dilation, int64_t tokens) {
  const int pad = dilation * (k / 2);
  return {channels, dilation, pad, kTileRows + 2 * pad, kTileCols + 2 * pad, channel_tiles(channels), tokens};
}

// Where a CTA's tile lies: its image (the row of shift/scale/gate; -1 for no tile), the image's grid and first
// token, the tile's top-left grid position, and the CTA's row of token sums in the backward's cta_sums.
struct TileSite {
  int image, h, w;
  int64_t token0;
  int row0, col0;
  int64_t cta;
  // The token at (row, col) of the image.
  __device__ __forceinline__ int64_t token(int row, int col) const {
    return token0 + static_cast<int64_t>(row) * w + col;
  }
};

// B images of one h x w grid: launch grid (column tiles, row tiles, B * channel tiles).
struct ImageBatch {
  int h, w, row_tiles, col_tiles;

  __device__ __forceinline__ TileSite locate(int channel_tiles) const {
    const uint3 block = dev::block_idx();
    const int b = block.z / channel_tiles;
    return {b,
            h,
            w,
            static_cast<int64_t>(b * h) * w,  // B * h < 2^31 (the glue checks): 64-bit only past the rows
            static_cast<int>(block.y) * kTileRows,
            static_cast<int>(block.x) * kTileCols,
            (static_cast<int64_t>(b) * row_tiles + block.y) * col_tiles + block.x};
  }
};

// A packed sequence (common/packed_images.h): launch grid (a bound on the tiles, 1, channel tiles); image i's tiles,
// row-major over its tile grid, are the units [unit_offsets[i], unit_offsets[i + 1]).
struct PackedImages {
  dev::Global<const int32_t> grids, token_offsets, unit_offsets;
  int count;

  __device__ __forceinline__ TileSite locate(int) const {
    const int64_t unit = dev::block_idx().x;
    const int i = segment_of_at([this](int j) { return dev::ld_global(unit_offsets + j); }, count, unit);
    if (i == count) return {-1, 0, 0, 0, 0, 0, 0};  // past the last image's tiles: the launch covers a bound
    const int w = dev::ld_global(grids + (2 * i + 1));
    const int tile = static_cast<int>(unit - dev::ld_global(unit_offsets + i));
    const int col_tiles = (w + kTileCols - 1) / kTileCols;
    return {i,
            dev::ld_global(grids + 2 * i),
            w,
            dev::ld_global(token_offsets + i),
            (tile / col_tiles) * kTileRows,
            (tile % col_tiles) * kTileCols,
            unit};
  }
};

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += dev::shfl_xor(v, offset);
  return v;
}

// A warp per token. Shifting by one of the token's own values keeps E[x^2] - E[x]^2 from cancelling when the
// mean is large against the spread.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) layer_norm_stats_kernel(dev::Global<const scalar_t> LEDIT_RESTRICT x,
                                                                    dev::Global<float> LEDIT_RESTRICT mean,
                                                                    dev::Global<float> LEDIT_RESTRICT rstd,
                                                                    int64_t n_tokens, int channels) {
  const int lane = dev::lane_id();
  const int64_t token = static_cast<int64_t>(dev::block_idx().x) * kWarps + dev::warp_id();
  if (token >= n_tokens) return;
  const dev::Global<const scalar_t> row = x + token * channels;
  const float pivot = dev::to_float(dev::ld_global(row));
  float sum = 0.f, squares = 0.f;
  for (int c = lane; c < channels; c += 32) {
    const float v = dev::to_float(dev::ld_global(row + c)) - pivot;
    sum += v;
    squares += v * v;
  }
  sum = warp_sum(sum);
  squares = warp_sum(squares);
  if (lane == 0) {
    const float shifted_mean = sum / channels;
    dev::st_global(mean + token, pivot + shifted_mean);
    dev::st_global(rstd + token, layer_norm_rstd(fmaxf(squares / channels - shifted_mean * shifted_mean, 0.f)));
  }
}

// Per-lane channel constants of a tile.
struct ChannelParams {
  int channel;
  bool ok;
  float shift, scale1p, gate, bias;
};

__device__ ChannelParams channel_params(int image, int channel, int channels, dev::Global<const float> shift,
                                        dev::Global<const float> scale, dev::Global<const float> gate,
                                        dev::Global<const float> bias) {
  const bool ok = channel < channels;
  ChannelParams p{channel, ok, 0.f, 1.f, 1.f, 0.f};
  if (ok) {
    const int row = image * channels + channel;
    p.shift = dev::ld_global(shift + row);
    p.scale1p = 1.f + dev::ld_global(scale + row);
    if (gate != nullptr) p.gate = dev::ld_global(gate + row);
    if (bias != nullptr) p.bias = dev::ld_global(bias + channel);
  }
  return p;
}

// Stage the tile's halo of y = LN(x) * (1 + scale) + shift (with_modulation) or of raw values, zero outside.
template <typename scalar_t>
__device__ void stage_halo(dev::Shared<float> tile, dev::Global<const scalar_t> src, dev::Global<const float> mean,
                           dev::Global<const float> rstd, bool with_modulation, const ChannelParams& p,
                           const TileSite& site, const TileGeometry& g) {
  const int lane = dev::lane_id(), warp = dev::warp_id();
  for (int t = warp; t < g.halo_rows * g.halo_cols; t += kWarps) {
    const int row = site.row0 - g.pad + t / g.halo_cols, col = site.col0 - g.pad + t % g.halo_cols;
    float value = 0.f;
    if (p.ok && row >= 0 && row < site.h && col >= 0 && col < site.w) {
      const int64_t token = site.token(row, col);
      value = dev::to_float(dev::ld_global(src + (token * g.channels + p.channel)));
      if (with_modulation) {
        const float mu = mean != nullptr ? dev::ld_global(mean + token) : 0.f;
        const float inv_std = rstd != nullptr ? dev::ld_global(rstd + token) : 1.f;
        value = (value - mu) * inv_std * p.scale1p + p.shift;
      }
    }
    dev::st_shared(tile + (t * kTileChannels + lane), value);
  }
}

// Shared-memory index of the tile token (tile_row, tile_col) moved by tap (i, j), forwards (+1) or mirrored (-1).
template <int K>
__device__ __forceinline__ int halo_index(int tile_row, int tile_col, int i, int j, int sign, const TileGeometry& g) {
  const int row = tile_row + g.pad + sign * tap_offset(i, K, g.dilation);
  const int col = tile_col + g.pad + sign * tap_offset(j, K, g.dilation);
  return (row * g.halo_cols + col) * kTileChannels + dev::lane_id();
}

// Launch grid: Tiles' (ImageBatch or PackedImages).
template <typename scalar_t, int K, typename Tiles>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    dev::Global<const scalar_t> LEDIT_RESTRICT x, dev::Global<const float> LEDIT_RESTRICT mean,
    dev::Global<const float> LEDIT_RESTRICT rstd, dev::Global<const float> LEDIT_RESTRICT weight_taps,
    dev::Global<const float> bias, dev::Global<const float> shift, dev::Global<const float> scale,
    dev::Global<const float> gate, dev::Global<const scalar_t> LEDIT_RESTRICT residual,
    dev::Global<scalar_t> LEDIT_RESTRICT out, TileGeometry g, Tiles tiles) {
  const TileSite site = tiles.locate(g.channel_tiles);
  if (site.image < 0) return;
  const dev::Shared<float> tile = dev::dynamic_shared<float>();
  const int warp = dev::warp_id();
  const ChannelParams p = channel_params(site.image, (dev::block_idx().z % g.channel_tiles) * kTileChannels +
                                         dev::lane_id(), g.channels, shift, scale, gate, bias);
  stage_halo(tile, x, mean, rstd, true, p, site, g);
  float weights[K * K];
#pragma unroll
  for (int t = 0; t < K * K; ++t) weights[t] = p.ok ? dev::ld_global(weight_taps + (t * g.channels + p.channel)) : 0.f;
  dev::sync_threads();
  for (int t = warp; t < kTileRows * kTileCols; t += kWarps) {
    const int tile_row = t / kTileCols, tile_col = t % kTileCols;
    const int row = site.row0 + tile_row, col = site.col0 + tile_col;
    if (!p.ok || row >= site.h || col >= site.w) continue;
    float acc = p.bias;
#pragma unroll
    for (int i = 0; i < K; ++i) {
#pragma unroll
      for (int j = 0; j < K; ++j)
        acc += weights[i * K + j] * dev::ld_shared(tile + halo_index<K>(tile_row, tile_col, i, j, 1, g));
    }
    const int64_t offset = site.token(row, col) * g.channels + p.channel;
    float value = p.gate * acc;
    if (residual != nullptr) value += dev::to_float(dev::ld_global(residual + offset));
    dev::st_global(out + offset, dev::from_float<scalar_t>(value));
  }
}

// Grid as forward_kernel. Writes du (fp32) and per-token channel sums of du and du * u for each channel tile,
// or dx directly without LN; and one (K*K + 3) x 32-channel row of token sums per CTA into cta_sums.
//
// Two passes over the warp's tokens keep the registers to the weights or to one row of tap sums, never both (K = 7:
// 49 weights and 52 sums, 170 registers, one block per SM; now under 128, two blocks): the first computes e, du and
// the three per-token sums; the second, one tap row at a time, the tap sums g * y, reduced across warps through a
// small shared buffer after each row, the owning warp writing the CTA's row.
template <typename scalar_t, int K, typename Tiles>
__global__ void __launch_bounds__(kThreads, 2) backward_kernel(
    dev::Global<const scalar_t> LEDIT_RESTRICT grad_out, dev::Global<const scalar_t> LEDIT_RESTRICT x,
    dev::Global<const float> LEDIT_RESTRICT mean, dev::Global<const float> LEDIT_RESTRICT rstd,
    dev::Global<const float> LEDIT_RESTRICT weight_taps, dev::Global<const float> shift,
    dev::Global<const float> scale, dev::Global<const float> gate, dev::Global<float> LEDIT_RESTRICT du_out,
    dev::Global<float> LEDIT_RESTRICT token_channel_sums, dev::Global<scalar_t> LEDIT_RESTRICT dx_out,
    dev::Global<float> LEDIT_RESTRICT cta_sums, TileGeometry g, Tiles tiles) {
  static_assert(K <= kWarps, "a warp owns each tap row's reduction");
  const TileSite site = tiles.locate(g.channel_tiles);
  if (site.image < 0) return;
  const dev::Shared<float> smem = dev::dynamic_shared<float>();
  constexpr int kSums = K * K + 3, kExtraSums = 3;
  const int lane = dev::lane_id(), warp = dev::warp_id();
  const int channel_tile = dev::block_idx().z % g.channel_tiles;
  const ChannelParams p =
      channel_params(site.image, channel_tile * kTileChannels + lane, g.channels, shift, scale, gate, nullptr);
  const bool norm = mean != nullptr;
  const int halo = g.halo_rows * g.halo_cols * kTileChannels;
  const dev::Shared<float> y_tile = smem, g_tile = smem + halo;
  const dev::Shared<float> partials = smem + 2 * halo;  // [kWarps][K][32]: one row of tap sums per warp
  stage_halo(y_tile, x, mean, rstd, true, p, site, g);
  stage_halo(g_tile, grad_out, dev::Global<const float>(nullptr), dev::Global<const float>(nullptr), false, p, site,
             g);
  const float gate_scale1p = p.gate * p.scale1p;
  auto cta_row = [&](int s) { return cta_sums + ((site.cta * kSums + s) * g.channels + p.channel); };
  dev::sync_threads();

  // Pass 1: e = the mirrored taps of g, du, and the sums of g, e and e * u.
  float extra[kExtraSums] = {0.f, 0.f, 0.f};
  {
    float weights[K * K];
#pragma unroll
    for (int t = 0; t < K * K; ++t)
      weights[t] = p.ok ? dev::ld_global(weight_taps + (t * g.channels + p.channel)) : 0.f;
    for (int t = warp; t < kTileRows * kTileCols; t += kWarps) {
      const int tile_row = t / kTileCols, tile_col = t % kTileCols;
      const int row = site.row0 + tile_row, col = site.col0 + tile_col;
      if (row >= site.h || col >= site.w) continue;  // warp-uniform, so the shuffles below see every lane
      const int64_t token = site.token(row, col);
      float e = 0.f;
#pragma unroll
      for (int i = 0; i < K; ++i) {
#pragma unroll
        for (int j = 0; j < K; ++j)
          e += weights[i * K + j] * dev::ld_shared(g_tile + halo_index<K>(tile_row, tile_col, i, j, -1, g));
      }
      float u = 0.f;
      if (p.ok) {
        u = dev::to_float(dev::ld_global(x + (token * g.channels + p.channel)));
        if (norm) u = (u - dev::ld_global(mean + token)) * dev::ld_global(rstd + token);
      }
      extra[0] += dev::ld_shared(g_tile + halo_index<K>(tile_row, tile_col, K / 2, K / 2, 1, g));
      extra[1] += e;
      extra[2] += e * u;
      const float du = e * gate_scale1p;
      if (norm) {
        const float sum_du = warp_sum(du), sum_du_u = warp_sum(du * u);
        dev::st_global_if(p.ok, du_out + (token * g.channels + p.channel), du);
        if (lane == 0) {
          const dev::Global<float> token_sums =
              token_channel_sums + (static_cast<int64_t>(channel_tile) * g.tokens + token) * 2;
          dev::st_global(token_sums, sum_du);
          dev::st_global(token_sums + 1, sum_du_u);
        }
      } else {
        dev::st_global_if(p.ok, dx_out + (token * g.channels + p.channel), dev::from_float<scalar_t>(du));
      }
    }
  }

  // Pass 2, one tap row at a time: sums of g * y over the tile's tokens, reduced across warps by warp i.
  for (int i = 0; i < K; ++i) {
    float row_sums[K];
#pragma unroll
    for (int j = 0; j < K; ++j) row_sums[j] = 0.f;
    for (int t = warp; t < kTileRows * kTileCols; t += kWarps) {
      const int tile_row = t / kTileCols, tile_col = t % kTileCols;
      if (site.row0 + tile_row >= site.h || site.col0 + tile_col >= site.w) continue;
      const float g_here = dev::ld_shared(g_tile + halo_index<K>(tile_row, tile_col, K / 2, K / 2, 1, g));
#pragma unroll
      for (int j = 0; j < K; ++j)
        row_sums[j] += g_here * dev::ld_shared(y_tile + halo_index<K>(tile_row, tile_col, i, j, 1, g));
    }
#pragma unroll
    for (int j = 0; j < K; ++j) dev::st_shared(partials + ((warp * K + j) * kTileChannels + lane), row_sums[j]);
    dev::sync_threads();
    if (warp == i) {
#pragma unroll
      for (int j = 0; j < K; ++j) {
        float total = 0.f;
        for (int other = 0; other < kWarps; ++other)
          total += dev::ld_shared(partials + ((other * K + j) * kTileChannels + lane));
        dev::st_global_if(p.ok, cta_row(i * K + j), total);
      }
    }
    dev::sync_threads();  // the buffer is refilled by the next row
  }
#pragma unroll
  for (int s = 0; s < kExtraSums; ++s) dev::st_shared(partials + ((warp * K + s) * kTileChannels + lane), extra[s]);
  dev::sync_threads();
  if (warp < kExtraSums) {
    float total = 0.f;
    for (int other = 0; other < kWarps; ++other)
      total += dev::ld_shared(partials + ((other * K + warp) * kTileChannels + lane));
    dev::st_global_if(p.ok, cta_row(K * K + warp), total);
  }
}

// A warp per token: dx = LN backward of du, with the token's channel means gathered from every channel tile.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) layer_norm_backward_kernel(
    dev::Global<const float> LEDIT_RESTRICT du, dev::Global<const scalar_t> LEDIT_RESTRICT x,
    dev::Global<const float> LEDIT_RESTRICT mean, dev::Global<const float> LEDIT_RESTRICT rstd,
    dev::Global<const float> LEDIT_RESTRICT token_channel_sums, int channel_tiles, int64_t n_tokens, int channels,
    dev::Global<scalar_t> LEDIT_RESTRICT dx) {
  const int lane = dev::lane_id();
  const int64_t token = static_cast<int64_t>(dev::block_idx().x) * kWarps + dev::warp_id();
  if (token >= n_tokens) return;
  float sum_du = 0.f, sum_du_u = 0.f;
  for (int tile = lane; tile < channel_tiles; tile += 32) {
    const dev::Global<const float> token_sums = token_channel_sums + (static_cast<int64_t>(tile) * n_tokens + token) * 2;
    sum_du += dev::ld_global(token_sums);
    sum_du_u += dev::ld_global(token_sums + 1);
  }
  const float mean_du = warp_sum(sum_du) / channels, mean_du_u = warp_sum(sum_du_u) / channels;
  const float mu = dev::ld_global(mean + token), inv_std = dev::ld_global(rstd + token);
  for (int c = lane; c < channels; c += 32) {
    const int64_t offset = token * channels + c;
    const float u = (dev::to_float(dev::ld_global(x + offset)) - mu) * inv_std;
    dev::st_global(dx + offset,
                   dev::from_float<scalar_t>(layer_norm_backward(dev::ld_global(du + offset), u, mean_du, mean_du_u,
                                                                 inv_std)));
  }
}

// ---- launchers --------------------------------------------------------------------------------------------------

unsigned blocks_for_tokens(int64_t n_tokens) { return static_cast<unsigned>((n_tokens + kWarps - 1) / kWarps); }

// A call's tile kernels: their geometry, and where each CTA's tile lies (a batch's launch grid, or a packed
// sequence's images) with the launch grid that covers them.
struct TileLaunch {
  TileGeometry geometry;
  const PackedGrids* packed;

  TileLaunch(const Shape& s, const PackedGrids* packed)
      : geometry(make_tile_geometry(s.channels, s.k, s.dilation, s.batch * s.h * s.w)), packed(packed) {}

  // Runs launch(tiles, grid) with Tiles = ImageBatch or PackedImages.
  template <typename Launch>
  cudaError_t run(const Shape& s, Launch launch) const {
    const auto channel_tiles = static_cast<unsigned>(geometry.channel_tiles);
    if (packed != nullptr) {
      const PackedImages tiles{packed->grids, packed->token_offsets, packed->unit_offsets, packed->count};
      return launch(tiles, dim3(static_cast<unsigned>(packed->max_tiles), 1, channel_tiles));
    }
    const ImageBatch tiles{s.h, s.w, (s.h + kTileRows - 1) / kTileRows, (s.w + kTileCols - 1) / kTileCols};
    return launch(tiles, dim3(tiles.col_tiles, tiles.row_tiles, static_cast<unsigned>(s.batch) * channel_tiles));
  }
};

template <typename scalar_t, int K>
struct Forward {
  static cudaError_t run(const ForwardArgs& a, const PackedGrids* packed, cudaStream_t stream) {
    const TileLaunch tile_launch(a.shape, packed);
    const auto* x = static_cast<const scalar_t*>(a.x);
    const int64_t n_tokens = tile_launch.geometry.tokens;
    if (a.mean != nullptr) {
      const cudaError_t error = dev::launch<layer_norm_stats_kernel<scalar_t>>(
          dev::LaunchConfig{dim3(blocks_for_tokens(n_tokens)), dim3(kThreads), 0, stream}, x, a.mean, a.rstd,
          n_tokens, a.shape.channels);
      if (error != cudaSuccess) return error;
    }
    const size_t shared = shared_memory_bytes(a.shape.k, a.shape.dilation, false);
    return tile_launch.run(a.shape, [&](auto tiles, dim3 grid) {
      return dev::launch<forward_kernel<scalar_t, K, decltype(tiles)>>(
          dev::LaunchConfig{grid, dim3(kThreads), shared, stream}, x, a.mean, a.rstd, a.weight_taps, a.bias, a.shift,
          a.scale, a.gate, static_cast<const scalar_t*>(a.residual), static_cast<scalar_t*>(a.out),
          tile_launch.geometry, tiles);
    });
  }
};

template <typename scalar_t, int K>
struct Backward {
  static cudaError_t run(const BackwardArgs& a, const PackedGrids* packed, cudaStream_t stream) {
    const TileLaunch tile_launch(a.shape, packed);
    const auto* x = static_cast<const scalar_t*>(a.x);
    auto* dx = static_cast<scalar_t*>(a.dx);
    const size_t shared = shared_memory_bytes(K, a.shape.dilation, true);
    const cudaError_t error = tile_launch.run(a.shape, [&](auto tiles, dim3 grid) {
      return dev::launch<backward_kernel<scalar_t, K, decltype(tiles)>>(
          dev::LaunchConfig{grid, dim3(kThreads), shared, stream}, static_cast<const scalar_t*>(a.grad_out), x,
          a.mean, a.rstd, a.weight_taps, a.shift, a.scale, a.gate, a.du, a.token_channel_sums, dx, a.cta_sums,
          tile_launch.geometry, tiles);
    });
    if (error != cudaSuccess || a.mean == nullptr) return error;
    const int64_t n_tokens = tile_launch.geometry.tokens;
    return dev::launch<layer_norm_backward_kernel<scalar_t>>(
        dev::LaunchConfig{dim3(blocks_for_tokens(n_tokens)), dim3(kThreads), 0, stream}, a.du, x, a.mean, a.rstd,
        a.token_channel_sums, tile_launch.geometry.channel_tiles, n_tokens, a.shape.channels, dx);
  }
};

template <template <typename, int> class Op, typename scalar_t, typename Args>
cudaError_t dispatch_kernel_size(const Args& args, const PackedGrids* packed, cudaStream_t stream) {
  switch (args.shape.k) {
    case 3:
      return Op<scalar_t, 3>::run(args, packed, stream);
    case 5:
      return Op<scalar_t, 5>::run(args, packed, stream);
    case 7:
      return Op<scalar_t, 7>::run(args, packed, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

template <template <typename, int> class Op, typename Args>
cudaError_t dispatch(const Args& args, DType dtype, const PackedGrids* packed, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16:
      return dispatch_kernel_size<Op, dev::half>(args, packed, stream);
    case DType::kBFloat16:
      return dispatch_kernel_size<Op, dev::bfloat16>(args, packed, stream);
    default:
      return dispatch_kernel_size<Op, float>(args, packed, stream);
  }
}

}  // namespace

int channel_tiles(int channels) { return (channels + kTileChannels - 1) / kTileChannels; }

// Per image ceil(h / 8) * ceil(w / 16) tiles: at most 1 + h * w / 8 (one tile row or column, or h, w past a tile
// and then at most h * w / 32).
int64_t max_packed_tiles(int64_t tokens, int64_t images) { return images + tokens / kTileRows; }

int64_t ctas_per_sample(int h, int w) {
  return static_cast<int64_t>((h + kTileRows - 1) / kTileRows) * ((w + kTileCols - 1) / kTileCols);
}

size_t shared_memory_bytes(int k, int dilation, bool backward) {
  const int pad = dilation * (k / 2);
  const size_t halo = sizeof(float) * (kTileRows + 2 * pad) * (kTileCols + 2 * pad) * kTileChannels;
  // The backward stages y and g, beside one row of tap sums per warp (at least the three extra sums).
  return backward ? 2 * halo + sizeof(float) * kWarps * std::max(k, 3) * kTileChannels : halo;
}

cudaError_t launch_forward(const ForwardArgs& args, DType dtype, const PackedGrids* packed, cudaStream_t stream) {
  return dispatch<Forward>(args, dtype, packed, stream);
}

cudaError_t launch_backward(const BackwardArgs& args, DType dtype, const PackedGrids* packed, cudaStream_t stream) {
  return dispatch<Backward>(args, dtype, packed, stream);
}

}  // namespace cuda
}  // namespace dwconv_modulate
}  // namespace ledit
