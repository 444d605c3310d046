// CPU kernels of ledit::dwconv_modulate_fwd / _bwd (schemas in dwconv_modulate_ops.cpp).
//
// A call is a list of images: a batch is B images of one grid, a packed sequence n images of their own grids back
// to back (common/packed_images.h), each with its own row of shift/scale/gate and its own zero border, so no tap
// reads another image. Work is split into tasks of (image, block of grid rows), run with at::parallel_for. A task
// streams its rows top to bottom through a ring of 2 * pad + 1 rows of y = LN(x) * (1 + scale) + shift in fp32 (the
// backward keeps a second ring of the output gradient), so each x row is read and normalised once; only the pad rows
// above a block are recomputed by the task below (the halo). Ring rows are padded with zero tokens left and right
// and with zero channels up to a multiple of 16, so the tap loops run in whole 16-float vectors with no bounds
// checks.
// The tap loops sweep 16-channel blocks of a few neighbouring tokens at a time: every stream is read in address
// order and each weight vector feeds several independent accumulators. The hot functions are compiled for
// AVX-512, AVX2+FMA and baseline x86-64, and the CPU picks one at load time (LEDIT_CPU_MULTIVERSION, shared with
// scan_attention).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/packed_grids.h"
#include "common/packed_images.h"
#include "dwconv_modulate/cpu_row_sweeps.h"
#include "dwconv_modulate/dwconv_modulate.h"
#include "dwconv_modulate/tensor_prep.h"

