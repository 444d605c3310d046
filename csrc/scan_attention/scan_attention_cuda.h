// Launchers of the scan_attention CUDA kernels. The .cu file depends on nothing of torch (only the device layer,
// common/device.h), so it compiles with nvcc alone, or as C++ for the CPU executor; scan_attention_cuda_ops.cpp wraps these for torch.library.
#pragma once

#include "common/device_runtime.h"

#include <cstddef>
#include <cstdint>

#include "scan_attention/scan_tiles.h"

namespace ledit {
namespace scan_attention {
namespace cuda {

enum class DType { kFloat16, kBFloat16 };

// Shapes of one call, passed by value to every kernel.
struct Params {
  TileGrid grid;
  Scan scan;
  int tile;  // tokens per tile, 64 or 32: the capacity of `grid`'s tiles and the kernels' template parameter
  int tokens, heads, dim, dim_padded;
  float softmax_scale, qk_scale;  // qk_scale = softmax_scale * log2(e): scores are kept in base 2
};

// Dynamic shared memory of one block of the forward, or of the backward's larger (dK/dV) kernel.
size_t shared_memory_bytes(int tile, int dim, bool backward);

// Tokens per tile: 64 up to a padded head dim of 96 (LEDiT-XL's 72 -> 80), else 32; and 32 where a 64-token block
// does not fit the `smem_limit` bytes a block may have (sm_80: 163 KB, sm_86/sm_89: 99 KB, sm_90: 227 KB).
// 0 when neither fits.
int choose_tile(int dim, bool backward, size_t smem_limit);

Params make_params(int h, int w, Scan scan, int tokens, int heads, int dim, float softmax_scale, int tile);

// Tensors are contiguous (B, N, H, D), 16-byte aligned, in `dtype`; lse and delta are (B, H, N) fp32.
struct ForwardArgs {
  const void *q, *k, *v;
  void* out;
  float* lse;
  int64_t batch;
};

struct BackwardArgs {
  const void *q, *k, *v, *dout;
  const float *lse, *delta;  // delta = rowsum(dout * out)
  void *dq, *dk, *dv;
  int64_t batch;
};

cudaError_t launch_forward(const ForwardArgs& args, const Params& params, DType dtype, cudaStream_t stream);
cudaError_t launch_backward(const BackwardArgs& args, const Params& params, DType dtype, cudaStream_t stream);

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
