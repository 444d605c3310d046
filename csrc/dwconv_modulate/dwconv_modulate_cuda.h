// Launchers of the dwconv_modulate CUDA kernels. The .cu file depends on nothing of torch (only the device layer,
// common/device.h), so it compiles with nvcc alone, or as C++ for the CPU executor; dwconv_modulate_cuda_ops.cpp wraps these for torch.library.
#pragma once

#include "common/device_runtime.h"

#include <cstddef>
#include <cstdint>

namespace ledit {
namespace dwconv_modulate {
namespace cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// The tokens a CTA of the tile kernels owns, kTileRows x kTileCols of one image.
constexpr int kTileRows = 8;
constexpr int kTileCols = 16;

// A batch of B images of an h x w grid; a packed sequence has batch 1, h 1 and w its total tokens.
struct Shape {
  int64_t batch;
  int h, w, channels, k, dilation;
};

// The images of a packed sequence (common/packed_images.h), int32 arrays on the device: image i's tiles, ceil(h /
// kTileRows) * ceil(w / kTileCols) of them, are the units [unit_offsets[i], unit_offsets[i + 1]). The launch covers
// max_tiles = max_packed_tiles(tokens, count), so nothing is read on the host.
struct PackedGrids {
  const int32_t* grids;          // (count, 2)
  const int32_t* token_offsets;  // (count + 1)
  const int32_t* unit_offsets;   // (count + 1)
  int count;
  int64_t max_tiles;
};

// Tensors are contiguous; x, residual, out in `dtype`, everything else fp32. mean/rstd are written when not null
// (LayerNorm on); bias, gate and residual may be null.
struct ForwardArgs {
  Shape shape;
  const void* x;
  float* mean;
  float* rstd;
  const float* weight_taps;  // (k*k, C)
  const float* bias;         // (C)
  const float* shift;        // (B, C)
  const float* scale;        // (B, C)
  const float* gate;         // (B, C)
  const void* residual;      // (B, N, C)
  void* out;                 // (B, N, C)
};

// With LayerNorm (mean not null) the kernels write du and token_channel_sums, then dx; without, dx directly.
struct BackwardArgs {
  Shape shape;
  const void* grad_out;
  const void* x;
  const float* mean;
  const float* rstd;
  const float* weight_taps;
  const float* shift;
  const float* scale;
  const float* gate;
  float* du;                  // (B, N, C) workspace, LayerNorm only
  float* token_channel_sums;  // (channel_tiles, B * N, 2) workspace, LayerNorm only
  void* dx;                   // (B, N, C)
  float* cta_sums;            // (B, ctas_per_sample, k*k + 3, C): each CTA's token sums, summed by the caller;
                              // packed: (max_tiles, k*k + 3, C), image i's CTAs in its units' rows
};

// The tile kernels' launch grid is (column tiles, row tiles, batch * channel_tiles(C)), or for a packed sequence
// (max_packed_tiles, 1, channel_tiles(C)).
int channel_tiles(int channels);
int64_t ctas_per_sample(int h, int w);
// A bound on the tiles of a packed sequence from its shape alone.
int64_t max_packed_tiles(int64_t tokens, int64_t images);
// Dynamic shared memory of one tile CTA: up to 140 KB (backward, k = 7, dilation 2), past the 99 KB that
// sm_86/sm_89 GPUs allow a block.
size_t shared_memory_bytes(int k, int dilation, bool backward);

// packed is null for a batch.
cudaError_t launch_forward(const ForwardArgs& args, DType dtype, const PackedGrids* packed, cudaStream_t stream);
cudaError_t launch_backward(const BackwardArgs& args, DType dtype, const PackedGrids* packed, cudaStream_t stream);

}  // namespace cuda
}  // namespace dwconv_modulate
}  // namespace ledit
