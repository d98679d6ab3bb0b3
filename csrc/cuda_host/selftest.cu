// Kernels that test the host emulation itself (compiled into dtda._C_cuda_emu only, through
// translate.py like the real kernels): a barrier the caller may omit, a warp reduction that part
// of the warp may skip, a divergent barrier, too much shared memory, the block order and the
// half-precision conversions.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace dtda::cuda::selftest {
namespace {

constexpr const char* kOp = "emulation";

// out[b·n + i] = in[b·n + n − 1 − i] through shared memory (n = blockDim.x). Without `sync`, the
// barrier between the writes and the reads is missing.
__global__ void reverse_in_block(const float* in, float* out, bool sync) {
  __shared__ float staged[1024];
  const unsigned i = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
  staged[i] = in[base + i];
  if (sync) __syncthreads();
  out[base + i] = staged[n - 1 - i];
}

// out[w] = Σ of the 32 values of warp w (warp_sum of common.cuh). Lanes ≥ `active` return before
// the reduction, which the full-warp mask does not allow.
__global__ void warp_sums(const float* in, float* out, int active) {
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  if (lane >= active) return;
  const float v = warp_sum(in[blockIdx.x * blockDim.x + t]);
  if (lane == 0) out[(blockIdx.x * blockDim.x + t) / 32] = v;
}

// Threads below `split` wait at one barrier, the others at another (undefined in CUDA).
__global__ void divergent_barrier(float* out, int split) {
  if (static_cast<int>(threadIdx.x) < split) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// 49 152 + 8 bytes of static shared memory: one double over the limit.
__global__ void too_much_shared(double* out) {
  __shared__ double big[6145];
  big[threadIdx.x] = 0.0;
  out[threadIdx.x] = big[threadIdx.x];
}

// order[b] = the position of block b in the execution order (sequential in the emulation, so the
// plain increment is no race there; on a GPU it would need atomicAdd).
__global__ void block_order(int* order, int* next) {
  if (threadIdx.x == 0) order[blockIdx.x] = (*next)++;
}

// out[i] = in[i] widened through to_acc (the kernels' conversion of 16-bit inputs).
template <typename T>
__global__ void widen(const T* in, float* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = to_acc<float>(in[i]);
}

}  // namespace

void bind(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "reverse_in_block",
      [](std::uintptr_t in, std::uintptr_t out, unsigned blocks, unsigned threads, bool sync) {
        reverse_in_block<<<blocks, threads>>>(as_ptr<const float>(in), as_ptr<float>(out), sync);
        check_launch(kOp, "reverse_in_block");
      },
      py::arg("x"), py::arg("out"), py::arg("blocks"), py::arg("threads"), py::arg("sync"),
      py::call_guard<py::gil_scoped_release>(),
      "out[b, i] = x[b, threads - 1 - i] through shared memory, float32 [blocks, threads];\n"
      "sync=False leaves out the barrier between the shared-memory writes and reads.");
  m.def(
      "warp_sums",
      [](std::uintptr_t in, std::uintptr_t out, unsigned blocks, unsigned threads, int active) {
        warp_sums<<<blocks, threads>>>(as_ptr<const float>(in), as_ptr<float>(out), active);
        check_launch(kOp, "warp_sums");
      },
      py::arg("x"), py::arg("out"), py::arg("blocks"), py::arg("threads"), py::arg("active") = 32,
      py::call_guard<py::gil_scoped_release>(),
      "out[w] = sum of warp w's 32 float32 values via warp_sum; lanes >= active exit first.");
  m.def(
      "divergent_barrier",
      [](std::uintptr_t out, unsigned threads, int split) {
        divergent_barrier<<<1, threads>>>(as_ptr<float>(out), split);
        check_launch(kOp, "divergent_barrier");
      },
      py::arg("out"), py::arg("threads"), py::arg("split"), py::call_guard<py::gil_scoped_release>(),
      "Threads below `split` and the others wait at different __syncthreads.");
  m.def(
      "too_much_shared",
      [](std::uintptr_t out) {
        too_much_shared<<<1, 32>>>(as_ptr<double>(out));
        check_launch(kOp, "too_much_shared");
      },
      py::arg("out"), py::call_guard<py::gil_scoped_release>(),
      "Declares 48 KiB + 8 bytes of static shared memory (over the limit).");
  m.def(
      "block_order",
      [](std::uintptr_t order, std::uintptr_t next, unsigned blocks) {
        block_order<<<blocks, 32>>>(as_ptr<int>(order), as_ptr<int>(next));
        check_launch(kOp, "block_order");
      },
      py::arg("order"), py::arg("next"), py::arg("blocks"), py::call_guard<py::gil_scoped_release>(),
      "order[b] = next++ when block b runs (int32 [blocks] and int32 [1]).");
  m.def(
      "widen",
      [](std::uintptr_t in, std::uintptr_t out, int64_t n, int dtype) {
        const auto blocks = static_cast<unsigned>(ceil_div(n, 256));
        if (dtype_from_code(dtype) == DType::Float16) {
          widen<__half><<<blocks, 256>>>(as_ptr<const __half>(in), as_ptr<float>(out), n);
        } else if (dtype_from_code(dtype) == DType::BFloat16) {
          widen<__nv_bfloat16><<<blocks, 256>>>(as_ptr<const __nv_bfloat16>(in), as_ptr<float>(out), n);
        } else {
          throw std::invalid_argument("widen: dtype must be float16 or bfloat16");
        }
        check_launch(kOp, "widen");
      },
      py::arg("x"), py::arg("out"), py::arg("n"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>(),
      "out[i] = float(x[i]) for n float16 or bfloat16 values (the kernels' to_acc).");
}

}  // namespace dtda::cuda::selftest
