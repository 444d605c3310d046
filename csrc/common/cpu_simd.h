// Portable SIMD vocabulary of the C++ CPU kernels: GCC vector types the compiler lowers to AVX-512, AVX2 or SSE,
// and function multi-versioning, so hot functions are compiled for several x86 ISA levels and the best one is
// picked at load time: the extension needs no -march flag and still runs AVX-512 code where the CPU has it.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LEDIT_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LEDIT_CPU_MULTIVERSION
#endif
#define LEDIT_CPU_INLINE inline __attribute__((always_inline))
// Lambdas in the hot loops must be inlined into the cloned function that calls them: an out-of-line lambda would
// be compiled for baseline x86-64 only.
#define LEDIT_LAMBDA_INLINE __attribute__((always_inline))

namespace ledit {
namespace simd {

// 16 floats in one value; GCC and Clang lower it to one AVX-512 register, two AVX2 ones or four SSE ones. With
// -ffp-contract=fast (build_utils.CXX_FLAGS) `acc += a * b` becomes one fused multiply-add.
typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t Int16 __attribute__((vector_size(64)));

// 8 floats: one AVX2 register (the working width without AVX-512), and on AVX-512 the tail of a row whose length
// is a multiple of 8 but not of 16 (D = 72 is 4 x 16 + 8).
typedef float Vec8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));  // 8 int32s, Vec8's lanes

// The int32 vector with V's lanes (comparisons and bit casts of V).
template <typename V>
struct IntVector;
template <>
struct IntVector<Vec16> {
  using type = Int16;
};
template <>
struct IntVector<Vec8> {
  using type = Int8;
};

template <typename V>
LEDIT_CPU_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V>
LEDIT_CPU_INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}

// Whether a Vec16 is one register (AVX-512). Register-blocked loops size their blocks by it: GCC keeps the
// function multi-versioned, but one source serves every clone, so the choice is made at run time (a load and a
// bit test of libgcc's CPU model, per call of a blocked loop).
LEDIT_CPU_INLINE bool wide_vector_registers() {
#if defined(__GNUC__) && defined(__x86_64__)
  return __builtin_cpu_supports("avx512f");
#else
  return false;  // NEON, SSE-only builds: 16 floats are four registers
#endif
}

// Lane-wise max of two vectors (Vec16 or Vec8).
template <typename V>
LEDIT_CPU_INLINE V vmax(V a, V b) {
  return a > b ? a : b;
}

// Horizontal max and sum as trees of shuffles (4 steps instead of a 15-step scalar dependency chain).
LEDIT_CPU_INLINE float reduce_max(Vec16 v) {
  v = vmax(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  v = vmax(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  v = vmax(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  v = vmax(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return v[0];
}
LEDIT_CPU_INLINE float reduce_max(Vec8 v) {
  v = vmax(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3));
  v = vmax(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5));
  v = vmax(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6));
  return v[0];
}
LEDIT_CPU_INLINE float reduce_sum(Vec16 v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return v[0];
}

}  // namespace simd
}  // namespace ledit
