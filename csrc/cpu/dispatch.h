// Helpers shared by the CPU kernels: the float-type switch and the thread-team size.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/dtype.h"

namespace dtda::cpu {

// Threads worth waking for `flops` of work split into `units` independent pieces: below about a
// millisecond of work one thread is faster than waking (and, on a loaded machine, waiting for) more.
inline int team(double flops, int64_t units, int threads) {
  if (flops < 3e7) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>(threads, units)));
}

// This thread's index inside an OpenMP team (0 without OpenMP).
inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Calls fn(float{}) or fn(double{}) for the dtype code; other dtypes are a ValueError in Python.
template <typename F>
void with_float_type(int code, const char* op, F&& fn) {
  switch (dtype_from_code(code)) {
    case DType::Float32: fn(float{}); return;
    case DType::Float64: fn(double{}); return;
    default:
      throw std::invalid_argument(std::string(op) + ": the CPU kernel supports float32 and float64, got " +
                                  dtype_name(dtype_from_code(code)));
  }
}

}  // namespace dtda::cpu
