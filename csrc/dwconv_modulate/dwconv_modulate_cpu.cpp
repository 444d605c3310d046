// Schemas of ledit::dwconv_modulate_fwd / _bwd and their CPU kernels.
//
// Work is split into tasks of (sample, block of grid rows), run with at::parallel_for. A task streams its rows
// top to bottom through a ring of 2 * pad + 1 rows of y = LN(x) * (1 + scale) + shift in fp32, so each x row is
// read and normalised once; only the pad rows above a block are recomputed by the task below (the halo). The
// inner loops run over channels (contiguous in the token layout) in fp32 and are compiled for AVX-512, AVX2+FMA
// and baseline x86-64 with the CPU choosing at load time (LEDIT_CPU_MULTIVERSION, shared with scan_attention).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dwconv_modulate/dwconv_modulate.h"
#include "dwconv_modulate/tensor_prep.h"
#include "scan_attention/cpu_tile_math.h"

namespace ledit {
namespace dwconv {
namespace {

using cpu::Vec16;  // 16 floats: one AVX-512 register, two AVX2 ones

LEDIT_CPU_INLINE Vec16 load16(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
LEDIT_CPU_INLINE void store16(float* p, Vec16 v) { std::memcpy(p, &v, sizeof(v)); }

constexpr int kMaxTaps = 49;  // k = 7

// ---- fp32 channel loops (the hot part) --------------------------------------------------------------------------
// Small restrict-qualified helpers so the compiler vectorises without aliasing checks; they are inlined into the
// cloned functions below and so get each clone's instruction set.

// Independent partial sums let the reductions vectorise without reassociating floating point (-ffast-math).
constexpr int kLanes = 16;

template <typename Term>
inline float channel_sum(int64_t channels, Term term) {
  float lanes[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= channels; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += term(c + l);
  }
  float total = 0.f;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; c < channels; ++c) total += term(c);
  return total;
}

inline void multiply_add(const float* __restrict__ a, const float* __restrict__ b, int64_t channels,
                         float* __restrict__ acc) {
  for (int64_t c = 0; c < channels; ++c) acc[c] += a[c] * b[c];
}

// u = (x - mean) * rstd (mean 0 and rstd 1 without LN).
LEDIT_CPU_MULTIVERSION void normalize(const float* __restrict__ x, float mean, float rstd, int64_t channels,
                                   float* __restrict__ u) {
  for (int64_t c = 0; c < channels; ++c) u[c] = (x[c] - mean) * rstd;
}

// y = (x - mean) * rstd * (1 + scale) + shift.
LEDIT_CPU_MULTIVERSION void modulate(const float* __restrict__ x, float mean, float rstd,
                                  const float* __restrict__ scale1p, const float* __restrict__ shift,
                                  int64_t channels, float* __restrict__ y) {
  for (int64_t c = 0; c < channels; ++c) y[c] = (x[c] - mean) * rstd * scale1p[c] + shift[c];
}

// acc = bias + sum_i weights[i] * sources[i], channel-wise.
LEDIT_CPU_MULTIVERSION void sum_taps(const float* const* weights, const float* const* sources, int taps,
                                  const float* bias, int64_t channels, float* __restrict__ acc) {
  if (bias != nullptr) {
    std::copy(bias, bias + channels, acc);
  } else {
    std::fill(acc, acc + channels, 0.f);
  }
  for (int i = 0; i < taps; ++i) multiply_add(weights[i], sources[i], channels, acc);
}

// sums[i] += g * sources[i] for each tap i (the per-tap products behind dweight and dgate).
LEDIT_CPU_MULTIVERSION void accumulate_products(float* const* sums, const float* g, const float* const* sources,
                                             int taps, int64_t channels) {
  for (int i = 0; i < taps; ++i) multiply_add(g, sources[i], channels, sums[i]);
}

// From e = sum_t w_t * g[n - offset(t)] and u at one token: accumulate sum(g), sum(e), sum(e * u), and write
// dx = LN backward of du = e * gate * (1 + scale) (or du itself without LN).
LEDIT_CPU_MULTIVERSION void token_backward(const float* __restrict__ e, const float* __restrict__ u,
                                        const float* __restrict__ g, const float* __restrict__ gate_scale1p,
                                        float rstd, bool norm, int64_t channels, float* __restrict__ sum_g,
                                        float* __restrict__ sum_e, float* __restrict__ sum_e_u,
                                        float* __restrict__ dx) {
  for (int64_t c = 0; c < channels; ++c) {
    sum_g[c] += g[c];
    sum_e[c] += e[c];
    sum_e_u[c] += e[c] * u[c];
    dx[c] = e[c] * gate_scale1p[c];
  }
  if (!norm) return;
  const float mean_du = channel_sum(channels, [&](int64_t c) { return dx[c]; }) / channels;
  const float mean_du_u = channel_sum(channels, [&](int64_t c) { return dx[c] * u[c]; }) / channels;
  for (int64_t c = 0; c < channels; ++c) dx[c] = layer_norm_backward(dx[c], u[c], mean_du, mean_du_u, rstd);
}

// ---- dtype plumbing ---------------------------------------------------------------------------------------------

// A token as fp32: fp32 tokens are used in place, fp16/bf16 ones converted into scratch.
template <typename scalar_t>
const float* token_as_float(const scalar_t* src, int64_t channels, float* scratch) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return src;
  } else {
    for (int64_t c = 0; c < channels; ++c) scratch[c] = static_cast<float>(src[c]);
    return scratch;
  }
}

template <typename scalar_t>
void load_token(const scalar_t* src, int64_t channels, float* dst) {
  for (int64_t c = 0; c < channels; ++c) dst[c] = static_cast<float>(src[c]);
}

template <typename scalar_t>
void store_token(const float* src, int64_t channels, scalar_t* dst) {
  for (int64_t c = 0; c < channels; ++c) dst[c] = static_cast<scalar_t>(src[c]);
}

// ---- shared geometry --------------------------------------------------------------------------------------------

struct Geometry {
  int64_t batch, h, w, channels;
  int k, dilation;
  int pad() const { return dilation * (k / 2); }
  int ring_rows() const { return 2 * pad() + 1; }
};

Geometry make_geometry(const at::Tensor& x, int64_t h, int64_t w, const at::Tensor& weight, int64_t dilation) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == h * w, "dwconv_modulate: x must be (B, h*w, C)");
  return {x.size(0), h, w, x.size(2), kernel_size(weight, dilation), static_cast<int>(dilation)};
}

