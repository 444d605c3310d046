// Fixed-size fp32 tile primitives for the CPU scan-attention kernel: a register-blocked matrix product and a
// base-2 exponential, written as plain loops the compiler vectorises. The hot functions are compiled for
// several x86 ISA levels (function multi-versioning) and the best one is picked at load time, so the
// extension needs no -march flag and still runs AVX-512 code where the CPU has it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LEDIT_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LEDIT_CPU_MULTIVERSION
#endif
#define LEDIT_CPU_INLINE inline __attribute__((always_inline))

namespace ledit {
namespace cpu {

// Tokens per tile (query and key): a 64 x 64 score tile fits in L1 next to the operand tiles.
constexpr int kTile = 64;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 16 floats in one value; GCC and Clang lower it to one AVX-512 register, two AVX2 ones or four SSE ones. With
// -ffp-contract=fast (build_utils.CXX_FLAGS) `acc += a * b` becomes one fused multiply-add.
typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t Int16 __attribute__((vector_size(64)));

LEDIT_CPU_INLINE Vec16 load16(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
LEDIT_CPU_INLINE void store16(float* p, Vec16 v) { std::memcpy(p, &v, sizeof(v)); }

// C[kRows x 16*kVecs] (+)= A[kRows x K] * B[K x 16*kVecs] with the C block held in registers across the K loop.
template <int kRows, int kVecs>
LEDIT_CPU_INLINE void gemm_block(int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                                 bool accumulate) {
  Vec16 acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = accumulate ? load16(C + r * ldc + 16 * v) : Vec16{};
  for (int k = 0; k < K; ++k) {
    Vec16 b[kVecs];
    for (int v = 0; v < kVecs; ++v) b[v] = load16(B + k * ldb + 16 * v);
    for (int r = 0; r < kRows; ++r) {
      const float a = A[r * lda + k];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) store16(C + r * ldc + 16 * v, acc[r][v]);
}

// C[M x N] (+)= A[M x K] * B[K x N], row-major; M a multiple of 4, N a multiple of 16.
LEDIT_CPU_INLINE void gemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                           bool accumulate) {
  for (int m = 0; m < M; m += 4) {
    int n = 0;
    for (; n + 32 <= N; n += 32)
      gemm_block<4, 2>(K, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
    if (n < N) gemm_block<4, 1>(K, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
  }
}

// 2^x with ~2 ulp relative error (Cephes exp2f polynomial on [-0.5, 0.5]); 0 for x < -126, so -inf gives 0.
LEDIT_CPU_INLINE Vec16 exp2_approx(Vec16 x) {
  const Vec16 xc = x < -126.f ? Vec16{} - 126.f : x;
  const Vec16 xi = (xc + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23 trick), |x| < 2^22
  const Vec16 f = xc - xi;
  Vec16 p = Vec16{} + 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.f;
  const Int16 bits = (__builtin_convertvector(xi, Int16) + 127) << 23;
  Vec16 pow2;
  std::memcpy(&pow2, &bits, sizeof(pow2));
  return x < -126.f ? Vec16{} : p * pow2;
}

LEDIT_CPU_INLINE float exp2_approx(float x) { return exp2_approx(Vec16{} + x)[0]; }

// Transpose a kTile x kTile tile (used for P^T and dS^T in the backward pass).
LEDIT_CPU_INLINE void transpose_tile(const float* src, float* dst) {
  for (int i = 0; i < kTile; ++i)
    for (int j = 0; j < kTile; ++j) dst[j * kTile + i] = src[i * kTile + j];
}

}  // namespace cpu
}  // namespace ledit
