// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), shared
// by the CPU and CUDA kernels so both regenerate the same random projection entries. The stream
// layout (which counter gives which entry) is specified in dtda/ops/reference.py (jl_matrix).
#pragma once
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

}  // namespace dtda::philox
