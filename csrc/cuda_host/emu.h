// Host emulation of the CUDA execution model, for testing the kernels of csrc/cuda without a GPU
// (test-only: dtda._C_cuda_emu, CMake option DTDA_CUDA_EMULATION). The .cu sources are compiled
// by the host C++ compiler after translate.py has rewritten their kernel launches and __shared__
// declarations; this header (through the shim cuda_runtime.h) supplies the rest of the subset
// they use.
//
// Execution model:
//   * A launch runs synchronously on the calling thread, its blocks one at a time in reversed
//     linear order (the last block first), so no kernel may rely on blocks running in order.
//   * The threads of a block are cooperative fibers (ucontext) on reused stacks. Each runs until
//     it reaches __syncthreads, a warp shuffle or its end; every scheduling pass runs the
//     runnable threads in a pseudo-random order fixed by the block and the pass (reproducible).
//     A barrier opens when every thread that has not exited waits at it (all at the same call
//     site, else the divergence is reported). So a shared-memory value passed between threads
//     without a barrier in between is stale or poisoned for about half of the thread pairs: a
//     missing barrier gives wrong results instead of lucky ones.
//   * __shared__ variables are per-OS-thread statics, filled with 0xFF bytes (NaN as floats)
//     when a block first reaches their declaration: reading shared memory nobody wrote fails.
//     Static shared memory above 48 KiB per block is an error, as on the GPU.
//   * __shfl_down_sync waits until every lane named in its mask arrived; a lane in the mask that
//     exited, a mask that leaves out the calling lane, disagreeing masks or a block in which
//     nothing can proceed (deadlock) throw std::runtime_error naming the kernel, block, threads
//     and source lines, instead of hanging.
//   * Invalid launch configurations set the error cudaGetLastError returns, as on the GPU.
//
// Not emulated: timing, lockstep warps (warp-synchronous code without __syncwarp is not checked),
// the memory model (fences, atomics), occupancy and register limits, dynamic shared memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

// ---- runtime types ---------------------------------------------------------------------------
// The values are the CUDA runtime's (driver_types.h).
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};

enum cudaDeviceAttr : int {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMultiProcessorCount = 16,
};

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// The built-in index variables. The scheduler sets threadIdx before resuming each fiber; all
// fibers of a launch run on the launching OS thread, so thread_local separates concurrent
// launches from different host threads.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace dtda::emu {

// A type-erased kernel invocation: run(ctx) executes the kernel body for the current thread.
struct KernelBody {
  void (*run)(void*);
  void* ctx;
};

// Validates the configuration (an invalid one sets the last error and runs nothing), then runs
// every block; throws std::runtime_error on deadlock or misuse detected while running.
void run_grid(const char* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream,
              KernelBody body);

// kernel<<<grid, block, smem, stream>>>(args...) after translate.py. Arguments are converted to
// the kernel's parameter types once, as CUDA copies them; each thread gets its own copy.
template <typename... P, typename... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t dynamic_smem,
            cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  auto call = [&] { std::apply(kernel, params); };
  run_grid(name, grid, block, dynamic_smem, stream,
           KernelBody{[](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call});
}

// __syncthreads() at file:line.
void barrier(const char* file, int line);

// The warp exchange behind __shfl_down_sync: `bits` holds `size` bytes of this lane's value;
// returns the bytes of lane (lane + delta) or this lane's own when that is outside the warp.
std::uint64_t shuffle_down(unsigned mask, std::uint64_t bits, std::size_t size, unsigned delta, int width,
                           const char* file, int line);

// Registers a __shared__ variable when a thread reaches its declaration (translate.py inserts
// the call): the first thread of each block to get there fills it with 0xFF bytes.
void shared_variable(void* p, std::size_t size, const char* name, const char* file, int line);
template <typename T>
inline void shared(T& var, const char* name, const char* file, int line) {
  shared_variable(static_cast<void*>(&var), sizeof(T), name, file, line);
}

// Controls for tests.
void set_sm_count(int n);  // what cudaDeviceGetAttribute reports as the SM count (default 132)
int sm_count();
std::map<std::string, std::int64_t> launch_counts();  // kernel name (as written at the launch) → launches
void reset_launch_counts();
// The workspace budget of csrc/cuda/common.cuh (default 1 GiB, as on the GPU); tests shrink it
// to make the ops process examples in several chunks.
void set_workspace_bytes(std::int64_t bytes);
std::int64_t workspace_bytes();

}  // namespace dtda::emu

// ---- device functions ------------------------------------------------------------------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::dtda::emu::barrier(file, line);
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "__shfl_down_sync: 1 to 8 byte values");
  std::uint64_t in = 0;
  std::memcpy(&in, &var, sizeof(T));
  const std::uint64_t out = ::dtda::emu::shuffle_down(mask, in, sizeof(T), delta, width, file, line);
  T result;
  std::memcpy(&result, &out, sizeof(T));
  return result;
}