namespace ledit {
namespace dwconv_modulate {
namespace cpu {
namespace {

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

// The conv of one call.
struct Conv {
  int64_t channels;
  int k, dilation;
  int pad() const { return dilation * (k / 2); }
  int ring_rows() const { return 2 * pad() + 1; }
  int64_t stride() const { return padded_channels(channels); }
};

Conv make_conv(const at::Tensor& x, const at::Tensor& weight, int64_t dilation) {
  TORCH_CHECK(x.dim() == 3, "dwconv_modulate: x must be (B, N, C), got ", x.sizes());
  return {x.size(2), kernel_size(weight, dilation), static_cast<int>(dilation)};
}

// One image of a call: its grid, its first token in the call's tokens (the (B, N) or (1, total) token axes
// flattened), and its row of shift, scale and gate. A batch is B images of one grid, image b at token b * N with
// row b; a packed sequence is n images back to back (common/packed_images.h), image i with row i.
struct Image {
  int64_t h, w, token0, sample;
};

// The work of a call: tasks of (image, block of grid rows), image by image; image i's blocks of rows_per_block[i]
// rows are the tasks [task_offsets[i], task_offsets[i + 1]) (common/packed_images.h's unit_offsets).
struct Tasks {
  std::vector<Image> images;
  std::vector<int> rows_per_block;
  std::vector<int32_t> task_offsets;
  int64_t tokens;  // of all images
  int64_t count() const { return task_offsets.back(); }
  int64_t max_w() const {
    int64_t most = 0;
    for (const Image& image : images) most = std::max(most, image.w);
    return most;
  }
  // The image of a task and its block of rows.
  std::pair<const Image*, RowBlock> task(int64_t task) const {
    const int i = segment_of(task_offsets.data(), static_cast<int>(images.size()), task);
    const Image& image = images[i];
    const int block = static_cast<int>(task - task_offsets[i]);
    return {&image, row_block(block, rows_per_block[i], static_cast<int>(image.h))};
  }
};

// Splits each image into blocks of rows: about 4 tasks per thread over the call, each image's share in proportion
// to its tokens (a batch: ceil(4 * threads / B) blocks per sample), and no block shorter than the halo it
// recomputes.
Tasks make_tasks(const Conv& conv, std::vector<Image> images) {
  Tasks tasks{std::move(images), {}, {0}, 0};
  for (const Image& image : tasks.images) tasks.tokens += image.h * image.w;
  const int64_t wanted_tasks = 4 * static_cast<int64_t>(at::get_num_threads());
  for (const Image& image : tasks.images) {
    const int64_t share = (wanted_tasks * image.h * image.w + tasks.tokens - 1) / tasks.tokens;
    const int64_t blocks = std::clamp<int64_t>(share, 1, image.h);
    const int64_t rows = std::max<int64_t>((image.h + blocks - 1) / blocks, std::min<int64_t>(image.h, 2 * conv.pad()));
    tasks.rows_per_block.push_back(static_cast<int>(rows));
    tasks.task_offsets.push_back(static_cast<int32_t>(tasks.task_offsets.back() + (image.h + rows - 1) / rows));
  }
  return tasks;
}

// A batch: image b is sample b, all of one grid.
Tasks batch_tasks(const Conv& conv, const at::Tensor& x, int64_t h, int64_t w) {
  TORCH_CHECK(x.size(1) == h * w, "dwconv_modulate: x must be (B, h*w, C); grid (", h, ", ", w, ") does not hold N=",
              x.size(1), " tokens");
  std::vector<Image> images;
  for (int64_t b = 0; b < x.size(0); ++b) images.push_back({h, w, b * h * w, b});
  return make_tasks(conv, std::move(images));
}

// A packed sequence: the images of grids, back to back.
Tasks packed_tasks(const Conv& conv, const at::Tensor& x, const at::Tensor& grids) {
  TORCH_CHECK(x.size(0) == 1, "dwconv_modulate: a packed sequence is (1, total_tokens, C), got ", x.sizes());
  std::vector<Image> images;
  for (const ImageGrid& g : read_packed_grids(grids, x.size(1), "dwconv_modulate"))
    images.push_back({g.h, g.w, g.token0, static_cast<int64_t>(images.size())});
  return make_tasks(conv, std::move(images));
}

// A ring of padded fp32 rows (pad + w + pad tokens of stride() channels, zero outside the grid tokens and
// channels) for the image a task works on: grid row r lives in slot r % ring_rows(); rows outside the grid read
// one shared zero row. Slots are laid out once for the call's widest image, so a packed call's images of other
// widths reuse them: reallocating and zeroing the ring per image cost a mixed pack ~3% of the forward.
class RowRing {
 public:
  RowRing(const Conv& conv, int64_t max_w)
      : conv_(conv),
        slot_size_((max_w + 2 * conv.pad()) * conv.stride()),
        data_((conv.ring_rows() + 1) * slot_size_) {}
  // Fits the ring to an image of h x w tokens. Only the grid tokens' first `channels` values are ever written, so
  // the left padding and the channel padding stay zero; a wider image before may have written where this one's
  // right padding is, so that is zeroed when the width changes.
  void fit(int64_t h, int64_t w) {
    h_ = h;
    if (w == w_) return;
    w_ = w;
    for (int s = 0; s < conv_.ring_rows(); ++s) {
      float* right_pad = slot(s) + (w + conv_.pad()) * conv_.stride();
      std::fill(right_pad, right_pad + conv_.pad() * conv_.stride(), 0.f);
    }
  }
  // Token col (a grid column) of grid row r.
  float* token(int64_t r, int64_t col) { return slot(r % conv_.ring_rows()) + (col + conv_.pad()) * conv_.stride(); }
  // The padded row for grid row r, which may lie outside the grid.
  const float* row(int64_t r) { return r >= 0 && r < h_ ? slot(r % conv_.ring_rows()) : slot(conv_.ring_rows()); }
  // The rows the k kernel rows read for output row r (tap offsets offset(i)).
  void kernel_rows(int64_t r, const float** rows) {
    for (int i = 0; i < conv_.k; ++i) rows[i] = row(r + tap_offset(i, conv_.k, conv_.dilation));
  }

