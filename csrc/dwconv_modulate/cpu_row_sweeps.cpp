// The fp32 row sweeps of the dwconv_modulate CPU kernel (declared in cpu_row_sweeps.h): per-token LayerNorm and
// modulation, and the tap loops over a padded ring row. The tap loops sweep 16-channel blocks of 8 (AVX-512) or 4
// neighbouring tokens at a time, so every stream is read in address order, each weight vector feeds that many
// independent accumulators and each source vector is loaded once for all the taps that read it. The public
// functions are compiled for AVX-512, AVX2+FMA and baseline x86-64, and the CPU picks one at load time
// (LEDIT_CPU_MULTIVERSION, common/cpu_simd.h); everything they call is inlined into each clone.
#include "dwconv_modulate/cpu_row_sweeps.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "common/cpu_simd.h"
#include "dwconv_modulate/dwconv_modulate.h"

namespace ledit {
namespace dwconv_modulate {
namespace cpu {
namespace {

using simd::Vec16;  // 16 floats: one AVX-512 register, two AVX2 ones
using simd::load;
using simd::store;

// Sum over channels [0, end) of term(c) (a Vec16 of channels c .. c + 15), end a multiple of 16: four independent
// vector sums hide the add latency without reassociating floating point (no -ffast-math).
template <typename Term>
LEDIT_CPU_INLINE float vector_sum(int64_t end, Term term) {
  Vec16 sums[4] = {};
  int64_t c = 0;
  for (; c + 64 <= end; c += 64) {
    for (int v = 0; v < 4; ++v) sums[v] += term(c + 16 * v);
  }
  for (; c < end; c += 16) sums[0] += term(c);
  const Vec16 sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
  float total = 0.f;
  for (int i = 0; i < 16; ++i) total += sum[i];
  return total;
}

// Calls body(K, D) with K and D std::integral_constants holding the runtime kernel size and dilation, so the tap
// loops below are fully unrolled and their source windows fixed in size.
template <typename Body>
LEDIT_CPU_INLINE void with_kernel_shape(int k, int dilation, Body body) {
  using std::integral_constant;
  if (dilation == 1) {
    if (k == 3) return body(integral_constant<int, 3>{}, integral_constant<int, 1>{});
    if (k == 5) return body(integral_constant<int, 5>{}, integral_constant<int, 1>{});
    return body(integral_constant<int, 7>{}, integral_constant<int, 1>{});
  }
  if (k == 3) return body(integral_constant<int, 3>{}, integral_constant<int, 2>{});
  if (k == 5) return body(integral_constant<int, 5>{}, integral_constant<int, 2>{});
  return body(integral_constant<int, 7>{}, integral_constant<int, 2>{});
}

// Runs block(c0, lanes) over the 16-channel blocks of `channels`: lanes is std::integral_constant<int, 16> for the
// whole blocks (so their bodies compile without tail checks) and an int for a last, partial block.
template <typename Block>
LEDIT_CPU_INLINE void for_channel_blocks(int64_t channels, Block block) {
  const int64_t whole_end = channels / 16 * 16;
  for (int64_t c0 = 0; c0 < whole_end; c0 += 16) block(c0, std::integral_constant<int, 16>{});
  if (whole_end < channels) block(whole_end, static_cast<int>(channels - whole_end));
}

// Loads `lanes` floats (the rest zero): the channel tail of an unpadded token.
template <typename Lanes>
LEDIT_CPU_INLINE Vec16 load_lanes(const float* p, Lanes lanes) {
  if (lanes == 16) return load<Vec16>(p);
  float values[16] = {};
  std::copy(p, p + lanes, values);
  return load<Vec16>(values);
}

template <typename Lanes>
LEDIT_CPU_INLINE void store_lanes(float* p, Vec16 v, Lanes lanes) {
  if (lanes == 16) return store<Vec16>(p, v);
  float values[16];
  store<Vec16>(values, v);
  std::copy(values, values + lanes, p);
}

// A whole 16-float output vector; with `stream`, as non-temporal stores that bypass the caches (p 16-byte aligned).
// SSE's 16-byte form exists in every clone; the CPU's write combining merges the four into one line write.
LEDIT_CPU_INLINE void store_output(float* p, Vec16 v, bool stream) {
#if defined(__SSE__)
  if (stream) {
    __m128 parts[4];
    std::memcpy(parts, &v, sizeof(v));
    for (int i = 0; i < 4; ++i) _mm_stream_ps(p + 4 * i, parts[i]);
    return;
  }
#endif
  store<Vec16>(p, v);
}

LEDIT_CPU_INLINE float horizontal_sum(Vec16 v) {
  float total = 0.f;
  for (int i = 0; i < 16; ++i) total += v[i];
  return total;
}

// Tokens per tap sweep. Eight accumulators per weight vector, and a source window of 8 + (k - 1) * dilation
// vectors, fit the 32 vector registers of AVX-512. With AVX2's 16 they spill, and four tokens are faster there
// (B=4, 32x32, C=1152, AVX2 clone: forward 7.3 vs 8.0 ms, backward 11.9 vs 23 ms). Read at run time: the clones
// share one source, so the width cannot follow the clone's instruction set at compile time.
bool wide_sweeps() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool wide = __builtin_cpu_supports("avx512f");
  return wide;
#else
  return false;
#endif
}

// Runs sweep(col, n) over a row of w tokens, n a std::integral_constant: kTokens tokens at a time, then one at a
// time.
template <int kTokens, typename Sweep>
LEDIT_CPU_INLINE void for_token_sweeps_of(int64_t w, Sweep sweep) {
  int64_t col = 0;
  for (; col + kTokens <= w; col += kTokens) sweep(col, std::integral_constant<int, kTokens>{});
  for (; col < w; ++col) sweep(col, std::integral_constant<int, 1>{});
}

template <typename Sweep>
LEDIT_CPU_INLINE void for_token_sweeps(int64_t w, Sweep sweep) {
  static_assert(kMaxSweepTokens == 8);
  if (wide_sweeps()) {
    for_token_sweeps_of<8>(w, sweep);
  } else {
    for_token_sweeps_of<4>(w, sweep);
  }
}

// The number of sweeps over a row of w tokens (RowPrefetch spreads its lines over them).
int64_t sweeps_per_row(int64_t w) {
  const int tokens = wide_sweeps() ? 8 : 4;
  return w / tokens + w % tokens;
}

// The source vectors that kernel row i of kTokens neighbouring tokens reads, each loaded once: token q's tap j is
// window[q + j * D]. src points at the first one (token col's tap 0).
template <int K, int D, int kTokens>
struct TapWindow {
  static constexpr int kSize = kTokens + (K - 1) * D;
  Vec16 v[kSize];
  LEDIT_CPU_INLINE TapWindow(const float* src, int64_t stride) {
    for (int s = 0; s < kSize; ++s) v[s] = load<Vec16>(src + s * stride);
  }
};

// Software prefetch of the next input row into L2, a few lines per channel block of the current row's sweeps. Without
// it the forward's LN pass stalled on DRAM for about half the forward's time, at a third of the bandwidth a plain
// streaming read reaches here.
struct RowPrefetch {
  const char* next;
  const char* end;
  int64_t lines_per_step;
  RowPrefetch(const void* row, int64_t bytes, int64_t steps)
      : next(static_cast<const char*>(row)),
        end(row != nullptr ? next + bytes : nullptr),
        lines_per_step((bytes / 64 + steps - 1) / steps) {}
  LEDIT_CPU_INLINE void step() {
    for (int64_t i = 0; i < lines_per_step && next < end; ++i, next += 64) __builtin_prefetch(next, 0, 2);
  }
};

// Output tokens col .. col + kTokens - 1 of one row: out = residual + gate * (bias + sum_t w_t * y[. + offset(t)]),
// all channels, one 16-channel block at a time. out and residual are (w, channels) rows. `p` is taken by value so
// the compiler knows the stores cannot change its pointers.
template <int K, int D, int kTokens>
LEDIT_CPU_INLINE void conv_tokens(const float* const* rows, const ConvWeights p, int64_t col, int64_t channels,
                                  const float* residual, float* out, bool stream_out, RowPrefetch& prefetch) {
  const int64_t stride = padded_channels(channels);
  for_channel_blocks(channels, [&](int64_t c0, auto lanes) LEDIT_LAMBDA_INLINE {
    prefetch.step();
    const float* weight = p.blocks + c0 * K * K;
    Vec16 acc[kTokens];
    for (int q = 0; q < kTokens; ++q) acc[q] = load<Vec16>(p.bias + c0);
    for (int i = 0; i < K; ++i) {
      const TapWindow<K, D, kTokens> window(rows[i] + col * stride + c0, stride);
      for (int j = 0; j < K; ++j) {
        const Vec16 tap = load<Vec16>(weight + (i * K + j) * 16);
        for (int q = 0; q < kTokens; ++q) acc[q] += tap * window.v[q + j * D];
      }
    }
    const Vec16 gate = p.gate != nullptr ? load<Vec16>(p.gate + c0) : Vec16{} + 1.f;
    for (int q = 0; q < kTokens; ++q) {
      const int64_t offset = (col + q) * channels + c0;
      const Vec16 value = acc[q] * gate;
      const Vec16 result = residual != nullptr ? load_lanes(residual + offset, lanes) + value : value;
      if (lanes == 16) {
        store_output(out + offset, result, stream_out);
      } else {
        store_lanes(out + offset, result, lanes);
      }
    }
  });
}

// sums[t] += sum over tokens col .. col + kTokens - 1 of g[col'] * y_rows[i][col' + j * D], t = i * K + j.
// g is the padded ring row of the gradient at this row (token pad is column 0); sums is (K*K, padded channels).
template <int K, int D, int kTokens>
LEDIT_CPU_INLINE void tap_sums_tokens(const float* g, const float* const* rows, int64_t col, int64_t stride,
                                      float* sums, RowPrefetch& prefetch) {
  constexpr int kPad = D * (K / 2);
  for (int64_t c0 = 0; c0 < stride; c0 += 16) {
    prefetch.step();
    Vec16 grad[kTokens];
    for (int q = 0; q < kTokens; ++q) grad[q] = load<Vec16>(g + (col + q + kPad) * stride + c0);
    for (int i = 0; i < K; ++i) {
      const TapWindow<K, D, kTokens> window(rows[i] + col * stride + c0, stride);
      for (int j = 0; j < K; ++j) {
        float* sum = sums + (i * K + j) * stride + c0;
        Vec16 acc = load<Vec16>(sum);
        for (int q = 0; q < kTokens; ++q) acc += grad[q] * window.v[q + j * D];
        store<Vec16>(sum, acc);
      }
    }
  }
}

// Tokens col .. col + kTokens - 1: e = sum_t w_t * g[n - offset(t)] (the conv of the g rows with the flipped
// kernel), du = e * gate * (1 + scale), dx = LN backward of du, and the token sums. Two sweeps over the channel
// blocks: the first forms e and the channel sums of du and du * u that the LN backward needs, the second writes dx.
template <int K, int D, int kTokens>
LEDIT_CPU_INLINE void backward_tokens(const float* const* g_rows, const float* flipped_blocks, int64_t col,
                                      int64_t channels, const BackwardRow row, RowPrefetch& prefetch) {
  constexpr int kPad = D * (K / 2);
  const int64_t stride = padded_channels(channels);
  float mean[kTokens], rstd[kTokens];
  for (int q = 0; q < kTokens; ++q) {
    mean[q] = row.mean != nullptr ? row.mean[col + q] : 0.f;
    rstd[q] = row.rstd != nullptr ? row.rstd[col + q] : 1.f;
  }
  auto u_at = [&](int q, int64_t c0, auto lanes) LEDIT_LAMBDA_INLINE {
    return (load_lanes(row.x + (col + q) * channels + c0, lanes) - mean[q]) * rstd[q];
  };
  Vec16 du_sums[kTokens] = {}, du_u_sums[kTokens] = {};
  for_channel_blocks(channels, [&](int64_t c0, auto lanes) LEDIT_LAMBDA_INLINE {
    prefetch.step();
    const float* weight = flipped_blocks + c0 * K * K;
    Vec16 e[kTokens] = {};
    for (int i = 0; i < K; ++i) {
      const TapWindow<K, D, kTokens> window(g_rows[i] + col * stride + c0, stride);
      for (int j = 0; j < K; ++j) {
        const Vec16 tap = load<Vec16>(weight + (i * K + j) * 16);
        for (int q = 0; q < kTokens; ++q) e[q] += tap * window.v[q + j * D];
      }
    }
    const Vec16 gate_scale1p = load<Vec16>(row.gate_scale1p + c0);
    Vec16 sum_g = load<Vec16>(row.sum_g + c0), sum_e = load<Vec16>(row.sum_e + c0), sum_e_u = load<Vec16>(row.sum_e_u + c0);
    for (int q = 0; q < kTokens; ++q) {
      // Channels past C have g = 0, so e = du = 0 there and they add nothing.
      const Vec16 u = u_at(q, c0, lanes), du = e[q] * gate_scale1p;
      sum_g += load<Vec16>(row.g + (col + q + kPad) * stride + c0);
      sum_e += e[q];
      sum_e_u += e[q] * u;
      du_sums[q] += du;
      du_u_sums[q] += du * u;
      store<Vec16>(row.e + q * stride + c0, e[q]);
    }
    store<Vec16>(row.sum_g + c0, sum_g);
    store<Vec16>(row.sum_e + c0, sum_e);
    store<Vec16>(row.sum_e_u + c0, sum_e_u);
  });
  float mean_du[kTokens], mean_du_u[kTokens];
  for (int q = 0; q < kTokens; ++q) {
    mean_du[q] = row.mean != nullptr ? horizontal_sum(du_sums[q]) / channels : 0.f;
    mean_du_u[q] = row.mean != nullptr ? horizontal_sum(du_u_sums[q]) / channels : 0.f;
  }
  for_channel_blocks(channels, [&](int64_t c0, auto lanes) LEDIT_LAMBDA_INLINE {
    const Vec16 gate_scale1p = load<Vec16>(row.gate_scale1p + c0);
    for (int q = 0; q < kTokens; ++q) {
      const Vec16 du = load<Vec16>(row.e + q * stride + c0) * gate_scale1p;
      // Without LN, mean_du = mean_du_u = 0 and rstd = 1, so dx = du.
      const Vec16 dx = layer_norm_backward(du, u_at(q, c0, lanes), mean_du[q], mean_du_u[q], rstd[q]);
      if (lanes == 16) {
        store_output(row.dx + (col + q) * channels + c0, dx, row.stream_dx);
      } else {
        store_lanes(row.dx + (col + q) * channels + c0, dx, lanes);
      }
    }
  });
}

}  // namespace

LEDIT_CPU_MULTIVERSION
void token_stats(const float* __restrict__ x, int64_t channels, float* mean_out, float* rstd_out) {
  const int64_t vector_end = channels / 16 * 16;
  float total = vector_sum(vector_end, [&](int64_t c) { return load<Vec16>(x + c); });
  for (int64_t c = vector_end; c < channels; ++c) total += x[c];
  const float mean = total / channels;
  float variance = vector_sum(vector_end, [&](int64_t c) {
    const Vec16 d = load<Vec16>(x + c) - mean;
    return d * d;
  });
  for (int64_t c = vector_end; c < channels; ++c) variance += (x[c] - mean) * (x[c] - mean);
  *mean_out = mean;
  *rstd_out = layer_norm_rstd(variance / channels);
}

LEDIT_CPU_MULTIVERSION
void modulate(const float* __restrict__ x, float mean, float rstd, const float* __restrict__ scale1p,
              const float* __restrict__ shift, int64_t channels, float* __restrict__ y) {
  for (int64_t c = 0; c < channels; ++c) y[c] = (x[c] - mean) * rstd * scale1p[c] + shift[c];
}

LEDIT_CPU_MULTIVERSION
void conv_row(const float* const* rows, const ConvWeights& p, int k, int dilation, int64_t w, int64_t channels,
              const float* residual, float* out, bool stream_out, const void* prefetch_row, int64_t prefetch_bytes) {
  RowPrefetch prefetch(prefetch_row, prefetch_bytes, sweeps_per_row(w) * padded_channels(channels) / 16);
  with_kernel_shape(k, dilation, [&](auto K, auto D) LEDIT_LAMBDA_INLINE {
    for_token_sweeps(w, [&](int64_t col, auto n) LEDIT_LAMBDA_INLINE {
      conv_tokens<K.value, D.value, n.value>(rows, p, col, channels, residual, out, stream_out, prefetch);
    });
  });
#if defined(__SSE__)
  if (stream_out) _mm_sfence();  // the streamed stores are weakly ordered: make them visible before returning
#endif
}

LEDIT_CPU_MULTIVERSION
void tap_sums_row(const float* g, const float* const* rows, int k, int dilation, int64_t w, int64_t stride,
                  float* sums, const void* prefetch_row, int64_t prefetch_bytes) {
  RowPrefetch prefetch(prefetch_row, prefetch_bytes, sweeps_per_row(w) * stride / 16);
  with_kernel_shape(k, dilation, [&](auto K, auto D) LEDIT_LAMBDA_INLINE {
    for_token_sweeps(w, [&](int64_t col, auto n) LEDIT_LAMBDA_INLINE {
      tap_sums_tokens<K.value, D.value, n.value>(g, rows, col, stride, sums, prefetch);
    });
  });
}

LEDIT_CPU_MULTIVERSION
void backward_row(const float* const* g_rows, const float* flipped_blocks, int k, int dilation, int64_t w,
                  int64_t channels, const BackwardRow& row, const void* prefetch_row, int64_t prefetch_bytes) {
  RowPrefetch prefetch(prefetch_row, prefetch_bytes, sweeps_per_row(w) * padded_channels(channels) / 16);
  with_kernel_shape(k, dilation, [&](auto K, auto D) LEDIT_LAMBDA_INLINE {
    for_token_sweeps(w, [&](int64_t col, auto n) LEDIT_LAMBDA_INLINE {
      backward_tokens<K.value, D.value, n.value>(g_rows, flipped_blocks, col, channels, row, prefetch);
    });
  });
#if defined(__SSE__)
  if (row.stream_dx) _mm_sfence();
#endif
}

}  // namespace cpu
}  // namespace dwconv_modulate
}  // namespace ledit
