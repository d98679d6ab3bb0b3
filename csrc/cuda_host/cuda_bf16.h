// Shim of cuda_bf16.h for the host emulation: __nv_bfloat16 as the raw bfloat16 bits torch
// stores (the upper half of a float32), and the exact widening conversion. Test-only.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  unsigned short __x;
};
static_assert(sizeof(__nv_bfloat16) == 2 && alignof(__nv_bfloat16) == 2,
              "__nv_bfloat16 must match torch.bfloat16");

inline float __bfloat162float(__nv_bfloat16 h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h.__x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
