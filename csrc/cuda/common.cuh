// Shared plumbing of the CUDA kernels: error checks, the device guard, the one dtype switch per
// op, accumulation types and element conversions. Torch-free: everything arrives as pointers,
// sizes, a dtype code (csrc/common/dtype.h), a device index and a stream handle.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/dtype.h"

namespace dtda::cuda {

// Throw std::runtime_error naming the op when a CUDA runtime call fails.
inline void check(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("dtda._C_cuda.") + op + ": " + what + " failed: " +
                             cudaGetErrorString(err));
  }
}

// After a kernel launch: configuration errors surface here (execution errors surface at the
// next synchronising call, as in torch).
inline void check_launch(const char* op, const char* kernel) { check(cudaGetLastError(), op, kernel); }

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Makes `device` current for the lifetime of the guard (torch's pointers and stream belong to
// that device's primary context, which this statically linked runtime shares with torch).
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* op) : device_(device) {
    check(cudaGetDevice(&previous_), op, "cudaGetDevice");
    if (previous_ != device_) check(cudaSetDevice(device_), op, "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);  // best effort: destructors must not throw
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = 0;
};

inline int sm_count(int device, const char* op) {
  int n = 0;
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), op, "cudaDeviceGetAttribute");
  return n > 0 ? n : 1;
}

// Accumulation (and result) type: float64 for float64 inputs, float32 for everything else.
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

template <typename Acc, typename T>
__device__ __forceinline__ Acc to_acc(T x) { return static_cast<Acc>(x); }
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;  // complete in lane 0
}

template <typename T> struct Tag { using type = T; };

// The one dtype switch per op: calls f(Tag<T>{}) with T the element type of `code`.
template <typename F>
void dispatch_dtype(int code, F&& f) {
  switch (dtype_from_code(code)) {
    case DType::Float32: f(Tag<float>{}); return;
    case DType::Float64: f(Tag<double>{}); return;
    case DType::Float16: f(Tag<__half>{}); return;
    case DType::BFloat16: f(Tag<__nv_bfloat16>{}); return;
  }
}

// Size arguments are validated once at the boundary, with the op and argument named.
inline void check_sizes(const char* op, std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  for (const auto& [name, value] : sizes) {
    if (value < 0) {
      throw std::invalid_argument(std::string("dtda._C_cuda.") + op + ": " + name +
                                  " must be >= 0, got " + std::to_string(value));
    }
  }
}

inline void check_workspace(const char* op, int64_t given, int64_t needed) {
  if (given < needed) {
    throw std::invalid_argument(std::string("dtda._C_cuda.") + op + ": workspace holds " +
                                std::to_string(given) + " elements, the plan needs " +
                                std::to_string(needed));
  }
}

// How many accumulator elements a workspace may hold: chunked ops size their chunks to this.
// 1 GiB; under the host emulation (csrc/cuda_host) tests shrink it, so that small shapes run
// the loops over chunks of examples more than once.
#ifdef DTDA_CUDA_EMULATION
inline int64_t workspace_bytes() { return ::dtda::emu::workspace_bytes(); }
#else
constexpr int64_t workspace_bytes() { return int64_t{1} << 30; }
#endif
template <typename Acc>
inline int64_t workspace_budget() { return workspace_bytes() / static_cast<int64_t>(sizeof(Acc)); }

}  // namespace dtda::cuda
