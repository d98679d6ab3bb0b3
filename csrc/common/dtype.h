// dtda native core: dtype codes shared by the CPU and CUDA modules and dtda/_native.py.
// The native code never sees torch: Python passes data pointers, sizes and one of these codes.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace dtda {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

inline DType dtype_from_code(int code) {
  if (code < 0 || code > 3) throw std::invalid_argument("dtda: unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
  }
  return "?";
}

// Pointers cross the Python boundary as integers (tensor.data_ptr()).
template <typename T>
inline T* as_ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace dtda