// Rows per task: enough tasks to keep every thread busy, but blocks no shorter than the halo they recompute.
int rows_per_task(const Geometry& g) {
  const int64_t wanted_tasks = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t blocks_per_sample = std::clamp<int64_t>((wanted_tasks + g.batch - 1) / g.batch, 1, g.h);
  const int64_t rows = (g.h + blocks_per_sample - 1) / blocks_per_sample;
  return static_cast<int>(std::max<int64_t>(rows, std::min<int64_t>(g.h, 2 * g.pad())));
}

// A ring of fp32 rows (w tokens x C channels each): grid row r lives in slot r % rows.
struct RowRing {
  std::vector<float> data;
  int64_t rows, row_size, channels;
  RowRing(int64_t rows_, int64_t w, int64_t channels_)
      : data(rows_ * w * channels_), rows(rows_), row_size(w * channels_), channels(channels_) {}
  float* token(int64_t row, int64_t col) { return data.data() + (row % rows) * row_size + col * channels; }
};

// The in-grid taps of the token at (row, col), as (weight, source) pointers; forward taps read y at
// (row, col) + offset, backward taps read g at (row, col) - offset. Returns the number of taps.
template <bool kBackward>
int gather_taps(const Geometry& g, int64_t row, int64_t col, const float* weight_taps, RowRing& ring,
                const float** weights, const float** sources) {
  const TapRange rows = kBackward ? backward_taps(row, g.h, g.k, g.dilation) : forward_taps(row, g.h, g.k, g.dilation);
  const TapRange cols = kBackward ? backward_taps(col, g.w, g.k, g.dilation) : forward_taps(col, g.w, g.k, g.dilation);
  const int sign = kBackward ? -1 : 1;
  int n = 0;
  for (int i = rows.first; i < rows.last; ++i) {
    for (int j = cols.first; j < cols.last; ++j) {
      weights[n] = weight_taps + (i * g.k + j) * g.channels;
      sources[n] = ring.token(row + sign * tap_offset(i, g.k, g.dilation), col + sign * tap_offset(j, g.k, g.dilation));
      ++n;
    }
  }
  return n;
}

// ---- forward ----------------------------------------------------------------------------------------------------
// The forward's ring keeps its rows padded: pad zero tokens left and right of the w grid tokens, and channels padded
// to a multiple of 16 with zeros, so the tap loop below runs in whole 16-float vectors with no bounds checks. Grid
// rows above and below the grid are one shared zero row.

