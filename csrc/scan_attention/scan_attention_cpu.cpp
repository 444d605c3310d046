// CPU kernel of scan_attention: tiled online-softmax attention under a 2D scan mask, forward and backward.
//
// Operands are packed into fp32 tiles in the order of scan_tiles.h (each 2D tile of the grid becomes kTile
// contiguous rows, zero-padded), so every tile product is a fixed-size, vectorisable loop. The packing reads the
// (B, N, H, D) inputs in place (any dtype, any strides with a unit last stride) and goes to per-thread buffers
// kept between calls: freshly allocated packing tensors cost a page fault per 4 KB on first touch, which at
// LEDiT's 16 x 16 grids took as long as the attention itself (docs/kernels-attention.md).
// A call is a list of images, each with its own grid, tile grid and place in the tensors: a batch is B images of
// one grid (image b in batch row b), a packed sequence n images back to back in batch row 0 (common/packed_images.h);
// attention never crosses images. Forward: one task per (image, head, query tile); the thread packs its image's
// head of K and V once and reuses them for every query tile of that head it runs. Fully masked key tiles are
// skipped, fully visible ones run without mask tests. Backward: one task per (image, head), which owns its dq, so
// dq, dk and dv come out of a single pass (5 tile products per visible tile pair) with no atomics. Scores are kept
// in base 2 (q is scaled by softmax_scale * log2(e)); the saved lse is in natural-log units.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/packed_grids.h"
#include "common/packed_images.h"
#include "scan_attention/cpu_tile_math.h"
#include "scan_attention/scan_attention.h"
#include "scan_attention/scan_tiles.h"

namespace ledit {
namespace scan_attention {
namespace cpu {
namespace {

// Shapes of one image of a call, shared by the packing helpers and the kernels: the call's head count, head dim and
// scan, and the image's tile grid.
struct Problem {
  int64_t heads, dim;
  TileGrid grid;
  Scan scan;
  int64_t padded_tokens() const { return int64_t{grid.num_tiles()} * kTile; }
  // Packed rows are padded to an odd number of 64-byte cache lines: every row starts on a line, and rows (of one
  // array or of the head's several arrays) do not all map to the same few L1 sets, as 256- or 512-byte rows
  // (D = 64, 128) would.
  int64_t row_stride() const { return ((dim + 15) / 16 | 1) * 16; }
  int64_t head_floats() const { return padded_tokens() * row_stride(); }
};

// Where an image's tokens are in the call's (B, N, H, D) tensors and (B, H, N) lse: batch row and first token.
struct ImageSpan {
  int64_t batch, token0;
};

// The images of one call, and the first query tile of each (tile_offsets, as common/packed_images.h's
// unit_offsets): a task finds its image with segment_of.
struct Images {
  int64_t tokens;  // N of the call's tensors
  std::vector<Problem> problems;
  std::vector<ImageSpan> spans;
  std::vector<int32_t> tile_offsets;
  int count() const { return static_cast<int>(spans.size()); }
  int64_t tiles() const { return tile_offsets.back(); }
  int tiles_of(int image) const { return tile_offsets[image + 1] - tile_offsets[image]; }
  // The largest per-thread buffer any image needs, given the floats an image of a problem needs.
  template <typename Floats>
  size_t max_floats(Floats floats) const {
    size_t most = 0;
    for (const Problem& p : problems) most = std::max(most, floats(p));
    return most;
  }
};

Images make_images(int64_t tokens, int64_t heads, int64_t dim, Scan scan, const std::vector<ImageGrid>& grids,
                   const std::vector<ImageSpan>& spans) {
  Images images{tokens, {}, spans, {0}};
  for (const ImageGrid& g : grids) {
    images.problems.push_back({heads, dim, make_tile_grid(static_cast<int>(g.h), static_cast<int>(g.w), kTile), scan});
    images.tile_offsets.push_back(images.tile_offsets.back() + images.problems.back().grid.num_tiles());
  }
  return images;
}

// A batch: image b is batch row b, all of one grid.
Images batch_images(const at::Tensor& q, int64_t dim, int64_t h, int64_t w, Scan scan) {
  std::vector<ImageSpan> spans;
  for (int64_t b = 0; b < q.size(0); ++b) spans.push_back({b, 0});
  return make_images(q.size(1), q.size(2), dim, scan, std::vector<ImageGrid>(q.size(0), {h, w, 0}), spans);
}

// A packed sequence: the images of grids, back to back in batch row 0.
Images packed_images(const at::Tensor& q, int64_t dim, const at::Tensor& grids, Scan scan) {
  TORCH_CHECK(q.size(0) == 1, "scan_attention: a packed sequence is (1, total_tokens, H, D), got ", q.sizes());
  const std::vector<ImageGrid> grid_list = read_packed_grids(grids, q.size(1), "scan_attention");
  std::vector<ImageSpan> spans;
  for (const ImageGrid& g : grid_list) spans.push_back({0, g.token0});
  return make_images(q.size(1), q.size(2), dim, scan, grid_list, spans);
}

// Per-thread scratch kept between calls, so packing touches warm pages instead of fresh ones. A buffer above
// kRetainedBytes (a 64 x 64 grid's backward) is released when the thread's tasks of the call are done: at
// those sizes the O(N^2) work dwarfs the page faults, and an idle process should not hold it.
class Workspace {
 public:
  static constexpr size_t kRetainedBytes = size_t{8} << 20;