 private:
  float* slot(int64_t s) { return data_.data() + s * slot_size_; }
  Conv conv_;
  int64_t slot_size_, h_ = 0, w_ = -1;
  std::vector<float> data_;  // zero-initialised
};

// Whether a (B, N, C) fp32 output (out, or dx) is written with non-temporal stores that skip the caches: when it is
// at least 8 MB (a few times a core's L2, a fair share of a shared L3) and the stores can be 16-byte aligned.
// Nothing in the kernel rereads it, and skipping the read for ownership of each line saved ~8% of the forward at
// B=4, 32x32, C=1152 (19 MB).
bool streams_output(const Conv& conv, int64_t tokens, const void* out) {
  constexpr int64_t kStreamingBytes = int64_t{8} << 20;
  return tokens * conv.channels * 4 >= kStreamingBytes && conv.channels % 4 == 0 &&
         reinterpret_cast<uintptr_t>(out) % 16 == 0;
}

// The weights as 16-channel blocks (ConvWeights::blocks), from taps_by_channel's (k*k, C).
at::Tensor weight_blocks(const at::Tensor& taps, int64_t stride) {
  const at::Tensor padded = at::constant_pad_nd(taps, {0, stride - taps.size(1)});
  return padded.view({taps.size(0), stride / 16, 16}).transpose(0, 1).contiguous();
}

// A (C,) or (B, C) per-channel tensor as fp32 with C zero-padded to `stride`.
at::Tensor float_padded(const at::Tensor& t, int64_t stride) {
  return at::constant_pad_nd(t.to(at::kFloat), {0, stride - t.size(-1)}).contiguous();
}

// ---- forward ----------------------------------------------------------------------------------------------------

template <typename scalar_t>
void forward_kernel(const Conv& g, const Tasks& tasks, bool norm, const scalar_t* x, const ConvWeights& weights,
                    const float* shift, const float* scale1p, const scalar_t* residual, scalar_t* out, float* mean,
                    float* rstd) {
  constexpr bool kFloat = std::is_same_v<scalar_t, float>;
  const int64_t C = g.channels, max_row = tasks.max_w() * C;
  // fp16/bf16 rows go through out_row, which is reread at once, so only fp32 outputs are streamed.
  const bool stream_out = kFloat && streams_output(g, tasks.tokens, out);
  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
    RowRing ring(g, tasks.max_w());
    std::vector<float> x_scratch(kFloat ? 0 : C), residual_row(kFloat ? 0 : max_row), out_row(kFloat ? 0 : max_row);
    const float* rows[7];
    for (int64_t task = begin; task < end; ++task) {
      const auto [image, block] = tasks.task(task);
      const int64_t w = image->w, sample = image->sample;
      ring.fit(image->h, w);
      ConvWeights sample_weights = weights;
      if (sample_weights.gate != nullptr) sample_weights.gate += sample * g.stride();
      // Normalises and modulates grid row r into the ring; the stats of the block's own rows are outputs.
      auto load_row = [&](int64_t r) {
        for (int64_t col = 0; col < w; ++col) {
          const int64_t token = image->token0 + r * w + col;
          const float* xt = token_as_float(x + token * C, C, x_scratch.data());
          float mu = 0.f, inv_std = 1.f;
          if (norm) token_stats(xt, C, &mu, &inv_std);
          if (norm && r >= block.first && r < block.last) {
            mean[token] = mu;
            rstd[token] = inv_std;
          }
          modulate(xt, mu, inv_std, scale1p + sample * C, shift + sample * C, C, ring.token(r, col));
        }
      };
      int64_t next_row = std::max<int64_t>(0, block.first - g.pad());
      for (int64_t r = block.first; r < block.last; ++r) {
        for (; next_row <= std::min<int64_t>(image->h - 1, r + g.pad()); ++next_row) load_row(next_row);
        ring.kernel_rows(r, rows);
        const int64_t first = (image->token0 + r * w) * C;
        const scalar_t* res = residual != nullptr ? residual + first : nullptr;
        const scalar_t* next_x = next_row < image->h ? x + (image->token0 + next_row * w) * C : nullptr;
        const int64_t row_bytes = w * C * static_cast<int64_t>(sizeof(scalar_t));
        if constexpr (kFloat) {
          conv_row(rows, sample_weights, g.k, g.dilation, w, C, res, out + first, stream_out, next_x, row_bytes);
        } else {
          if (res != nullptr) load_token(res, w * C, residual_row.data());
          conv_row(rows, sample_weights, g.k, g.dilation, w, C, res != nullptr ? residual_row.data() : nullptr,
                   out_row.data(), stream_out, next_x, row_bytes);
          store_token(out_row.data(), w * C, out + first);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_tasks(const Conv& g, const Tasks& tasks, const at::Tensor& x_in,
                                                             const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias,
                                                             const at::Tensor& shift, const at::Tensor& scale,
                                                             const std::optional<at::Tensor>& gate,
                                                             const std::optional<at::Tensor>& residual_in, bool norm) {
  const auto images = static_cast<int64_t>(tasks.images.size());
  check_modulation_rows(images, x_in, {&shift, &scale});
  if (gate.has_value()) check_modulation_rows(images, x_in, {&*gate});
  if (x_in.numel() == 0) {  // B = 0 or C = 0: nothing to compute
    // The stats of a LayerNorm over C = 0 channels are NaN (as the CUDA glue returns them).
    return {at::empty_like(x_in, at::MemoryFormat::Contiguous), empty_stats(x_in, norm).fill_(NAN),
            empty_stats(x_in, norm).fill_(NAN)};
  }
  const at::Tensor x = x_in.contiguous();
  const at::Tensor residual = residual_in.has_value() ? residual_in->contiguous() : at::Tensor();
  const at::Tensor blocks = weight_blocks(taps_by_channel(weight), g.stride());
  const at::Tensor bias_f =
      bias.has_value() ? float_padded(*bias, g.stride()) : at::zeros({g.stride()}, x.options().dtype(at::kFloat));
  const at::Tensor gate_f = gate.has_value() ? float_padded(*gate, g.stride()) : at::Tensor();
  const at::Tensor shift_f = float_contiguous(shift);
  const at::Tensor scale1p = float_contiguous(scale) + 1;
  const ConvWeights weights{blocks.data_ptr<float>(), bias_f.data_ptr<float>(), optional_data(gate_f)};
  at::Tensor out = at::empty_like(x), mean = empty_stats(x, norm), rstd = empty_stats(x, norm);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dwconv_modulate_fwd_cpu", [&] {
    forward_kernel<scalar_t>(g, tasks, norm, x.data_ptr<scalar_t>(), weights, shift_f.data_ptr<float>(),
                             scale1p.data_ptr<float>(), residual.defined() ? residual.data_ptr<scalar_t>() : nullptr,
                             out.data_ptr<scalar_t>(), norm ? mean.data_ptr<float>() : nullptr,
                             norm ? rstd.data_ptr<float>() : nullptr);
  });
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& x, int64_t h, int64_t w,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias,
                                                           const at::Tensor& shift, const at::Tensor& scale,
                                                           const std::optional<at::Tensor>& gate,
                                                           const std::optional<at::Tensor>& residual, int64_t dilation,
                                                           bool norm) {
  const Conv g = make_conv(x, weight, dilation);
  return forward_tasks(g, batch_tasks(g, x, h, w), x, weight, bias, shift, scale, gate, residual, norm);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_forward_cpu(const at::Tensor& x, const at::Tensor& grids,
                                                                  const at::Tensor& weight,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  const at::Tensor& shift, const at::Tensor& scale,
                                                                  const std::optional<at::Tensor>& gate,
                                                                  const std::optional<at::Tensor>& residual,
                                                                  int64_t dilation, bool norm) {
  const Conv g = make_conv(x, weight, dilation);
  return forward_tasks(g, packed_tasks(g, x, grids), x, weight, bias, shift, scale, gate, residual, norm);
}

// ---- backward ---------------------------------------------------------------------------------------------------
// Per row: the tap products G_t from the y and g rings (tap_sums_row), then dx and the token sums (backward_row).
// A task's sums are (k*k + 3, padded channels) rows of task_sums.

struct BackwardInputs {
  const float* flipped_blocks;  // weight_blocks of the flipped kernel
  const float* shift;
  const float* scale1p;
  const float* gate_scale1p;  // (B, padded): gate * (1 + scale), or 1 + scale without gate
  const float* mean;          // nullptr without LN
  const float* rstd;
};

template <typename scalar_t>
void backward_kernel(const Conv& g, const Tasks& tasks, bool norm, const scalar_t* dout, const scalar_t* x,
                     const BackwardInputs& in, scalar_t* dx, float* task_sums) {
  constexpr bool kFloat = std::is_same_v<scalar_t, float>;
  const int64_t C = g.channels, stride = g.stride(), max_row = tasks.max_w() * C;
  const bool stream_dx = kFloat && streams_output(g, tasks.tokens, dx);  // fp16/bf16: dx_row is reread at once
  at::parallel_for(0, tasks.count(), 1, [&](int64_t begin, int64_t end) {
    RowRing y_ring(g, tasks.max_w()), g_ring(g, tasks.max_w());
    std::vector<float> x_scratch(kFloat ? 0 : C), x_row(kFloat ? 0 : max_row), dx_row(kFloat ? 0 : max_row),
        e(kMaxSweepTokens * stride);
    const float* y_rows[7];
    const float* g_rows[7];
    for (int64_t task = begin; task < end; ++task) {
      const auto [image, block] = tasks.task(task);
      const int64_t w = image->w, sample = image->sample;
      y_ring.fit(image->h, w);
      g_ring.fit(image->h, w);
      float* sums = task_sums + task * sum_rows(g.k) * stride;
      std::fill(sums, sums + sum_rows(g.k) * stride, 0.f);
      // Grid row r of y (recomputed from x with the saved stats) and of g = dout, both in fp32.
      auto load_row = [&](int64_t r) {
        for (int64_t col = 0; col < w; ++col) {
          const int64_t token = image->token0 + r * w + col;
          const float* xt = token_as_float(x + token * C, C, x_scratch.data());
          modulate(xt, norm ? in.mean[token] : 0.f, norm ? in.rstd[token] : 1.f, in.scale1p + sample * C,
                   in.shift + sample * C, C, y_ring.token(r, col));
          load_token(dout + token * C, C, g_ring.token(r, col));
        }
      };
      int64_t next_row = std::max<int64_t>(0, block.first - g.pad());
      for (int64_t r = block.first; r < block.last; ++r) {
        for (; next_row <= std::min<int64_t>(image->h - 1, r + g.pad()); ++next_row) load_row(next_row);
        y_ring.kernel_rows(r, y_rows);
        g_ring.kernel_rows(r, g_rows);
        const float* g_row = g_ring.row(r);
        // The next row's x and dout stream in from DRAM during this row's two sweeps.
        const int64_t next = image->token0 + next_row * w;
        const bool has_next = next_row < image->h;
        const int64_t row_bytes = w * C * static_cast<int64_t>(sizeof(scalar_t));
        tap_sums_row(g_row, y_rows, g.k, g.dilation, w, stride, sums, has_next ? x + next * C : nullptr, row_bytes);
        const int64_t first = image->token0 + r * w;
        if constexpr (!kFloat) load_token(x + first * C, w * C, x_row.data());
        const BackwardRow row{kFloat ? reinterpret_cast<const float*>(x + first * C) : x_row.data(),
                              norm ? in.mean + first : nullptr,
                              norm ? in.rstd + first : nullptr,
                              g_row,
                              in.gate_scale1p + sample * stride,
                              sums + sum_row_dout(g.k) * stride,
                              sums + sum_row_e(g.k) * stride,
                              sums + sum_row_e_u(g.k) * stride,
                              e.data(),
                              kFloat ? reinterpret_cast<float*>(dx + first * C) : dx_row.data(),
                              stream_dx};
        backward_row(g_rows, in.flipped_blocks, g.k, g.dilation, w, C, row, has_next ? dout + next * C : nullptr,
                     row_bytes);
        if constexpr (!kFloat) store_token(dx_row.data(), w * C, dx + first * C);
      }
    }
  });
}

// Each image's sums: its tasks' sums added in task order, so the result is deterministic for a thread count (and
// the same as at::sum over a batch's blocks, which adds them in order below 18 of them).
at::Tensor image_sums(const Tasks& tasks, const at::Tensor& task_sums) {
  const int64_t images = static_cast<int64_t>(tasks.images.size()), size = task_sums[0].numel();
  at::Tensor sums = at::empty({images, task_sums.size(1), task_sums.size(2)}, task_sums.options());
  const float* src = task_sums.const_data_ptr<float>();
  float* dst = sums.mutable_data_ptr<float>();
  at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* __restrict out = dst + i * size;
      std::copy(src + tasks.task_offsets[i] * size, src + (tasks.task_offsets[i] + 1) * size, out);
      for (int64_t task = tasks.task_offsets[i] + 1; task < tasks.task_offsets[i + 1]; ++task) {
        const float* __restrict add = src + task * size;
        for (int64_t j = 0; j < size; ++j) out[j] += add[j];
      }
    }
  });
  return sums;
}

std::tuple<at::Tensor, at::Tensor> backward_tasks(const Conv& g, const Tasks& tasks, const at::Tensor& grad_out,
                                                  const at::Tensor& x_in, const at::Tensor& weight,
                                                  const at::Tensor& shift, const at::Tensor& scale,
                                                  const std::optional<at::Tensor>& gate, const at::Tensor& mean,
                                                  const at::Tensor& rstd, bool norm) {
  const auto images = static_cast<int64_t>(tasks.images.size());
  check_modulation_rows(images, x_in, {&shift, &scale});
  if (gate.has_value()) check_modulation_rows(images, x_in, {&*gate});
  if (x_in.numel() == 0) {  // B = 0 or C = 0: the sums over no tokens or of no channels are empty
    return {at::empty_like(x_in, at::MemoryFormat::Contiguous),
            at::zeros({static_cast<int64_t>(tasks.images.size()), sum_rows(g.k), g.channels},
                      x_in.options().dtype(at::kFloat))};
  }
  const at::Tensor x = x_in.contiguous();
  const at::Tensor dout = grad_out.contiguous();
  // Flipping the tap order negates every tap offset: e is the forward conv of g with this kernel.
  const at::Tensor flipped_blocks = weight_blocks(taps_by_channel(weight).flip(0), g.stride());
  const at::Tensor shift_f = float_contiguous(shift);
  const at::Tensor scale1p = float_contiguous(scale) + 1;
  const at::Tensor gate_scale1p = float_padded(gate.has_value() ? scale1p * gate->to(at::kFloat) : scale1p, g.stride());
  const at::Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const BackwardInputs inputs{flipped_blocks.data_ptr<float>(), shift_f.data_ptr<float>(),
                              scale1p.data_ptr<float>(),        gate_scale1p.data_ptr<float>(),
                              norm ? mean_c.data_ptr<float>() : nullptr, norm ? rstd_c.data_ptr<float>() : nullptr};
  at::Tensor dx = at::empty_like(x);
  at::Tensor task_sums = at::empty({tasks.count(), sum_rows(g.k), g.stride()}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dwconv_modulate_bwd_cpu", [&] {
    backward_kernel<scalar_t>(g, tasks, norm, dout.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), inputs,
                              dx.data_ptr<scalar_t>(), task_sums.data_ptr<float>());
  });
  return {dx, image_sums(tasks, task_sums).narrow(-1, 0, g.channels).contiguous()};
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, int64_t h,
                                                int64_t w, const at::Tensor& weight, const at::Tensor& shift,
                                                const at::Tensor& scale, const std::optional<at::Tensor>& gate,
                                                const at::Tensor& mean, const at::Tensor& rstd, int64_t dilation,
                                                bool norm) {
  const Conv g = make_conv(x, weight, dilation);
  return backward_tasks(g, batch_tasks(g, x, h, w), grad_out, x, weight, shift, scale, gate, mean, rstd, norm);
}

std::tuple<at::Tensor, at::Tensor> packed_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                       const at::Tensor& grids, const at::Tensor& weight,
                                                       const at::Tensor& shift, const at::Tensor& scale,
                                                       const std::optional<at::Tensor>& gate, const at::Tensor& mean,
                                                       const at::Tensor& rstd, int64_t dilation, bool norm) {
  const Conv g = make_conv(x, weight, dilation);
  return backward_tasks(g, packed_tasks(g, x, grids), grad_out, x, weight, shift, scale, gate, mean, rstd, norm);
}

}  // namespace
}  // namespace cpu
}  // namespace dwconv_modulate
}  // namespace ledit

TORCH_LIBRARY_IMPL(ledit, CPU, m) {
  m.impl("dwconv_modulate_fwd", &ledit::dwconv_modulate::cpu::forward_cpu);
  m.impl("dwconv_modulate_bwd", &ledit::dwconv_modulate::cpu::backward_cpu);
  m.impl("dwconv_modulate_packed_fwd", &ledit::dwconv_modulate::cpu::packed_forward_cpu);
  m.impl("dwconv_modulate_packed_bwd", &ledit::dwconv_modulate::cpu::packed_backward_cpu);
}