int64_t padded_channels(int64_t channels) { return (channels + 15) / 16 * 16; }

// One sample's per-channel vectors (padded to padded_channels with zeros) and the conv weights as (k*k, padded).
struct ForwardParams {
  const float* weight_blocks;  // (padded / 16, k*k, 16): each 16-channel block's taps together
  const float* bias;  // zeros without bias
  const float* shift;
  const float* scale1p;
  const float* gate;  // nullptr without gate
};

// Sum over the channels of term(c), for c a multiple of 16: four independent vector sums hide the add latency.
template <typename Term>
LEDIT_CPU_INLINE float vector_sum(int64_t channels, Term term) {
  Vec16 sums[4] = {};
  int64_t c = 0;
  for (; c + 64 <= channels; c += 64) {
    for (int v = 0; v < 4; ++v) sums[v] += term(c + 16 * v);
  }
  for (; c < channels; c += 16) sums[0] += term(c);
  const Vec16 sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
  float total = 0.f;
  for (int i = 0; i < 16; ++i) total += sum[i];
  return total;
}

// y = LN(x) * (1 + scale) + shift of one token into its ring slot (LN stats also returned), or x * (1 + scale)
// + shift without LN. Two passes for the stats, the second from L1: the mean, then the centred sum of squares.
LEDIT_CPU_MULTIVERSION
void modulate_token(const float* __restrict__ x, int64_t channels, bool norm, const float* __restrict__ scale1p,
                    const float* __restrict__ shift, float* __restrict__ y, float* mean_out, float* rstd_out) {
  const int64_t vector_end = channels / 16 * 16;
  float mean = 0.f, rstd = 1.f;
  if (norm) {
    float total = vector_sum(vector_end, [&](int64_t c) { return load16(x + c); });
    for (int64_t c = vector_end; c < channels; ++c) total += x[c];
    mean = total / channels;
    float variance = vector_sum(vector_end, [&](int64_t c) {
      const Vec16 d = load16(x + c) - mean;
      return d * d;
    });
    for (int64_t c = vector_end; c < channels; ++c) variance += (x[c] - mean) * (x[c] - mean);
    rstd = layer_norm_rstd(variance / channels);
  }
  for (int64_t c = 0; c < vector_end; c += 16) {
    store16(y + c, (load16(x + c) - mean) * rstd * load16(scale1p + c) + load16(shift + c));
  }
  for (int64_t c = vector_end; c < channels; ++c) y[c] = (x[c] - mean) * rstd * scale1p[c] + shift[c];
  *mean_out = mean;
  *rstd_out = rstd;
}

// Stores out = residual + acc for `lanes` channels (acc is already gated); a full vector when lanes == 16.
LEDIT_CPU_INLINE void store_output(Vec16 acc, const float* residual, int lanes, float* out) {
  if (lanes == 16) {
    store16(out, residual != nullptr ? load16(residual) + acc : acc);
    return;
  }
  float values[16];
  store16(values, acc);
  for (int l = 0; l < lanes; ++l) out[l] = (residual != nullptr ? residual[l] : 0.f) + values[l];
}

// kCols consecutive output tokens of one row, starting at column col: out = residual + gate * (bias +
// sum_taps w_t * y[. + offset(t)]). `rows` are the k ring rows the kernel rows read (padded: token j of a ring row
// is grid column j - pad). The sweep runs over 16-channel blocks, so every stream (y, weights, residual, out) is
// read in address order; within a block, each tap's weight vector feeds kCols independent accumulators.
template <int K, int kCols>
LEDIT_CPU_INLINE void conv_columns(const float* const* rows, const ForwardParams& p, int dilation, int64_t col,
                                   int64_t channels, const float* residual, float* out) {
  const int64_t stride = padded_channels(channels);
  for (int64_t c0 = 0; c0 < stride; c0 += 16) {
    const float* weight = p.weight_blocks + c0 * K * K;  // this block's (k*k, 16) weights
    Vec16 acc[kCols];
    for (int q = 0; q < kCols; ++q) acc[q] = load16(p.bias + c0);
    for (int i = 0; i < K; ++i) {
      const float* src = rows[i] + col * stride + c0;
      for (int j = 0; j < K; ++j) {
        const Vec16 tap = load16(weight + (i * K + j) * 16);
        for (int q = 0; q < kCols; ++q) acc[q] += tap * load16(src + (q + j * dilation) * stride);
      }
    }
    const Vec16 gate = p.gate != nullptr ? load16(p.gate + c0) : Vec16{} + 1.f;
    const int lanes = static_cast<int>(std::min<int64_t>(16, channels - c0));
    for (int q = 0; q < kCols; ++q) {
      const int64_t offset = (col + q) * channels + c0;
      store_output(acc[q] * gate, residual != nullptr ? residual + offset : nullptr, lanes, out + offset);
    }
  }
}

