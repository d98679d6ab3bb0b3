// Shim of cuda_fp16.h for the host emulation: __half as the raw IEEE binary16 bits that torch
// stores for float16 (same size and alignment, so kernels read torch's buffers directly), and
// the exact widening conversion the kernels use. Test-only.
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
  unsigned short __x;  // sign (1) | exponent (5, bias 15) | mantissa (10)
};
static_assert(sizeof(__half) == 2 && alignof(__half) == 2, "__half must match torch.float16");

// Every binary16 value is a float32 value: no rounding. Subnormals are scaled exactly, infinities
// and NaNs keep their sign and payload.
inline float __half2float(__half h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.__x & 0x8000u) << 16;
  const std::uint32_t exponent = (h.__x >> 10) & 0x1fu, mantissa = h.__x & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);  // normal
  } else if (mantissa == 0) {
    bits = sign;  // ±0
  } else {
    // Subnormal m·2^-24: shift the leading one into the implicit bit.
    int e = -14;
    std::uint32_t m = mantissa;
    while ((m & 0x400u) == 0) {
      m <<= 1;
      --e;
    }
    bits = sign | (static_cast<std::uint32_t>(e + 127) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
