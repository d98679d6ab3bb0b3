// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), shared
// by the CPU and CUDA kernels so both regenerate the same random projection entries. The stream
// layout (which counter gives which entry) is specified in dtda/ops/reference.py (jl_matrix).
#pragma once
#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define DTDA_HD __host__ __device__ __forceinline__
#else
#define DTDA_HD inline
#endif

namespace dtda::philox {

struct Words { uint32_t w[4]; };

DTDA_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds on counter (c0..c3) with key (k0, k1).
DTDA_HD Words philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                            uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  return Words{{c0, c1, c2, c3}};
}

// ±1 entry R[p, j] of a Rademacher projection with this seed (see reference.jl_matrix).
DTDA_HD int rademacher(uint64_t seed, uint64_t p, uint64_t j) {
  const Words w = philox4x32_10(static_cast<uint32_t>(p), static_cast<uint32_t>(p >> 32),
                                static_cast<uint32_t>(j >> 7), 0u, static_cast<uint32_t>(seed),
                                static_cast<uint32_t>(seed >> 32));
  const uint32_t word = w.w[(j & 127) >> 5];
  return ((word >> (j & 31)) & 1u) ? 1 : -1;
}

// The 128 Rademacher bits of row p, columns 128 g .. 128 g + 127: column j is bit (j mod 32) of
// word ((j mod 128) div 32), 1 for +1 (the block form of rademacher(), for tile generation).
DTDA_HD Words rademacher_block(uint64_t seed, uint64_t p, uint64_t g) {
  return philox4x32_10(static_cast<uint32_t>(p), static_cast<uint32_t>(p >> 32),
                       static_cast<uint32_t>(g), 0u, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// Box–Muller from two uniform words: u1 = (w0 + 1)/2^32 ∈ (0, 1], u2 = w1/2^32,
// √(−2 ln u1) cos(2π u2), in double like the reference (callers round to their dtype).
DTDA_HD double box_muller(uint32_t w0, uint32_t w1) {
  const double u1 = (static_cast<double>(w0) + 1.0) * 0x1p-32;
  const double u2 = static_cast<double>(w1) * 0x1p-32;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// The Gaussian entries R[p, 2i] and R[p, 2i + 1] from one Philox call (counter (p, i, 1)).
DTDA_HD void gaussian_pair(uint64_t seed, uint64_t p, uint64_t i, double& r0, double& r1) {
  const Words w = philox4x32_10(static_cast<uint32_t>(p), static_cast<uint32_t>(p >> 32),
                                static_cast<uint32_t>(i), 1u, static_cast<uint32_t>(seed),
                                static_cast<uint32_t>(seed >> 32));
  r0 = box_muller(w.w[0], w.w[1]);
  r1 = box_muller(w.w[2], w.w[3]);
}

}  // namespace dtda::philox