// One output row of w tokens, kCols columns at a time.
template <int K>
LEDIT_CPU_INLINE void conv_row_k(const float* const* rows, const ForwardParams& p, int dilation, int64_t w,
                                 int64_t channels, const float* residual, float* out) {
  constexpr int kCols = 4;
  int64_t col = 0;
  for (; col + kCols <= w; col += kCols) conv_columns<K, kCols>(rows, p, dilation, col, channels, residual, out);
  for (; col < w; ++col) conv_columns<K, 1>(rows, p, dilation, col, channels, residual, out);
}

LEDIT_CPU_MULTIVERSION
void conv_row(const float* const* rows, const ForwardParams& p, int k, int dilation, int64_t w, int64_t channels,
              const float* residual, float* out) {
  switch (k) {
    case 3: return conv_row_k<3>(rows, p, dilation, w, channels, residual, out);
    case 5: return conv_row_k<5>(rows, p, dilation, w, channels, residual, out);
    default: return conv_row_k<7>(rows, p, dilation, w, channels, residual, out);
  }
}

template <typename scalar_t>
void forward_kernel(const Geometry& g, bool norm, const scalar_t* x, const ForwardParams& params,
                    const scalar_t* residual, scalar_t* out, float* mean, float* rstd) {
  const int rows_per_block = rows_per_task(g);
  const int64_t blocks = (g.h + rows_per_block - 1) / rows_per_block;
  const int64_t n_tokens = g.h * g.w, C = g.channels, stride = padded_channels(C);
  const int64_t ring_row = (g.w + 2 * g.pad()) * stride;
  constexpr bool kFloat = std::is_same_v<scalar_t, float>;
  at::parallel_for(0, g.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    // ring_rows() slots, then the zero row; zero-initialised, and the padding is never written.
    std::vector<float> ring((g.ring_rows() + 1) * ring_row, 0.f);
    const float* zero_row = ring.data() + g.ring_rows() * ring_row;
    std::vector<float> x_scratch(kFloat ? 0 : C), residual_scratch(kFloat ? 0 : g.w * C),
        out_scratch(kFloat ? 0 : g.w * C);
    const float* rows[7];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const RowBlock block = row_block(static_cast<int>(task % blocks), rows_per_block, static_cast<int>(g.h));
      ForwardParams p = params;
      p.shift += b * stride;
      p.scale1p += b * stride;
      if (p.gate != nullptr) p.gate += b * stride;
      auto slot = [&](int64_t r) { return ring.data() + (r % g.ring_rows()) * ring_row; };
      // Normalises and modulates grid row r into the ring; the stats of the block's own rows are outputs.
      auto load_row = [&](int64_t r) {
        const bool own_row = r >= block.first && r < block.last;
        for (int64_t col = 0; col < g.w; ++col) {
          const int64_t token = b * n_tokens + r * g.w + col;
          const float* xt = token_as_float(x + token * C, C, x_scratch.data());
          float mu, inv_std;
          modulate_token(xt, C, norm, p.scale1p, p.shift, slot(r) + (col + g.pad()) * stride, &mu, &inv_std);
          if (norm && own_row) {
            mean[token] = mu;
            rstd[token] = inv_std;
          }
        }
      };
      int64_t next_row = std::max<int64_t>(0, block.first - g.pad());
      for (int64_t r = block.first; r < block.last; ++r) {
        for (; next_row <= std::min<int64_t>(g.h - 1, r + g.pad()); ++next_row) load_row(next_row);
        for (int i = 0; i < g.k; ++i) {
          const int64_t source = r + tap_offset(i, g.k, g.dilation);
          rows[i] = source >= 0 && source < g.h ? slot(source) : zero_row;
        }
        const int64_t first_token = b * n_tokens + r * g.w;
        const scalar_t* res = residual != nullptr ? residual + first_token * C : nullptr;
        if constexpr (kFloat) {
          conv_row(rows, p, g.k, g.dilation, g.w, C, res, out + first_token * C);
        } else {
          if (res != nullptr) load_token(res, g.w * C, residual_scratch.data());
          conv_row(rows, p, g.k, g.dilation, g.w, C, res != nullptr ? residual_scratch.data() : nullptr,
                   out_scratch.data());
          store_token(out_scratch.data(), g.w * C, out + first_token * C);
        }
      }
    }
  });
}

