// Fixed-size fp32 tile primitives for the CPU scan-attention kernel: a register-blocked matrix product, a base-2
// exponential and a 16x16 transpose, written on the vector types of common/cpu_simd.h.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/cpu_simd.h"

namespace ledit {
namespace scan_attention {
namespace cpu {

using namespace ::ledit::simd;  // NOLINT: the SIMD vocabulary of every CPU kernel

// Tokens per tile (query and key): a 64 x 64 score tile fits in L1 next to the operand tiles.
constexpr int kTile = 64;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// C[kRows x kVecs vectors] (+)= A[kRows x K] * B[K x kVecs vectors] with the C block held in registers across the
// K loop. A is row-major (A[r][k] = A[r * lda + k]), or with kTransA its transpose is (A[r][k] = A[k * lda + r]),
// which gives the backward's P^T dO and dS^T Q without transposing P or dS.
template <int kRows, int kVecs, typename V, bool kTransA>
LEDIT_CPU_INLINE void gemm_block(int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                                 bool accumulate) {
  constexpr int kWidth = sizeof(V) / sizeof(float);
  V acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = accumulate ? load<V>(C + r * ldc + kWidth * v) : V{};
  // Operands advance by pointer: A one column (row-major) or one row (transposed) per k, B one row.
  const ptrdiff_t a_row = kTransA ? 1 : lda, a_step = kTransA ? lda : 1;
  for (int k = 0; k < K; ++k, A += a_step, B += ldb) {
    V b[kVecs];
    for (int v = 0; v < kVecs; ++v) b[v] = load<V>(B + kWidth * v);
    for (int r = 0; r < kRows; ++r) {
      const float a = A[r * a_row];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) store<V>(C + r * ldc + kWidth * v, acc[r][v]);
}

// The columns of an N-column product (N a multiple of 8) that gemm's 4-row blocks cover: all but a last 8 that
// their widths (multiples of 24 then one of 16 on AVX2, of 32 then one of 16 with `wide` registers) leave over.
LEDIT_CPU_INLINE int four_row_columns(int N, bool wide) { return N % (wide ? 16 : 24) == 8 ? N - 8 : N; }

// C[M x N] (+)= A[M x K] * B[K x N] (A transposed with kTransA, see gemm_block); M a multiple of 4, N of 8.
// The C block must stay in registers, so its size follows the register file: 4 x 32 floats in 8 of AVX-512's 32
// registers, 4 x 24 floats in 12 of AVX2's 16. (A 4 x 32 block on AVX2 is 16 registers before the operands: it
// spilled every k step and ran some 50x slower.) The columns left over go to blocks of 8 accumulators (4 where only
// 4 rows are left): each accumulator is a chain of dependent fused multiply-adds, and a core needs about 8 in flight
// (latency 4-5 cycles, 2 per cycle). 4 x 8 blocks (4 chains) ran at half that rate and took 30% of the AVX2
// forward's tile loop at D = 64 (N = 64 = 24 + 24 + 8 + 8): a last 16 columns run as one 4 x 16 block, a last 8
// as 8 x 8 blocks. Each element of C is the same chain of k steps whichever block computes it, so results do not
// depend on the blocking.
template <bool kTransA = false>
LEDIT_CPU_INLINE void gemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                           bool accumulate) {
  const bool wide = wide_vector_registers();
  const int blocked = four_row_columns(N, wide);
  for (int m = 0; m < M; m += 4) {
    const float* a = kTransA ? A + m : A + m * lda;
    float* c = C + m * ldc;
    int n = 0;
    if (wide) {
      for (; n + 32 <= blocked; n += 32)
        gemm_block<4, 2, Vec16, kTransA>(K, a, lda, B + n, ldb, c + n, ldc, accumulate);
      if (n < blocked) gemm_block<4, 1, Vec16, kTransA>(K, a, lda, B + n, ldb, c + n, ldc, accumulate);
    } else {
      for (; n + 24 <= blocked; n += 24)
        gemm_block<4, 3, Vec8, kTransA>(K, a, lda, B + n, ldb, c + n, ldc, accumulate);
      if (n < blocked) gemm_block<4, 2, Vec8, kTransA>(K, a, lda, B + n, ldb, c + n, ldc, accumulate);
    }
  }
  if (blocked == N) return;
  int m = 0;
  for (; m + 8 <= M; m += 8) {
    const float* a = kTransA ? A + m : A + m * lda;
    gemm_block<8, 1, Vec8, kTransA>(K, a, lda, B + blocked, ldb, C + m * ldc + blocked, ldc, accumulate);
  }
  if (m < M) {
    const float* a = kTransA ? A + m : A + m * lda;
    gemm_block<4, 1, Vec8, kTransA>(K, a, lda, B + blocked, ldb, C + m * ldc + blocked, ldc, accumulate);
  }
}

// 2^x with ~2 ulp relative error (Cephes exp2f polynomial on [-0.5, 0.5]); 0 for x < -126, so -inf gives 0.
// V is Vec16 or Vec8 (the width that is one register or two: see wide_vector_registers).
template <typename V>
LEDIT_CPU_INLINE V exp2_approx(V x) {
  using Int = typename IntVector<V>::type;
  const V xc = x < -126.f ? V{} - 126.f : x;
  const V xi = (xc + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23 trick), |x| < 2^22
  const V f = xc - xi;
  V p = V{} + 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.f;
  const Int bits = (__builtin_convertvector(xi, Int) + 127) << 23;
  V pow2;
  std::memcpy(&pow2, &bits, sizeof(pow2));
  return x < -126.f ? V{} : p * pow2;
}

LEDIT_CPU_INLINE float exp2_approx(float x) { return exp2_approx(Vec8{} + x)[0]; }

// dst (16 rows, stride ldd) = the transpose of src (16 rows, stride lds): four rounds of interleaving row i with
// row i + 8 (a perfect shuffle) turn rows into columns, 64 two-register permutes per 256 values.
LEDIT_CPU_INLINE void transpose16x16(const float* src, int lds, float* dst, int ldd) {
  Vec16 v[16], next[16];
  for (int i = 0; i < 16; ++i) v[i] = load<Vec16>(src + i * lds);
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 8; ++i) {
      next[2 * i] = __builtin_shufflevector(v[i], v[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      next[2 * i + 1] =
          __builtin_shufflevector(v[i], v[i + 8], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    }
    for (int i = 0; i < 16; ++i) v[i] = next[i];
  }
  for (int i = 0; i < 16; ++i) store<Vec16>(dst + i * ldd, v[i]);
}

}  // namespace cpu
}  // namespace scan_attention
}  // namespace ledit
