// CPU kernel of scan_attention: tiled online-softmax attention under a 2D scan mask, forward and backward.
//
// q, k, v are first packed per (batch, head) into fp32 tiles in the order of scan_tiles.h (each 2D tile of the
// grid becomes kTile contiguous rows, zero-padded), so every tile product is a fixed-size, vectorisable loop.
// Forward: one task per (batch, head, query tile); fully masked key tiles are skipped, fully visible ones run
// without mask tests. Backward: one task per (batch, head), which owns its dq, so dq, dk and dv come out of a
// single pass (5 tile products per visible tile pair) with no atomics. Scores are kept in base 2 (q is scaled by
// softmax_scale * log2(e)); the saved lse is in natural-log units.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <tuple>
#include <cmath>
#include <vector>

#include "scan_attention/cpu_tile_math.h"
#include "scan_attention/scan_attention.h"
#include "scan_attention/scan_tiles.h"

namespace ledit {
namespace cpu {
namespace {


// Shapes of one call, shared by the packing helpers and the kernels.
struct Problem {
  int64_t batch, tokens, heads, dim;
  TileGrid grid;
  Scan scan;
  int64_t bh() const { return batch * heads; }
  int64_t padded_tokens() const { return int64_t{grid.num_tiles()} * kTile; }
  // Packed rows are padded to a multiple of 16 floats so every product over D runs in full 16-wide vectors.
  int64_t row_stride() const { return (dim + 15) / 16 * 16; }
};

// (B, N, H, D) -> (B*H, tiles*kTile, row_stride) fp32 in tile order, times `scale`; padding is zero.
at::Tensor pack_rows(const at::Tensor& x, const Problem& p, float scale) {
  const at::Tensor src = x.to(at::kFloat).transpose(1, 2).contiguous();  // (B, H, N, D)
  at::Tensor packed = at::zeros({p.bh(), p.padded_tokens(), p.row_stride()}, src.options());
  const float* in = src.const_data_ptr<float>();
  float* out = packed.mutable_data_ptr<float>();
  const int tiles = p.grid.num_tiles();
  at::parallel_for(0, p.bh() * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / tiles;
      const int tile = static_cast<int>(task % tiles);
      const TileRect rect = p.grid.rect(tile);
      for (int i = 0; i < rect.size(); ++i) {
        const float* row = in + (bh * p.tokens + p.grid.token(rect, i)) * p.dim;
        float* dst = out + (bh * p.padded_tokens() + int64_t{tile} * kTile + i) * p.row_stride();
        for (int64_t d = 0; d < p.dim; ++d) dst[d] = row[d] * scale;
      }
    }
  });
  return packed;
}

// Packed rows -> (B*H, tiles, row_stride, kTile): each tile transposed, so score rows are vector loops over keys.
at::Tensor transpose_tiles(const at::Tensor& rows, const Problem& p) {
  return rows.view({p.bh(), p.grid.num_tiles(), kTile, p.row_stride()}).transpose(2, 3).contiguous();
}

// (B, H, N) per-query values -> (B*H, tiles*kTile) in tile order; padding entries get `pad`.
at::Tensor pack_queries(const at::Tensor& x, const Problem& p, float pad) {
  const at::Tensor src = x.to(at::kFloat).contiguous();
  at::Tensor packed = at::empty({p.bh(), p.padded_tokens()}, src.options()).fill_(pad);
  const float* in = src.const_data_ptr<float>();
  float* out = packed.mutable_data_ptr<float>();
  for (int tile = 0; tile < p.grid.num_tiles(); ++tile) {
    const TileRect rect = p.grid.rect(tile);
    for (int64_t bh = 0; bh < p.bh(); ++bh)
      for (int i = 0; i < rect.size(); ++i)
        out[bh * p.padded_tokens() + int64_t{tile} * kTile + i] = in[bh * p.tokens + p.grid.token(rect, i)];
  }
  return packed;
}

// Inverse of pack_rows: (B*H, tiles*kTile, row_stride) fp32 -> (B, N, H, D) in `dtype`, times `scale`.
at::Tensor unpack_rows(const at::Tensor& packed, const Problem& p, float scale, at::ScalarType dtype) {
  at::Tensor out = at::empty({p.batch, p.tokens, p.heads, p.dim}, packed.options());
  const float* in = packed.const_data_ptr<float>();
  float* dst_base = out.mutable_data_ptr<float>();
  const int tiles = p.grid.num_tiles();
  at::parallel_for(0, p.bh() * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / tiles, b = bh / p.heads, h = bh % p.heads;
      const int tile = static_cast<int>(task % tiles);
      const TileRect rect = p.grid.rect(tile);
      for (int i = 0; i < rect.size(); ++i) {
        const float* src = in + (bh * p.padded_tokens() + int64_t{tile} * kTile + i) * p.row_stride();
        float* dst = dst_base + ((b * p.tokens + p.grid.token(rect, i)) * p.heads + h) * p.dim;
        for (int64_t d = 0; d < p.dim; ++d) dst[d] = src[d] * scale;
      }
    }
  });
  return out.to(dtype);
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