// A (..., C) tensor as fp32 with its last dimension zero-padded to `padded` channels.
at::Tensor float_padded(const at::Tensor& t, int64_t padded) {
  return at::constant_pad_nd(t.to(at::kFloat), {0, padded - t.size(-1)}).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& x_in, int64_t h, int64_t w,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           const at::Tensor& shift, const at::Tensor& scale,
                                                           const std::optional<at::Tensor>& gate,
                                                           const std::optional<at::Tensor>& residual_in,
                                                           int64_t dilation, bool norm) {
  const Geometry g = make_geometry(x_in, h, w, weight, dilation);
  const int64_t stride = padded_channels(g.channels);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor residual = residual_in.has_value() ? residual_in->contiguous() : at::Tensor();
  const at::Tensor weight_blocks =
      float_padded(taps_by_channel(weight), stride).view({-1, stride / 16, 16}).transpose(0, 1).contiguous();
  const at::Tensor bias_f =
      bias.has_value() ? float_padded(*bias, stride) : at::zeros({stride}, x.options().dtype(at::kFloat));
  const at::Tensor shift_f = float_padded(shift, stride);
  const at::Tensor scale1p = float_padded(scale.to(at::kFloat) + 1, stride);
  const at::Tensor gate_f = gate.has_value() ? float_padded(*gate, stride) : at::Tensor();
  const ForwardParams params{weight_blocks.data_ptr<float>(), bias_f.data_ptr<float>(), shift_f.data_ptr<float>(),
                             scale1p.data_ptr<float>(), optional_data(gate_f)};
  at::Tensor out = at::empty_like(x), mean = empty_stats(x, norm), rstd = empty_stats(x, norm);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dwconv_modulate_fwd_cpu", [&] {
    forward_kernel<scalar_t>(g, norm, x.data_ptr<scalar_t>(), params,
                             residual.defined() ? residual.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
                             norm ? mean.data_ptr<float>() : nullptr, norm ? rstd.data_ptr<float>() : nullptr);
  });
  return {out, mean, rstd};
}

// ---- backward ---------------------------------------------------------------------------------------------------

