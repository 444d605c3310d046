// Launchers of the scan_attention CUDA kernels (scan_attention_cuda_forward.cu, scan_attention_cuda_backward.cu).
// The kernels depend on nothing of torch, only on the device layer (common/device.h), so they compile with nvcc
// alone, or as C++ for the CPU executor; scan_attention_cuda_ops.cpp wraps these launchers for torch.library.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/device_runtime.h"
#include "scan_attention/cuda_kernel_shapes.h"

namespace ledit {
namespace scan_attention {
namespace cuda {

enum class DType { kFloat16, kBFloat16 };

// Shapes of one call. The kernels pick their tile grids from h, w and their own tile sizes (a packed call's from
// each image's grid; its h and w are unused).
struct Problem {
  int h, w;
  Scan scan;
  int tokens, heads, dim;
  float softmax_scale;
};

// The fields of KernelParams that the problem decides; each launcher adds its tensors' layouts.
inline KernelParams kernel_params(const Problem& problem, int query_tile, int key_tile, bool double_buffer) {
  KernelParams p{};
  p.q_tiles = make_tile_grid(problem.h, problem.w, query_tile);
  p.k_tiles = make_tile_grid(problem.h, problem.w, key_tile);
  p.scan = problem.scan;
  p.w = problem.w;
  p.tokens = problem.tokens;
  p.heads = problem.heads;
  p.dim = problem.dim;
  p.softmax_scale = problem.softmax_scale;
  p.qk_scale = problem.softmax_scale * kLog2e;
  p.double_buffer = double_buffer;
  return p;
}

// A packed sequence's device metadata (common/packed_images.h): int32 arrays on the tensors' GPU, the images' grids
// and first tokens, and each image's first tile at each kernel's tile size, as make_tile_grid splits the image.
struct PackedGrids {
  const int32_t* grids;            // (count, 2)
  const int32_t* token_offsets;    // (count + 1)
  const int32_t* forward_units;    // (count + 1): forward query tiles (ForwardShape::kBlockM)
  const int32_t* key_units;        // (count + 1): dK/dV key tiles (BackwardShape::kBlockN)
  const int32_t* dq_units;         // (count + 1): deterministic dQ query tiles (BackwardShape::kQBlockM)
  int count;
};

// The blocks a packed launch covers along x: a bound on the images' tiles from shapes alone (no host read).
inline unsigned packed_launch_tiles(const PackedGrids& packed, const Problem& problem, int capacity) {
  return static_cast<unsigned>(max_packed_tiles(problem.tokens, packed.count, capacity));
}

struct ForwardArgs {
  const void *q, *k, *v;
  void* out;
  float* lse;  // (B, H, N) contiguous
  Layout q_layout, k_layout, v_layout, out_layout;
  int64_t batch;
  bool double_buffer;
};

struct BackwardArgs {
  const void *q, *k, *v, *dout;
  const float *lse, *delta;  // (B, H, N) contiguous; delta = rowsum(dout * out)
  void *dq, *dk, *dv;
  // Non-null: the dK/dV kernel also adds each key tile's dQ to this zeroed (B, N, H, padded_dim(D)) fp32 buffer
  // with atomics (unscaled; the caller scales it, converts its first D columns, and dq is not written). Null: a
  // second kernel computes dQ per query tile into dq, deterministic (bitwise the same on every run) at the cost of
  // recomputing S and dP.
  float* dq_accum;
  Layout q_layout, k_layout, v_layout, dout_layout, dq_layout, dk_layout, dv_layout;
  int64_t batch;
  bool double_buffer;
};

// packed: null for a batch of B images of problem's (h, w); else a packed sequence (batch 1, problem.tokens in all).
cudaError_t launch_forward(const ForwardArgs& args, const Problem& problem, DType dtype, const PackedGrids* packed,
                           cudaStream_t stream);
cudaError_t launch_backward(const BackwardArgs& args, const Problem& problem, DType dtype, const PackedGrids* packed,
                            cudaStream_t stream);

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