int round_up4(int x) { return (x + 3) & ~3; }

// Runs fn(task, scratch) for every task in [0, count) on at::parallel_for's threads, handing tasks out one at a
// time: tiles near a causal mask's corner have less work than others, and on a shared machine one thread may be
// descheduled, so a static split would wait on the slowest thread. Each thread gets its own scratch buffer.
template <typename Fn>
void parallel_tasks(int64_t count, size_t scratch_floats, const Fn& fn) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(count, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    std::vector<float> scratch(scratch_floats);
    for (int64_t task = next.fetch_add(1); task < count; task = next.fetch_add(1)) fn(task, scratch.data());
  });
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

// Sets S to -inf where the key is masked (partial tile pairs only), or (for any pair) beyond the key tile's tokens.
LEDIT_CPU_INLINE void mask_scores(float* S, int rows, const TileCoords& q, const TileCoords& k, Scan scan, int w,
                                  TileVisibility visibility) {
  if (visibility == TileVisibility::kPartial) {
    const int real_rows = std::min(rows, q.rect.size());
    switch (scan) {
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
  for (int i = 0; i < rows; ++i)
    for (int j = k.rect.size(); j < kTile; ++j) S[i * kTile + j] = kNegInf;
}

LEDIT_CPU_INLINE float row_max(const float* s) {
  Vec16 m = load16(s);
  for (int j = 16; j < kTile; j += 16) {
    const Vec16 x = load16(s + j);
    m = x > m ? x : m;
  }
  float result = m[0];
  for (int l = 1; l < 16; ++l) result = std::max(result, m[l]);
  return result;
}

// p = 2^((s - shift) - shift_low) over one score row (in place is fine); returns the row sum. shift_low carries
// the bits of a large shift (the backward's lse) that float32 cannot hold next to it.
LEDIT_CPU_INLINE float exp2_row(const float* s, float shift, float* p, float shift_low = 0.f) {
  Vec16 sum{};
  for (int j = 0; j < kTile; j += 16) {
    const Vec16 e = exp2_approx((load16(s + j) - shift) - shift_low);
    store16(p + j, e);
    sum += e;
  }
  float result = 0.f;
  for (int l = 0; l < 16; ++l) result += sum[l];
  return result;
}

// Forward for one (batch, head, query tile): O and lse of its rows (O is kTile x D, lse kTile).
LEDIT_CPU_MULTIVERSION
void forward_query_tile(const Problem& p, int q_tile, const float* Q, const float* Kt, const float* V, float* O,
                        float* lse, float* S) {
  const int D = static_cast<int>(p.row_stride());  // padded row length
  const int contraction = static_cast<int>(p.dim);
  const TileCoords q(p.grid, q_tile);
  const int M = round_up4(q.rect.size());
  float row_m[kTile], row_l[kTile];
  std::fill(row_m, row_m + kTile, kNegInf);
  std::fill(row_l, row_l + kTile, 0.f);
  std::fill(O, O + kTile * D, 0.f);
  for (int k_tile = 0; k_tile < p.grid.num_tiles(); ++k_tile) {
    const TileVisibility visibility = classify_tiles(p.scan, q.rect, p.grid.rect(k_tile), p.grid.w);
    if (visibility == TileVisibility::kMasked) continue;
    const TileCoords k(p.grid, k_tile);
    gemm(M, kTile, contraction, Q, D, Kt + int64_t{k_tile} * D * kTile, kTile, S, kTile, false);
    mask_scores(S, M, q, k, p.scan, p.grid.w, visibility);
    for (int i = 0; i < M; ++i) {
      float* s = S + i * kTile;
      const float m_new = std::max(row_m[i], row_max(s));
      if (m_new == kNegInf) {  // no visible key for this row yet (or a padding row): contributes nothing
        std::fill(s, s + kTile, 0.f);
        continue;
      }
      const float alpha = exp2_approx(row_m[i] - m_new);
      row_l[i] = row_l[i] * alpha + exp2_row(s, m_new, s);
      row_m[i] = m_new;
      float* o = O + i * D;
      for (int d = 0; d < D; ++d) o[d] *= alpha;
    }
    gemm(M, D, kTile, S, kTile, V + int64_t{k_tile} * kTile * D, D, O, D, true);
  }
  for (int i = 0; i < q.rect.size(); ++i) {
    const float inv_l = 1.f / row_l[i];
    for (int d = 0; d < D; ++d) O[i * D + d] *= inv_l;
    lse[i] = static_cast<float>((double{row_m[i]} + std::log2(double{row_l[i]})) * double{kLn2});
  }
}

// Backward for one (batch, head): accumulates dQ (all query tiles) and writes dK, dV (all key tiles), packed.
// Q is scaled by softmax_scale*log2(e); lse2 + lse2_low is lse*log2(e) split into two floats (+inf on padding
// rows), so converting lse to base 2 loses nothing; delta = rowsum(dO * O).
LEDIT_CPU_MULTIVERSION
void backward_head(const Problem& p, const float* Q, const float* K, const float* Kt, const float* Vt,
                   const float* dO, const float* lse2, const float* lse2_low, const float* delta, float* dQ,
                   float* dK, float* dV,
                   float* scratch) {
  const int D = static_cast<int>(p.row_stride());  // padded row length
  const int contraction = static_cast<int>(p.dim);
  float* P = scratch;                  // kTile x kTile probabilities, then dS
  float* dP = P + kTile * kTile;       // kTile x kTile
  float* T = dP + kTile * kTile;       // kTile x kTile transpose of P or dS
  for (int k_tile = 0; k_tile < p.grid.num_tiles(); ++k_tile) {
    const TileCoords k(p.grid, k_tile);
    const int64_t k_off = int64_t{k_tile} * kTile;
    float* dk = dK + k_off * D;
    float* dv = dV + k_off * D;
    for (int q_tile = 0; q_tile < p.grid.num_tiles(); ++q_tile) {
      const TileVisibility visibility = classify_tiles(p.scan, p.grid.rect(q_tile), k.rect, p.grid.w);
      if (visibility == TileVisibility::kMasked) continue;
      const TileCoords q(p.grid, q_tile);
      const int M = round_up4(q.rect.size());
      const int64_t q_off = int64_t{q_tile} * kTile;
      gemm(M, kTile, contraction, Q + q_off * D, D, Kt + k_off * D, kTile, P, kTile, false);
      mask_scores(P, M, q, k, p.scan, p.grid.w, visibility);
      for (int i = 0; i < M; ++i) {
        exp2_row(P + i * kTile, lse2[q_off + i], P + i * kTile, lse2_low[q_off + i]);
      }
      transpose_tile(P, T);
      gemm(kTile, D, M, T, kTile, dO + q_off * D, D, dv, D, true);  // dV += P^T dO
      gemm(M, kTile, contraction, dO + q_off * D, D, Vt + k_off * D, kTile, dP, kTile, false);  // dP = dO V^T
      for (int i = 0; i < M; ++i) {
        const float delta_i = delta[q_off + i];
        for (int j = 0; j < kTile; ++j) P[i * kTile + j] *= dP[i * kTile + j] - delta_i;  // dS
      }
      gemm(M, D, kTile, P, kTile, K + k_off * D, D, dQ + q_off * D, D, true);  // dQ += dS K
      transpose_tile(P, T);
      gemm(kTile, D, M, T, kTile, Q + q_off * D, D, dk, D, true);  // dK += dS^T Q
    }
  }
}

std::tuple<at::Tensor, at::Tensor> scan_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v, int64_t h, int64_t w,
                                                          c10::string_view scan, double softmax_scale) {
  const int64_t dim = check_qkv(q, k, v, h, w);
  const Problem p{q.size(0), q.size(1), q.size(2), dim, make_tile_grid(h, w, kTile), parse_scan(scan)};
  const at::Tensor Q = pack_rows(q, p, static_cast<float>(softmax_scale) * kLog2e);
  const at::Tensor Kt = transpose_tiles(pack_rows(k, p, 1.f), p);
  const at::Tensor V = pack_rows(v, p, 1.f);
  at::Tensor O = at::zeros_like(Q);
  at::Tensor lse = at::zeros({p.bh(), p.padded_tokens()}, Q.options());
  const int tiles = p.grid.num_tiles();
  const int64_t ld = p.row_stride();
  parallel_tasks(p.bh() * tiles, kTile * kTile, [&](int64_t task, float* scores) {
    const int64_t bh = task / tiles;
    const int q_tile = static_cast<int>(task % tiles);
    const int64_t rows = bh * p.padded_tokens() + int64_t{q_tile} * kTile;
    forward_query_tile(p, q_tile, Q.const_data_ptr<float>() + rows * ld,
                       Kt.const_data_ptr<float>() + bh * p.padded_tokens() * ld,
                       V.const_data_ptr<float>() + bh * p.padded_tokens() * ld,
                       O.mutable_data_ptr<float>() + rows * ld, lse.mutable_data_ptr<float>() + rows, scores);
  });
  // lse back to (B, H, N) raster order: gather the tile-order entries of every token.
  at::Tensor lse_out = at::empty({p.batch, p.heads, p.tokens}, Q.options());
  const float* lse_in = lse.const_data_ptr<float>();
  float* lse_dst = lse_out.mutable_data_ptr<float>();
  for (int tile = 0; tile < tiles; ++tile) {
    const TileRect rect = p.grid.rect(tile);
    for (int64_t bh = 0; bh < p.bh(); ++bh)
      for (int i = 0; i < rect.size(); ++i)
        lse_dst[bh * p.tokens + p.grid.token(rect, i)] = lse_in[bh * p.padded_tokens() + int64_t{tile} * kTile + i];
  }
  return {unpack_rows(O, p, 1.f, q.scalar_type()), lse_out};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_attention_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t h, int64_t w, c10::string_view scan, double softmax_scale) {
  const int64_t dim = check_qkv(q, k, v, h, w);
  TORCH_CHECK(dout.sizes() == q.sizes() && out.sizes() == q.sizes(), "scan_attention_bwd: dout/out shape mismatch");
  const Problem p{q.size(0), q.size(1), q.size(2), dim, make_tile_grid(h, w, kTile), parse_scan(scan)};
  const float scale = static_cast<float>(softmax_scale);
  const at::Tensor Q = pack_rows(q, p, scale * kLog2e);
  const at::Tensor K = pack_rows(k, p, 1.f);
  const at::Tensor Kt = transpose_tiles(K, p);
  const at::Tensor Vt = transpose_tiles(pack_rows(v, p, 1.f), p);
  const at::Tensor dO = pack_rows(dout, p, 1.f);
  const at::Tensor delta = (dout.to(at::kFloat) * out.to(at::kFloat)).sum(-1).transpose(1, 2);  // (B, H, N)
  const at::Tensor delta_p = pack_queries(delta, p, 0.f);
  const at::Tensor lse2_exact = lse.to(at::kDouble) * (1.0 / double{kLn2});
  const at::Tensor lse2_high = lse2_exact.to(at::kFloat);
  const at::Tensor lse2 = pack_queries(lse2_high, p, std::numeric_limits<float>::infinity());
  const at::Tensor lse2_low = pack_queries((lse2_exact - lse2_high.to(at::kDouble)).to(at::kFloat), p, 0.f);
  at::Tensor dQ = at::zeros_like(Q), dK = at::zeros_like(Q), dV = at::zeros_like(Q);
  const int64_t head_elems = p.padded_tokens() * p.row_stride();
  parallel_tasks(p.bh(), 3 * kTile * kTile, [&](int64_t bh, float* scratch) {
    const int64_t off = bh * head_elems, rows = bh * p.padded_tokens();
    backward_head(p, Q.const_data_ptr<float>() + off, K.const_data_ptr<float>() + off,
                  Kt.const_data_ptr<float>() + off, Vt.const_data_ptr<float>() + off, dO.const_data_ptr<float>() + off,
                  lse2.const_data_ptr<float>() + rows, lse2_low.const_data_ptr<float>() + rows,
                  delta_p.const_data_ptr<float>() + rows, dQ.mutable_data_ptr<float>() + off,
                  dK.mutable_data_ptr<float>() + off, dV.mutable_data_ptr<float>() + off, scratch);
  });
  const at::ScalarType dtype = q.scalar_type();
  return {unpack_rows(dQ, p, scale, dtype), unpack_rows(dK, p, kLn2, dtype), unpack_rows(dV, p, 1.f, dtype)};
}

}  // namespace
}  // namespace cpu
}  // namespace ledit

TORCH_LIBRARY_IMPL(ledit, CPU, m) {
  m.impl("scan_attention_fwd", &ledit::cpu::scan_attention_fwd_cpu);
  m.impl("scan_attention_bwd", &ledit::cpu::scan_attention_bwd_cpu);
}