  using Key = std::pair<int64_t, int64_t>;  // (call id, batch * heads index): what the buffer was packed with

  // A buffer of at least `count` floats, 64-byte aligned, to be filled for `key`. Returns whether it already
  // holds `key`'s packed operands from this thread's previous task (then they need not be packed again).
  bool acquire(size_t count, Key key, float** data) {
    const bool grow = lines_.size() * kLineFloats < count;
    if (grow) lines_ = std::vector<Line>((count + kLineFloats - 1) / kLineFloats);
    const bool held = !grow && packed_ == key;
    packed_ = key;
    *data = lines_.front().f;
    return held;
  }
  void release_if_large() {
    if (lines_.size() * sizeof(Line) > kRetainedBytes) {
      lines_ = std::vector<Line>();
      packed_ = kNothing;
    }
  }

 private:
  static constexpr size_t kLineFloats = 16;
  struct alignas(64) Line {
    float f[kLineFloats];
  };
  std::vector<Line> lines_;
  static constexpr Key kNothing{-1, -1};
  Key packed_ = kNothing;
};

Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

// Distinguishes calls, so a thread's packed K/V of one call is never mistaken for another call's.
int64_t next_call_id() {
  static std::atomic<int64_t> calls{0};
  return calls.fetch_add(1);
}

// Runs fn(task, workspace) for every task in [0, count) on at::parallel_for's threads, handing tasks out one at a
// time in order: tiles near a causal mask's corner have less work than others, and on a shared machine one thread
// may be descheduled, so a static split would wait on the slowest thread.
template <typename Fn>
void parallel_tasks(int64_t count, const Fn& fn) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(count, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    Workspace& workspace = thread_workspace();
    for (int64_t task = next.fetch_add(1); task < count; task = next.fetch_add(1)) fn(task, workspace);
    workspace.release_if_large();
  });
}

// One (batch, head) of a (B, N, H, D) tensor read in place: row(n) is token n's D values (unit stride).
template <typename T>
struct HeadRows {
  const T* base;
  int64_t token_stride;
  int64_t dim;
  const T* row(int64_t token) const { return base + token * token_stride; }
  // Consecutive tokens are H * D values apart, each row on its own page, so the hardware prefetcher does not see
  // them coming and every row would stall on a cache miss: the packing loops request rows ahead of their use.
  void prefetch(const T* row_start) const {
    const char* bytes = reinterpret_cast<const char*>(row_start);
    for (int64_t offset = 0; offset < dim * int64_t{sizeof(T)}; offset += 64) __builtin_prefetch(bytes + offset);
  }
};

// One head of one image of a (B, N, H, D) tensor, read in place.
template <typename T>
HeadRows<T> head_rows(const at::Tensor& x, const ImageSpan& image, int64_t head) {
  return {x.const_data_ptr<T>() + image.batch * x.stride(0) + image.token0 * x.stride(1) + head * x.stride(2),
          x.stride(1), x.size(3)};
}

// The same, written: token n of the image's head is at head_out(...) + n * x.stride(1).
template <typename T>
T* head_out(at::Tensor& x, const ImageSpan& image, int64_t head) {
  return x.mutable_data_ptr<T>() + image.batch * x.stride(0) + image.token0 * x.stride(1) + head * x.stride(2);
}

// The (B, H, N) lse of one head of one image.
template <typename L>
L* head_lse(L* lse, const Images& images, const ImageSpan& image, int64_t head, int64_t heads) {
  return lse + (image.batch * heads + head) * images.tokens + image.token0;
}

// A (B, N, H, D) tensor with a unit last stride (the kernels read and write whole rows).
at::Tensor unit_last_stride(const at::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); }

// Rows requested ahead of the one being copied: enough misses in flight to hide their latency, few enough for
// the core's miss buffers.
constexpr int kPrefetchRows = 8;

int round_up4(int x) { return (x + 3) & ~3; }
int round_up16(int x) { return (x + 15) & ~15; }

// One tile of rows, times `scale`, into dst (kTile x row_stride; padding rows and columns zero).
template <typename T>
void pack_tile(const HeadRows<T>& src, const Problem& p, int tile, float scale, float* dst) {
  const TileRect rect = p.grid.rect(tile);
  const int ld = static_cast<int>(p.row_stride()), dim = static_cast<int>(p.dim), rows = rect.size();
  const T* row[kTile];
  for (int i = 0; i < rows; ++i) row[i] = src.row(p.grid.token(rect, i));
  for (int i = 0; i < std::min(rows, kPrefetchRows); ++i) src.prefetch(row[i]);
  for (int i = 0; i < rows; ++i) {
    if (i + kPrefetchRows < rows) src.prefetch(row[i + kPrefetchRows]);
    const T* __restrict in = row[i];
    float* __restrict out = dst + i * ld;
    for (int d = 0; d < dim; ++d) out[d] = static_cast<float>(in[d]) * scale;
    std::fill(out + dim, out + ld, 0.f);
  }
  std::fill(dst + rows * ld, dst + kTile * ld, 0.f);
}

// A packed tile (kTile x ld) transposed into dst (ld x kTile), so score rows are vector loops over keys. Going
// through the row-major tile keeps the gather in L1: gathering straight from the input would touch 64 rows at once,
// and with H * D a power of two (D = 64, 128 at H = 16) every row sits at the same page offset, in the same few
// L1 sets. Only the first `rows` rows and `dims` columns (multiples of 16) are transposed.
LEDIT_CPU_INLINE void transpose_tile(const float* src, int ld, int rows, int dims, float* dst) {
  for (int i = 0; i < rows; i += 16)
    for (int d = 0; d < dims; d += 16) transpose16x16(src + i * ld + d, ld, dst + d * kTile + i, kTile);
}

// Every tile of one head, packed into dst (padded_tokens x row_stride).
template <typename T>
void pack_head(const HeadRows<T>& src, const Problem& p, float scale, float* dst) {
  for (int tile = 0; tile < p.grid.num_tiles(); ++tile)
    pack_tile(src, p, tile, scale, dst + int64_t{tile} * kTile * p.row_stride());
}

// Every tile of a packed head (padded_tokens x row_stride) transposed into dst, as far as the products read it: the
// first D rows (rounded up to 16; the rest are padding columns), and in each tile the columns of its key_columns
// (its tokens rounded up to 16, zero past the tokens). An odd grid's edge tiles are mostly padding (an 8 x 33 grid
// ends in an 8 x 1 tile), and at D = 64 the row stride's padding is a fifth of a row.
LEDIT_CPU_MULTIVERSION
void transpose_head(const float* packed, const Problem& p, float* dst) {
  const int64_t tile_floats = kTile * p.row_stride();
  const int dims = round_up16(static_cast<int>(p.dim));
  for (int tile = 0; tile < p.grid.num_tiles(); ++tile)
    transpose_tile(packed + tile * tile_floats, static_cast<int>(p.row_stride()), round_up16(p.grid.rect(tile).size()),
                   dims, dst + tile * tile_floats);
}

// Inverse of pack_tile: row i of the tile (times row_scale[i] * scale) to its token's row of one head of out.
template <typename T>
void unpack_tile(const float* src, const Problem& p, int tile, const float* row_scale, float scale, T* out_head,
                 int64_t token_stride) {
  const TileRect rect = p.grid.rect(tile);
  const int64_t ld = p.row_stride();
  for (int i = 0; i < rect.size(); ++i) {
    const float* __restrict in = src + i * ld;
    T* __restrict out = out_head + p.grid.token(rect, i) * token_stride;
    const float s = (row_scale ? row_scale[i] : 1.f) * scale;
    for (int64_t d = 0; d < p.dim; ++d) out[d] = static_cast<T>(in[d] * s);
  }
}

// Grid coordinates of the tokens of one tile, so mask tests need no divisions.
struct TileCoords {
  TileRect rect;
  int row[kTile], col[kTile];
  TileCoords(const TileGrid& grid, int tile) : rect(grid.rect(tile)) {
    for (int i = 0; i < rect.size(); ++i) {
      row[i] = rect.row0 + i / rect.cols;
      col[i] = rect.col0 + i % rect.cols;
    }
  }
};

// The score columns computed for a key tile: its tokens rounded up to a multiple of 8 (the products' narrowest
// block), not all kTile. An odd grid's edge tiles are partly padding (an 8 x 33 grid ends in an 8 x 1 tile):
// computing their padding columns cost the mixed pack of the packed-ops benchmark 22% more tile work than an
// equal-token batch of 16 x 16 images, 4% this way (16 columns: 5%). Columns past the tile's tokens up to this
// width are masked, and those past it are never read, so every result is the same as over all kTile columns.
int key_columns(const TileRect& k) { return (k.size() + 7) & ~7; }

// Calls body(columns, rows) with a key tile's key_columns and its tokens rounded up to 4 (the key rows of dK and
// dV): for a full tile both are a compile-time kTile, so a dense grid's tiles (all full where the sides are
// multiples of 8) run the fixed-size loops they ran before key_columns (runtime widths there cost the 64 x 64
// forward ~15%).
template <typename Body>
LEDIT_CPU_INLINE void with_key_extent(const TileRect& k, Body body) {
  using Full = std::integral_constant<int, kTile>;
  if (k.size() == kTile) {
    body(Full{}, Full{});
  } else {
    body(key_columns(k), round_up4(k.size()));
  }
}

// S = -inf where the scan masks the pair. The scan is a template argument so the predicate folds into a
// branch-free loop over the key coordinates that the compiler vectorises.
template <Scan kScan>
LEDIT_CPU_INLINE void mask_partial(float* S, int rows, const TileCoords& q, const TileCoords& k, int w) {
  const int keys = k.rect.size();
  for (int i = 0; i < rows; ++i) {
    float* s = S + i * kTile;
    const int qr = q.row[i], qc = q.col[i];
    for (int j = 0; j < keys; ++j) s[j] = scan_visible(kScan, qr, qc, k.row[j], k.col[j], w) ? s[j] : kNegInf;
  }
}

// Sets S to -inf where the key is masked (partial tile pairs only), or (for any pair) beyond the key tile's tokens
// up to its key_columns. Token coordinates are built only for partial pairs: the other pairs need none.
LEDIT_CPU_INLINE void mask_scores(float* S, int rows, const Problem& p, int q_tile, int k_tile,
                                  TileVisibility visibility) {
  const TileRect k_rect = p.grid.rect(k_tile);
  if (visibility == TileVisibility::kPartial) {
    const TileCoords q(p.grid, q_tile), k(p.grid, k_tile);
    const int real_rows = std::min(rows, q.rect.size()), w = p.grid.w;
    switch (p.scan) {
      case Scan::kFull:
        break;
      case Scan::kRaster:
        mask_partial<Scan::kRaster>(S, real_rows, q, k, w);
        break;
      case Scan::kLowerRight:
        mask_partial<Scan::kLowerRight>(S, real_rows, q, k, w);
        break;
      case Scan::kNeighborhood:
        mask_partial<Scan::kNeighborhood>(S, real_rows, q, k, w);
        break;
      case Scan::kCorner:
        mask_partial<Scan::kCorner>(S, real_rows, q, k, w);
        break;
    }
  }
  const int columns = key_columns(k_rect);
  for (int i = 0; i < rows; ++i)
    for (int j = k_rect.size(); j < columns; ++j) S[i * kTile + j] = kNegInf;
}

// An 8-float vector as the low half of a 16-float one, the high half `high` (the last 8 of a row of 16s).
LEDIT_CPU_INLINE Vec16 widen(Vec8 low, Vec8 high) {
  return __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// The max of a score row's first `columns` (a multiple of 8) values.
template <typename V>
LEDIT_CPU_INLINE float row_max_in(const float* s, int columns) {
  constexpr int kWidth = sizeof(V) / sizeof(float);
  V m = V{} + kNegInf;
  int j = 0;
  for (; j + kWidth <= columns; j += kWidth) m = vmax(m, load<V>(s + j));
  if constexpr (kWidth == 16) {
    if (j < columns) m = vmax(m, widen(load<Vec8>(s + j), Vec8{} + kNegInf));
  }
  return reduce_max(m);
}

// In registers' width, as exp2_row: on AVX2, GCC lowered the 16-float max of a loop of run-time length (an edge
// key tile's key_columns) to scalar code through the stack, 5% of the packed-ops benchmark's tile loop.
LEDIT_CPU_INLINE float row_max(const float* s, int columns) {
  return wide_vector_registers() ? row_max_in<Vec16>(s, columns) : row_max_in<Vec8>(s, columns);
}

// p = 2^((s - shift) - shift_low) over the first `columns` (a multiple of 8) values of a score row (in place is
// fine); returns their sum. shift_low carries the bits of a large shift (the backward's lse) that float32 cannot
// hold next to it.
template <typename V>
LEDIT_CPU_INLINE float exp2_row_in(const float* s, int columns, float shift, float* p, float shift_low) {
  constexpr int kWidth = sizeof(V) / sizeof(float);
  V sum{};
  int j = 0;
  for (; j + kWidth <= columns; j += kWidth) {
    const V e = exp2_approx((load<V>(s + j) - shift) - shift_low);
    store<V>(p + j, e);
    sum += e;
  }
  if constexpr (kWidth == 16) {  // a last 8 columns, summed in the lanes a whole vector would use
    if (j < columns) {
      const Vec8 e = exp2_approx((load<Vec8>(s + j) - shift) - shift_low);
      store<Vec8>(p + j, e);
      sum += widen(e, Vec8{});
    }
  }
  Vec16 total{};  // one reduction order for both widths' partial sums
  std::memcpy(&total, &sum, sizeof(sum));
  return reduce_sum(total);
}

// In registers' width: 16-float vectors on AVX-512; 8-float ones elsewhere, where the polynomial's 16-float
// temporaries did not fit AVX2's 16 registers and spilled (40% of the forward's time).
LEDIT_CPU_INLINE float exp2_row(const float* s, int columns, float shift, float* p, float shift_low = 0.f) {
  return wide_vector_registers() ? exp2_row_in<Vec16>(s, columns, shift, p, shift_low)
                                 : exp2_row_in<Vec8>(s, columns, shift, p, shift_low);
}

// Forward for one (batch, head, query tile): O (kTile x row_stride, unnormalised) and per-row max m and sum l,
// in base 2. Q is the packed query tile, Kt and V the packed head, S a kTile x kTile score buffer.
LEDIT_CPU_MULTIVERSION
void forward_query_tile(const Problem& p, int q_tile, const float* Q, const float* Kt, const float* V, float* O,
                        float* row_m, float* row_l, float* S) {
  const int ld = static_cast<int>(p.row_stride());
  const int dim = static_cast<int>(p.dim);
  const TileRect q_rect = p.grid.rect(q_tile);
  const int M = round_up4(q_rect.size());
  std::fill(row_m, row_m + kTile, kNegInf);
  std::fill(row_l, row_l + kTile, 0.f);
  std::fill(O, O + kTile * ld, 0.f);
  for (int k_tile = 0; k_tile < p.grid.num_tiles(); ++k_tile) {
    const TileRect k_rect = p.grid.rect(k_tile);
    const TileVisibility visibility = classify_tiles(p.scan, q_rect, k_rect, p.grid.w);
    if (visibility == TileVisibility::kMasked) continue;
    with_key_extent(k_rect, [&](auto N, auto) LEDIT_LAMBDA_INLINE {
      gemm(M, N, dim, Q, ld, Kt + int64_t{k_tile} * ld * kTile, kTile, S, kTile, false);
      mask_scores(S, M, p, q_tile, k_tile, visibility);
      for (int i = 0; i < M; ++i) {
        float* s = S + i * kTile;
        const float m_new = std::max(row_m[i], row_max(s, N));
        if (m_new == kNegInf) {  // no visible key for this row yet (or a padding row): contributes nothing
          std::fill(s, s + N, 0.f);
          continue;
        }
        if (m_new != row_m[i]) {  // rescale what the row holds so far (nothing yet while row_m = -inf)
          const float alpha = exp2_approx(row_m[i] - m_new);
          row_l[i] *= alpha;
          float* o = O + i * ld;
          for (int d = 0; d < dim; ++d) o[d] *= alpha;
          row_m[i] = m_new;
        }
        row_l[i] += exp2_row(s, N, m_new, s);
      }
      gemm(M, dim, N, S, kTile, V + int64_t{k_tile} * kTile * ld, ld, O, ld, true);
    });
  }
}

// Backward for one (batch, head): accumulates dQ (all query tiles), dK and dV (all key tiles), packed.
// Q is scaled by softmax_scale*log2(e); lse2 + lse2_low is lse*log2(e) split into two floats (+inf on padding
// rows), so converting lse to base 2 loses nothing; delta = rowsum(dO * O). P and dP are kTile x kTile scratch.
LEDIT_CPU_MULTIVERSION
void backward_head(const Problem& p, const float* Q, const float* K, const float* Kt, const float* Vt,
                   const float* dO, const float* lse2, const float* lse2_low, const float* delta, float* dQ,
                   float* dK, float* dV, float* P, float* dP) {
  const int ld = static_cast<int>(p.row_stride());
  const int dim = static_cast<int>(p.dim);
  for (int k_tile = 0; k_tile < p.grid.num_tiles(); ++k_tile) {
    const TileRect k_rect = p.grid.rect(k_tile);
    const int64_t k_off = int64_t{k_tile} * kTile * ld;
    float* dk = dK + k_off;
    float* dv = dV + k_off;
    // Score columns, and the key rows of dK and dV, up to the tile's tokens (key_columns); P is 0 past them.
    with_key_extent(k_rect, [&](auto N, auto key_rows) LEDIT_LAMBDA_INLINE {
      for (int q_tile = 0; q_tile < p.grid.num_tiles(); ++q_tile) {
        const TileRect q_rect = p.grid.rect(q_tile);
        const TileVisibility visibility = classify_tiles(p.scan, q_rect, k_rect, p.grid.w);
        if (visibility == TileVisibility::kMasked) continue;
        const int M = round_up4(q_rect.size());
        const int64_t q_row = int64_t{q_tile} * kTile, q_off = q_row * ld;
        gemm(M, N, dim, Q + q_off, ld, Kt + k_off, kTile, P, kTile, false);
        mask_scores(P, M, p, q_tile, k_tile, visibility);
        for (int i = 0; i < M; ++i) exp2_row(P + i * kTile, N, lse2[q_row + i], P + i * kTile, lse2_low[q_row + i]);
        gemm<true>(key_rows, dim, M, P, kTile, dO + q_off, ld, dv, ld, true);  // dV += P^T dO
        gemm(M, N, dim, dO + q_off, ld, Vt + k_off, kTile, dP, kTile, false);  // dP = dO V^T
        for (int i = 0; i < M; ++i) {  // dS = P * (dP - delta)
          const float delta_i = delta[q_row + i];
          int j = 0;
          for (; j + 16 <= N; j += 16) {
            float* ds = P + i * kTile + j;
            store<Vec16>(ds, load<Vec16>(ds) * (load<Vec16>(dP + i * kTile + j) - delta_i));
          }
          if (j < N) {  // a last 8 columns
            float* ds = P + i * kTile + j;
            store<Vec8>(ds, load<Vec8>(ds) * (load<Vec8>(dP + i * kTile + j) - delta_i));
          }
        }
        gemm(M, dim, N, P, kTile, K + k_off, ld, dQ + q_off, ld, true);     // dQ += dS K
        gemm<true>(key_rows, dim, M, P, kTile, Q + q_off, ld, dk, ld, true);  // dK += dS^T Q
      }
    });
  }
}

template <typename T>
void forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Images& images, float softmax_scale,
             at::Tensor& out, at::Tensor& lse) {
  const int64_t heads = q.size(2);
  const int64_t call = next_call_id();
  // Per thread: Kt, V (the image's head), then Q, O (one tile), S (scores), row max and row sum.
  const size_t floats = images.max_floats([](const Problem& p) {
    return static_cast<size_t>(2 * p.head_floats() + 2 * kTile * p.row_stride() + kTile * kTile + 2 * kTile);
  });
  // Tasks run image by image, then head by head, then query tile by query tile (a batch: (batch, head, tile)).
  parallel_tasks(heads * images.tiles(), [&](int64_t task, Workspace& workspace) {
    const int image = segment_of(images.tile_offsets.data(), images.count(), task / heads);
    const Problem& p = images.problems[image];
    const ImageSpan& span = images.spans[image];
    const int64_t local = task - heads * images.tile_offsets[image];
    const int64_t head = local / images.tiles_of(image);
    const int q_tile = static_cast<int>(local % images.tiles_of(image));
    const int64_t ld = p.row_stride(), head_size = p.head_floats();
    float* Kt;
    if (!workspace.acquire(floats, {call, image * heads + head}, &Kt)) {
      pack_head(head_rows<T>(k, span, head), p, 1.f, Kt + head_size);  // V's place holds K until transposed
      transpose_head(Kt + head_size, p, Kt);
      pack_head(head_rows<T>(v, span, head), p, 1.f, Kt + head_size);
    }
    float* V = Kt + head_size;
    float* Q = V + head_size;
    float* O = Q + kTile * ld;
    float* S = O + kTile * ld;
    float* row_m = S + kTile * kTile;
    float* row_l = row_m + kTile;
    pack_tile(head_rows<T>(q, span, head), p, q_tile, softmax_scale * kLog2e, Q);
    forward_query_tile(p, q_tile, Q, Kt, V, O, row_m, row_l, S);
    const TileRect rect = p.grid.rect(q_tile);
    float* lse_head = head_lse(lse.mutable_data_ptr<float>(), images, span, head, heads);
    for (int i = 0; i < rect.size(); ++i) {
      lse_head[p.grid.token(rect, i)] =
          static_cast<float>((double{row_m[i]} + std::log2(double{row_l[i]})) * double{kLn2});
      row_l[i] = 1.f / row_l[i];
    }
    unpack_tile(O, p, q_tile, row_l, 1.f, head_out<T>(out, span, head), out.stride(1));
  });
}

// The backward's per-row inputs in tile order: lse * log2(e) split into a float and its remainder (+inf on padding
// rows, so their probabilities are 0), and delta = rowsum(dO * O) from the packed dO and the forward's output.
template <typename T>
void row_stats(const HeadRows<T>& out, const float* lse_head, const float* dO, const Problem& p, float* lse2,
               float* lse2_low, float* delta) {
  const int64_t ld = p.row_stride();
  for (int tile = 0; tile < p.grid.num_tiles(); ++tile) {
    const TileRect rect = p.grid.rect(tile);
    const T* out_row[kTile];
    for (int i = 0; i < rect.size(); ++i) out.prefetch(out_row[i] = out.row(p.grid.token(rect, i)));
    for (int i = 0; i < kTile; ++i) {
      const int64_t row = int64_t{tile} * kTile + i;
      if (i >= rect.size()) {
        lse2[row] = std::numeric_limits<float>::infinity();
        lse2_low[row] = delta[row] = 0.f;
        continue;
      }
      const double exact = double{lse_head[p.grid.token(rect, i)]} / double{kLn2};
      lse2[row] = static_cast<float>(exact);
      lse2_low[row] = static_cast<float>(exact - double{lse2[row]});
      const float* g = dO + row * ld;
      float sum = 0.f;
      for (int64_t d = 0; d < p.dim; ++d) sum += g[d] * static_cast<float>(out_row[i][d]);
      delta[row] = sum;
    }
  }
}

template <typename T>
void backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& out, const at::Tensor& lse, const Images& images, float softmax_scale,
              std::array<at::Tensor, 3>& grads) {
  const int64_t heads = q.size(2);
  const int64_t call = next_call_id();
  // Per thread: Q, K, Kt, Vt, dO, dQ, dK, dV (the image's head), lse2, lse2_low, delta (per row), P, dP (scratch).
  const size_t floats = images.max_floats([](const Problem& p) {
    return static_cast<size_t>(8 * p.head_floats() + 3 * p.padded_tokens() + 2 * kTile * kTile);
  });
  // One task per (image, head): a batch's (batch, head).
  parallel_tasks(images.count() * heads, [&](int64_t task, Workspace& workspace) {
    const int image = static_cast<int>(task / heads);
    const int64_t head = task % heads;
    const Problem& p = images.problems[image];
    const ImageSpan& span = images.spans[image];
    const int64_t head_size = p.head_floats(), padded = p.padded_tokens();
    float* Q;
    workspace.acquire(floats, {call, task}, &Q);
    float *K = Q + head_size, *Kt = K + head_size, *Vt = Kt + head_size, *dO = Vt + head_size;
    float *dQ = dO + head_size, *dK = dQ + head_size, *dV = dK + head_size;
    float *lse2 = dV + head_size, *lse2_low = lse2 + padded, *delta = lse2_low + padded, *P = delta + padded;
    pack_head(head_rows<T>(q, span, head), p, softmax_scale * kLog2e, Q);
    pack_head(head_rows<T>(k, span, head), p, 1.f, K);
    transpose_head(K, p, Kt);
    pack_head(head_rows<T>(v, span, head), p, 1.f, dV);  // dV's place holds V until transposed (zeroed below)
    transpose_head(dV, p, Vt);
    pack_head(head_rows<T>(dout, span, head), p, 1.f, dO);
    std::fill(dQ, dQ + 3 * head_size, 0.f);
    row_stats(head_rows<T>(out, span, head), head_lse(lse.const_data_ptr<float>(), images, span, head, heads), dO, p,
              lse2, lse2_low, delta);
    backward_head(p, Q, K, Kt, Vt, dO, lse2, lse2_low, delta, dQ, dK, dV, P, P + kTile * kTile);
    const float scales[3] = {softmax_scale, kLn2, 1.f};  // dQ: Q was scaled; dK: scores were in base 2
    const float* packed[3] = {dQ, dK, dV};
    for (int g = 0; g < 3; ++g) {
      for (int tile = 0; tile < p.grid.num_tiles(); ++tile)
        unpack_tile(packed[g] + int64_t{tile} * kTile * p.row_stride(), p, tile, nullptr, scales[g],
                    head_out<T>(grads[g], span, head), grads[g].stride(1));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> forward_images(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  const Images& images, double softmax_scale) {
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "scan_attention_fwd_cpu", [&] {
    forward<scalar_t>(unit_last_stride(q), unit_last_stride(k), unit_last_stride(v), images,
                      static_cast<float>(softmax_scale), out, lse);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_images(const at::Tensor& dout, const at::Tensor& q,
                                                               const at::Tensor& k, const at::Tensor& v,
                                                               const at::Tensor& out, const at::Tensor& lse,
                                                               const Images& images, double softmax_scale) {
  TORCH_CHECK(dout.sizes() == q.sizes() && out.sizes() == q.sizes(), "scan_attention_bwd: dout/out shape mismatch");
  TORCH_CHECK(dout.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
              "scan_attention_bwd: dout/out dtype differs from q's");
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({q.size(0), q.size(2), q.size(1)}),
              "scan_attention_bwd: lse must be (B, H, N), got ", lse.sizes());
  std::array<at::Tensor, 3> grads{at::empty(q.sizes(), q.options()), at::empty(q.sizes(), q.options()),
                                  at::empty(q.sizes(), q.options())};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "scan_attention_bwd_cpu", [&] {
    backward<scalar_t>(unit_last_stride(dout), unit_last_stride(q), unit_last_stride(k), unit_last_stride(v),
                       unit_last_stride(out), lse.to(at::kFloat).contiguous(), images,
                       static_cast<float>(softmax_scale), grads);
  });
  return {grads[0], grads[1], grads[2]};
}

std::tuple<at::Tensor, at::Tensor> scan_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v, int64_t h, int64_t w,
                                                          c10::string_view scan, double softmax_scale) {
  const int64_t dim = check_qkv(q, k, v, h, w);
  return forward_images(q, k, v, batch_images(q, dim, h, w, parse_scan(scan)), softmax_scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_attention_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t h, int64_t w, c10::string_view scan, double softmax_scale) {
  const int64_t dim = check_qkv(q, k, v, h, w);
  return backward_images(dout, q, k, v, out, lse, batch_images(q, dim, h, w, parse_scan(scan)), softmax_scale);
}

std::tuple<at::Tensor, at::Tensor> scan_attention_packed_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v, const at::Tensor& grids,
                                                                 c10::string_view scan, double softmax_scale) {
  const int64_t dim = check_qkv_tensors(q, k, v);
  return forward_images(q, k, v, packed_images(q, dim, grids, parse_scan(scan)), softmax_scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_attention_packed_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& grids, c10::string_view scan, double softmax_scale) {
  const int64_t dim = check_qkv_tensors(q, k, v);
  return backward_images(dout, q, k, v, out, lse, packed_images(q, dim, grids, parse_scan(scan)), softmax_scale);
}

}  // namespace
}  // namespace cpu
}  // namespace scan_attention
}  // namespace ledit

TORCH_LIBRARY_IMPL(ledit, CPU, m) {
  m.impl("scan_attention_fwd", &ledit::scan_attention::cpu::scan_attention_fwd_cpu);
  m.impl("scan_attention_bwd", &ledit::scan_attention::cpu::scan_attention_bwd_cpu);
  m.impl("scan_attention_packed_fwd", &ledit::scan_attention::cpu::scan_attention_packed_fwd_cpu);
  m.impl("scan_attention_packed_bwd", &ledit::scan_attention::cpu::scan_attention_packed_bwd_cpu);
}
