// Warp collectives with defined semantics (shuffles, votes, ldmatrix, mma.sync m16n8k16) and the fp16/bf16
// conversions, following the PTX ISA: "Data Movement and Conversion: shfl.sync", "ldmatrix", "Matrix fragments for
// mma.m16n8k16 with floating point type" (groupID = lane / 4, threadID_in_group = lane % 4).
#include <cmath>
#include <cstring>

#include "emulator/executor.h"

namespace ledit {
namespace emulator {
namespace {

struct ShuffleOperand {
  uint32_t value;
  int argument;
};

template <Shuffle kKind>
void shuffle_compute(const void* const* operands, void* const* results) {
  launch_state().counters.shuffles += 1;
  for (int lane = 0; lane < 32; ++lane) {
    const auto* own = static_cast<const ShuffleOperand*>(operands[lane]);
    int source = lane;
    if constexpr (kKind == Shuffle::kIndex) source = own->argument & 31;
    if constexpr (kKind == Shuffle::kXor) source = (lane ^ own->argument) & 31;
    if constexpr (kKind == Shuffle::kUp) source = lane - own->argument >= 0 ? lane - own->argument : lane;
    if constexpr (kKind == Shuffle::kDown) source = lane + own->argument < 32 ? lane + own->argument : lane;
    *static_cast<uint32_t*>(results[lane]) = static_cast<const ShuffleOperand*>(operands[source])->value;
  }
}

template <Vote kKind>
void vote_compute(const void* const* operands, void* const* results) {
  launch_state().counters.votes += 1;
  uint32_t ballot = 0;
  for (int lane = 0; lane < 32; ++lane) ballot |= (*static_cast<const bool*>(operands[lane]) ? 1u : 0u) << lane;
  uint32_t value = ballot;
  if constexpr (kKind == Vote::kAny) value = ballot != 0;
  if constexpr (kKind == Vote::kAll) value = ballot == 0xffffffffu;
  for (int lane = 0; lane < 32; ++lane) *static_cast<uint32_t*>(results[lane]) = value;
}

struct LdmatrixOperand {
  const void* row;
  Site site;
};

// Lane 8m + r gives the address of row r of matrix m (16 bytes: 8 elements). Lane l receives, in register m, the
// elements (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1) of matrix m, or with .trans its elements
// (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4); the lower column (row) index goes to the low 16 bits.
template <int kMatrices, bool kTranspose>
void ldmatrix_compute(const void* const* operands, void* const* results) {
  Launch& launch = launch_state();
  const int first = current_thread().warp * 32;
  uint16_t m[kMatrices][8][8];
  for (int matrix = 0; matrix < kMatrices; ++matrix) {
    for (int row = 0; row < 8; ++row) {
      const int lane = matrix * 8 + row;
      const auto* operand = static_cast<const LdmatrixOperand*>(operands[lane]);
      shared_access_by(*launch.threads[first + lane], operand->row, 16, AccessKind::kLdmatrix, operand->site);
      std::memcpy(m[matrix][row], operand->row, 16);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* registers = static_cast<uint32_t*>(results[lane]);
    const int r = lane / 4, c = 2 * (lane % 4);
    for (int matrix = 0; matrix < kMatrices; ++matrix) {
      const uint16_t lo = kTranspose ? m[matrix][c][r] : m[matrix][r][c];
      const uint16_t hi = kTranspose ? m[matrix][c + 1][r] : m[matrix][r][c + 1];
      registers[matrix] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

struct MmaOperand {
  const uint32_t* a;
  const uint32_t* b;
};

template <bool kBf16>
float element(uint32_t packed, int half) {
  const auto bits = static_cast<uint16_t>(half == 0 ? packed & 0xffffu : packed >> 16);
  return kBf16 ? bfloat16_bits_to_float(bits) : half_bits_to_float(bits);
}

// D (16 x 8, fp32) = A (16 x 16) * B (16 x 8) + C. Lane (g, t) = (lane / 4, lane % 4) holds
// a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..];
// b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]; c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1].
// Products of 16-bit values are exact in fp32; the sum runs over k in order, in fp32.
template <bool kBf16>
void mma_compute(const void* const* operands, void* const* results) {
  launch_state().counters.mma += 1;
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto* op = static_cast<const MmaOperand*>(operands[lane]);
    const auto* acc = static_cast<const float*>(results[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int half = 0; half < 2; ++half) {
      a[g][2 * t + half] = element<kBf16>(op->a[0], half);
      a[g + 8][2 * t + half] = element<kBf16>(op->a[1], half);
      a[g][2 * t + 8 + half] = element<kBf16>(op->a[2], half);
      a[g + 8][2 * t + 8 + half] = element<kBf16>(op->a[3], half);
      b[2 * t + half][g] = element<kBf16>(op->b[0], half);
      b[2 * t + 8 + half][g] = element<kBf16>(op->b[1], half);
      c[g][2 * t + half] = acc[half];
      c[g + 8][2 * t + half] = acc[2 + half];
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* acc = static_cast<float*>(results[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float sum = c[row][col];
      for (int k = 0; k < 16; ++k) sum = std::fma(a[row][k], b[k][col], sum);
      acc[i] = sum;
    }
  }
}

template <int kMatrices>
CollectiveCompute ldmatrix_for(bool transpose) {
  return transpose ? &ldmatrix_compute<kMatrices, true> : &ldmatrix_compute<kMatrices, false>;
}

}  // namespace

uint32_t warp_shuffle(Shuffle kind, uint32_t value, int argument, Site site) {
  static constexpr CollectiveCompute computes[] = {&shuffle_compute<Shuffle::kIndex>, &shuffle_compute<Shuffle::kXor>,
                                                   &shuffle_compute<Shuffle::kUp>, &shuffle_compute<Shuffle::kDown>};
  static constexpr const char* names[] = {"shfl", "shfl_xor", "shfl_up", "shfl_down"};
  const ShuffleOperand operand{value, argument};
  uint32_t result = 0;
  const int index = static_cast<int>(kind);
  warp_collective(names[index], site, &operand, &result, computes[index]);
  return result;
}

uint32_t warp_vote(Vote kind, bool predicate, Site site) {
  static constexpr CollectiveCompute computes[] = {&vote_compute<Vote::kAny>, &vote_compute<Vote::kAll>,
                                                   &vote_compute<Vote::kBallot>};
  static constexpr const char* names[] = {"vote_any", "vote_all", "ballot"};
  uint32_t result = 0;
  const int index = static_cast<int>(kind);
  warp_collective(names[index], site, &predicate, &result, computes[index]);
  return result;
}

void warp_ldmatrix(int matrices, bool transpose, const void* row, uint32_t* registers, Site site) {
  const LdmatrixOperand operand{row, site};
  const CollectiveCompute compute =
      matrices == 1 ? ldmatrix_for<1>(transpose) : matrices == 2 ? ldmatrix_for<2>(transpose) : ldmatrix_for<4>(transpose);
  warp_collective("ldmatrix", site, &operand, registers, compute);
}

void warp_mma_m16n8k16(bool bf16, float* acc, const uint32_t* a, const uint32_t* b, Site site) {
  const MmaOperand operand{a, b};
  warp_collective("mma_m16n8k16", site, &operand, acc, bf16 ? &mma_compute<true> : &mma_compute<false>);
}

uint16_t float_to_half_bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7fffu;                  // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;                 // >= 65520 rounds to infinity
  if (magnitude >= 0x38800000u) {                                      // normal: >= 2^-14
    const uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);  // nearest even on 13 dropped bits
    return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);      // exponent bias 127 -> 15
  }
  if (magnitude <= 0x33000000u) return sign;  // <= 2^-25: rounds to zero (2^-25 is a tie, zero is even)
  // Subnormal: magnitude = m * 2^(e - 150) with the hidden bit in m; in units of 2^-24 that is m >> (126 - e).
  const uint32_t e = magnitude >> 23, m = (magnitude & 0x7fffffu) | 0x800000u, shift = 126 - e;
  uint32_t q = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1), tie = 1u << (shift - 1);
  if (rest > tie || (rest == tie && (q & 1u))) ++q;
  return sign | static_cast<uint16_t>(q);
}

float half_bits_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  float value;
  if (exponent == 0x1f) {
    const uint32_t x = sign | 0x7f800000u | (mantissa << 13);
    std::memcpy(&value, &x, 4);
    return value;
  }
  value = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -24)
                        : std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  return sign ? -value : value;
}

uint16_t float_to_bfloat16_bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bfloat16_bits_to_float(uint16_t bits) {
  const uint32_t x = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &x, 4);
  return value;
}

}  // namespace emulator
}  // namespace ledit