template <typename scalar_t>
void backward_kernel(const Geometry& g, bool norm, const scalar_t* dout, const scalar_t* x, const float* weight_taps,
                     const float* shift, const float* scale1p, const float* gate_scale1p, const float* mean,
                     const float* rstd, scalar_t* dx, float* task_sums, int rows_per_block) {
  const int64_t blocks = (g.h + rows_per_block - 1) / rows_per_block;
  const int64_t n_tokens = g.h * g.w, C = g.channels;
  at::parallel_for(0, g.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    RowRing y_ring(g.ring_rows(), g.w, C), g_ring(g.ring_rows(), g.w, C);
    std::vector<float> x_scratch(C), u(C), e(C), dx_scratch(C);
    const float* weights[kMaxTaps];
    const float* sources[kMaxTaps];
    float* product_sums[kMaxTaps];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const RowBlock block = row_block(static_cast<int>(task % blocks), rows_per_block, static_cast<int>(g.h));
      float* sums = task_sums + task * sum_rows(g.k) * C;
      std::fill(sums, sums + sum_rows(g.k) * C, 0.f);
      // Grid row r of y (recomputed from x with the saved stats) and of g = dout, both in fp32.
      auto load_row = [&](int64_t r) {
        for (int64_t col = 0; col < g.w; ++col) {
          const int64_t token = b * n_tokens + r * g.w + col;
          const float* xt = token_as_float(x + token * C, C, x_scratch.data());
          modulate(xt, norm ? mean[token] : 0.f, norm ? rstd[token] : 1.f, scale1p + b * C, shift + b * C, C,
                   y_ring.token(r, col));
          load_token(dout + token * C, C, g_ring.token(r, col));
        }
      };
      int64_t next_row = std::max<int64_t>(0, block.first - g.pad());
      for (int64_t r = block.first; r < block.last; ++r) {
        for (; next_row <= std::min<int64_t>(g.h - 1, r + g.pad()); ++next_row) load_row(next_row);
        for (int64_t col = 0; col < g.w; ++col) {
          const int64_t token = b * n_tokens + r * g.w + col;
          const float* g_here = g_ring.token(r, col);
          // Per-tap products g * y[n + offset], at the taps this token's output read in the forward.
          const TapRange rows = forward_taps(r, g.h, g.k, g.dilation);
          const TapRange cols = forward_taps(col, g.w, g.k, g.dilation);
          int n = 0;
          for (int i = rows.first; i < rows.last; ++i) {
            for (int j = cols.first; j < cols.last; ++j) {
              product_sums[n] = sums + (i * g.k + j) * C;
              sources[n] = y_ring.token(r + tap_offset(i, g.k, g.dilation), col + tap_offset(j, g.k, g.dilation));
              ++n;
            }
          }
          accumulate_products(product_sums, g_here, sources, n, C);
          // e = sum_t w_t * g[n - offset(t)], then the LN backward of this token.
          const int taps = gather_taps<true>(g, r, col, weight_taps, g_ring, weights, sources);
          sum_taps(weights, sources, taps, nullptr, C, e.data());
          const float* xt = token_as_float(x + token * C, C, x_scratch.data());
          const float token_rstd = norm ? rstd[token] : 1.f;
          normalize(xt, norm ? mean[token] : 0.f, token_rstd, C, u.data());
          float* dx_out = dx_scratch.data();
          if constexpr (std::is_same_v<scalar_t, float>) dx_out = dx + token * C;
          token_backward(e.data(), u.data(), g_here, gate_scale1p + b * C, token_rstd, norm, C,
                         sums + sum_row_dout(g.k) * C, sums + sum_row_e(g.k) * C, sums + sum_row_e_u(g.k) * C,
                         dx_out);
          if constexpr (!std::is_same_v<scalar_t, float>) store_token(dx_out, C, dx + token * C);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x_in, int64_t h,
                                                int64_t w, const at::Tensor& weight, const at::Tensor& shift,
                                                const at::Tensor& scale, const std::optional<at::Tensor>& gate,
                                                const at::Tensor& mean, const at::Tensor& rstd, int64_t dilation,
                                                bool norm) {
  const Geometry g = make_geometry(x_in, h, w, weight, dilation);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor dout = grad_out.contiguous();
  const at::Tensor weight_taps = taps_by_channel(weight);
  const at::Tensor shift_f = float_contiguous(shift);
  const at::Tensor scale1p = float_contiguous(scale) + 1;
  const at::Tensor gate_scale1p = gate.has_value() ? (scale1p * gate->to(at::kFloat)).contiguous() : scale1p;
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const int rows_per_block = rows_per_task(g);
  const int64_t blocks = (g.h + rows_per_block - 1) / rows_per_block;
  at::Tensor dx = at::empty_like(x);
  at::Tensor task_sums = at::empty({g.batch, blocks, sum_rows(g.k), g.channels}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dwconv_modulate_bwd_cpu", [&] {
    backward_kernel<scalar_t>(g, norm, dout.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                              weight_taps.data_ptr<float>(), shift_f.data_ptr<float>(), scale1p.data_ptr<float>(),
                              gate_scale1p.data_ptr<float>(), norm ? mean_c.data_ptr<float>() : nullptr,
                              norm ? rstd_c.data_ptr<float>() : nullptr, dx.data_ptr<scalar_t>(),
                              task_sums.data_ptr<float>(), rows_per_block);
  });
  // Summing the row blocks of each sample in a fixed order keeps the result deterministic.
  return {dx, task_sums.sum(1)};
}

}  // namespace
}  // namespace dwconv
}  // namespace ledit

TORCH_LIBRARY_FRAGMENT(ledit, m) {
  m.def(
      "dwconv_modulate_fwd(Tensor x, int h, int w, Tensor weight, Tensor? bias, Tensor shift, Tensor scale, "
      "Tensor? gate, Tensor? residual, int dilation, bool norm) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "dwconv_modulate_bwd(Tensor grad_out, Tensor x, int h, int w, Tensor weight, Tensor shift, Tensor scale, "
      "Tensor? gate, Tensor mean, Tensor rstd, int dilation, bool norm) -> (Tensor grad_x, Tensor sums)");
}

TORCH_LIBRARY_IMPL(ledit, CPU, m) {
  m.impl("dwconv_modulate_fwd", &ledit::dwconv::forward_cpu);
  m.impl("dwconv_modulate_bwd", &ledit::dwconv::backward_cpu);
}
