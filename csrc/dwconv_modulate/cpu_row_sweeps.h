// The fp32 row sweeps of the dwconv_modulate CPU kernel (cpu_row_sweeps.cpp), on the padded rings of
// dwconv_modulate_cpu.cpp: a ring row holds pad zero tokens, the w grid tokens, then pad zero tokens, each of
// padded_channels(C) floats (zero past C), and grid rows outside the grid read a shared zero row. `rows[i]` is the
// ring row that kernel row i reads; in it, tap (i, j) of output column col is token col + j * dilation.
#pragma once

#include <cstdint>

namespace ledit {
namespace dwconv_modulate {
namespace cpu {

inline int64_t padded_channels(int64_t channels) { return (channels + 15) / 16 * 16; }

// The most tokens one tap sweep covers (8 with AVX-512, 4 otherwise; cpu_row_sweeps.cpp: wide_sweeps).
constexpr int kMaxSweepTokens = 8;

// Mean and 1/std of one token; two passes (the second from L1) for accuracy.
void token_stats(const float* x, int64_t channels, float* mean, float* rstd);

// y = (x - mean) * rstd * (1 + scale) + shift over `channels` values (mean 0 and rstd 1 without LN).
void modulate(const float* x, float mean, float rstd, const float* scale1p, const float* shift, int64_t channels,
              float* y);

// The weights of a conv in 16-channel blocks: (padded / 16, k*k, 16), each block's taps together.
struct ConvWeights {
  const float* blocks;
  const float* bias;  // padded; zeros without bias
  const float* gate;  // padded; nullptr without gate
};

// One output row of w tokens: out = residual + gate * (bias + sum_t w_t * y[. + offset(t)]). out and residual
// (nullptr: none) are (w, channels) rows. With stream_out (out 16-byte aligned, channels a multiple of 4), out is
// written with non-temporal stores that skip the caches. Prefetches prefetch_bytes from prefetch_row (nullptr:
// none) into L2 along the way: the sweep is compute-bound, so the next row's DRAM reads overlap it instead of
// stalling the LN pass.
void conv_row(const float* const* rows, const ConvWeights& weights, int k, int dilation, int64_t w, int64_t channels,
              const float* residual, float* out, bool stream_out, const void* prefetch_row, int64_t prefetch_bytes);

// The per-tap products G_t = sum over the row's tokens of g[col] * y_rows[i][col + j * dilation] (t = i * k + j),
// accumulated into sums, (k*k, padded channels). g is the padded ring row of the output gradient at this row.
// Prefetches as conv_row does.
void tap_sums_row(const float* g, const float* const* y_rows, int k, int dilation, int64_t w, int64_t stride,
                  float* sums, const void* prefetch_row, int64_t prefetch_bytes);

// One backward row's per-token data: x and dx as (w, channels) fp32 rows, the saved stats of its tokens (nullptr
// without LN), the padded g ring row, and the sums S, sum e and sum e * u (padded rows of the task's sums).
struct BackwardRow {
  const float* x;
  const float* mean;
  const float* rstd;
  const float* g;  // padded: token pad is column 0
  const float* gate_scale1p;  // padded gate * (1 + scale)
  float* sum_g;
  float* sum_e;
  float* sum_e_u;
  float* e;  // scratch: kMaxSweepTokens padded tokens
  float* dx;
  bool stream_dx;  // write dx with non-temporal stores, as conv_row's stream_out
};

// dx of one row, and its tokens' sums of g, e and e * u: e = sum_t w_t * g[n - offset(t)] is the conv of the g rows
// with the flipped kernel, and dx the LN backward of du = e * gate * (1 + scale) (du itself without LN). Prefetches
// as conv_row does.
void backward_row(const float* const* g_rows, const float* flipped_blocks, int k, int dilation, int64_t w,
                  int64_t channels, const BackwardRow& row, const void* prefetch_row, int64_t prefetch_bytes);

}  // namespace cpu
}  // namespace dwconv_modulate
}  // namespace ledit
