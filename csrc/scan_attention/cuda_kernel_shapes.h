// Tile shapes, shared-memory budgets and launch parameters of the scan_attention CUDA kernels, per head dim padded
// in shared memory (kDim: 64, 80, 128, 256; see docs/kernels-attention.md for how they were chosen). Host code
// (the launchers' shared-memory figures) and device code both read them, so this header needs no device layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "scan_attention/scan_tiles.h"

namespace ledit {
namespace scan_attention {
namespace cuda {

constexpr int kWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;  // scores are kept in base 2
constexpr float kLn2 = 0.6931471805599453f;

// Element strides of a (B, N, H, D) tensor whose head dim is contiguous: q, k and v may be views of one fused
// (B, N, 3, H, D) projection. Every stride is a multiple of 8 elements and the data 16-byte aligned (the kernels
// copy 16 bytes at a time), and the token and head strides are below 2^31 (32-bit address arithmetic per row); the
// glue copies a tensor that is not so.
struct Layout {
  int64_t batch;
  int token, head;
};

// Head dims are rounded up in shared memory only (D = 72 -> 80) to the smallest of 64, 80, 128, 256 that holds D.
constexpr int padded_dim(int dim) { return dim <= 64 ? 64 : dim <= 80 ? 80 : dim <= 128 ? 128 : 256; }

// f(std::integral_constant<int, padded_dim(dim)>()): the one place a run-time head dim picks the kernels' kDim.
template <typename F>
decltype(auto) with_padded_dim(int dim, F&& f) {
  switch (padded_dim(dim)) {
    case 64:
      return f(std::integral_constant<int, 64>());
    case 80:
      return f(std::integral_constant<int, 80>());
    case 128:
      return f(std::integral_constant<int, 128>());
    default:
      return f(std::integral_constant<int, 256>());
  }
}

// Row stride, in elements, of a 16-bit tile of `cols` columns in shared memory: an odd number of 16-byte chunks
// (SmemTile in cuda_tile_math.h explains why).
constexpr int smem_stride(int cols) { return (cols / 8) % 2 == 0 ? cols + 8 : cols; }
constexpr size_t tile_bytes(int rows, int cols) { return size_t{2} * rows * smem_stride(cols); }

// The shapes below are the largest whose kernels compile without register spills on sm_80 and sm_90 (ptxas, 255
// registers per thread, which still allows 2 blocks of 128 threads per SM); docs/kernels-attention.md has the
// arithmetic behind each choice.
//
// Forward: one block per (query tile, batch, head), 4 warps each owning kRowBlocks m16 row blocks of the query tile,
// so every K and V fragment an ldmatrix loads serves kRowBlocks mma. S, P and O stay in registers; Q is read from
// shared memory for each key tile (keeping its fragments in registers too spills at every head dim but 64).
template <int kDim>
struct ForwardShape {
  static constexpr int kBlockM = kDim <= 128 ? 128 : 64;  // queries: an 8 x 16 (or 8 x 8) tile of the grid
  static constexpr int kBlockN = kDim <= 64 ? 64 : 32;    // keys per tile: 8 x 8 (or 4 x 8)
  static constexpr int kRowBlocks = kBlockM / (16 * kWarps);
  static constexpr size_t smem(bool double_buffer) {
    return tile_bytes(kBlockM, kDim) + (double_buffer ? 4 : 2) * tile_bytes(kBlockN, kDim);
  }
};

// Backward, dK and dV: one block per (key tile, column split, batch, head), each warp owning 16 keys, with dK and
// dV of its keys in registers across the loop over the query tiles that see them; the transposed products S^T =
// K Q^T and dP^T = V dO^T put P^T and dS^T in registers as the A operands of dV += P^T dO and dK += dS^T Q. With
// atomics, dS^T also goes through shared memory for dQ += dS K. At kDim = 256 the accumulated columns are split in
// two blocks (each recomputes S^T and dP^T) so dK and dV fit the registers.
// dQ alone (the deterministic path): one block per (query tile, batch, head), each warp owning 16 queries.
template <int kDim>
struct BackwardShape {
  static constexpr int kBlockN = 16 * kWarps;            // keys per block: 8 x 8
  static constexpr int kBlockM = kDim <= 80 ? 32 : 16;  // queries per tile: 4 x 8 (or 4 x 4)
  static constexpr int kDimAcc = kDim <= 128 ? kDim : kDim / 2;
  static constexpr int kSplits = kDim / kDimAcc;
  static constexpr bool kKVInRegisters = kDim <= 80;  // K's and V's A fragments, across the query loop
  static constexpr int kQBlockM = 16 * kWarps;            // dQ kernel: queries per block
  static constexpr int kQBlockN = kDim <= 128 ? 64 : 32;  // dQ kernel: keys per tile
  static constexpr bool kQInRegisters = kDim <= 80;       // dQ kernel: Q's and dO's A fragments
  static constexpr size_t stats_bytes() { return size_t{2} * kBlockM * sizeof(float); }  // lse2 and delta
  static constexpr size_t smem_kv(bool double_buffer) {
    return 2 * tile_bytes(kBlockN, kDim) + (double_buffer ? 2 : 1) * (2 * tile_bytes(kBlockM, kDim) + stats_bytes()) +
           tile_bytes(kBlockN, kBlockM);
  }
  static constexpr size_t smem_q(bool double_buffer) {
    return 2 * tile_bytes(kQBlockM, kDim) + (double_buffer ? 4 : 2) * tile_bytes(kQBlockN, kDim);
  }
};

// The kernels one call launches: the forward, the backward with dQ by atomics, or the deterministic backward.
enum class Pass { kForward, kBackward, kBackwardDeterministic };

template <int kDim>
constexpr size_t shared_memory_bytes_for(Pass pass, bool double_buffer) {
  using Backward = BackwardShape<kDim>;
  const size_t kv = Backward::smem_kv(double_buffer), q = Backward::smem_q(double_buffer);
  return pass == Pass::kForward ? ForwardShape<kDim>::smem(double_buffer)
         : pass == Pass::kBackward ? kv
                                    : (kv > q ? kv : q);
}

// Dynamic shared memory of the largest block a pass launches, with double-buffered tiles or without: the glue
// double-buffers when the GPU allows it, and refuses a call that fits neither way.
inline size_t shared_memory_bytes(int dim, Pass pass, bool double_buffer) {
  return with_padded_dim(dim, [&](auto padded) {
    return shared_memory_bytes_for<decltype(padded)::value>(pass, double_buffer);
  });
}

// What every kernel of a call needs besides its tensors.
struct KernelParams {
  TileGrid q_tiles, k_tiles;  // the kernel's own query and key tile sizes over the (h, w) grid
  Scan scan;
  int w, tokens, heads, dim;
  float softmax_scale;
  float qk_scale;  // softmax_scale * log2(e): scores are kept in base 2
  bool double_buffer;
  Layout q, k, v, o;  // o: out in the forward, dout in the backward
  Layout dq, dk, dv;  // backward only
};

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
