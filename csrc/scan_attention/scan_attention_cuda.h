// Launchers of the scan_attention CUDA kernels. The .cu file depends on nothing of torch (only the CUDA runtime),
// so it compiles with nvcc alone; scan_attention_cuda_ops.cpp wraps these for torch.library.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "scan_attention/scan_tiles.h"

namespace ledit {
namespace attention_cuda {

enum class DType { kFloat16, kBFloat16 };

// Shapes of one call, passed by value to every kernel.
struct Params {
  TileGrid grid;
  Scan scan;
  int tokens, heads, dim, dim_padded;
  float softmax_scale, qk_scale;  // qk_scale = softmax_scale * log2(e): scores are kept in base 2
};

// Tile capacity: 64 tokens up to a padded head dim of 96 (LEDiT-XL's 72 -> 80), else 32, so that the backward's
// shared memory stays under the 163 KB an sm_80 block can have.
inline int tile_for(int dim_padded) { return dim_padded <= 96 ? 64 : 32; }

Params make_params(int h, int w, Scan scan, int tokens, int heads, int dim, float softmax_scale);

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

}  // namespace attention_cuda
}  // namespace ledit
