// jl_project on CUDA: Y = X R / √k with R [P, k] never stored: the GEMM's second operand is a
// loader that regenerates each 16 × 64 slice of R from Philox counters in shared memory, with
// the stream layout of dtda/ops/reference.py (jl_matrix), so Rademacher entries are identical
// to the reference's and Gaussian ones agree to rounding.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "common/philox.h"
#include "cuda/common.cuh"
#include "cuda/gemm.cuh"

namespace dtda::cuda {
namespace {

constexpr const char* kOp = "jl_project";
enum Kind : int { kRademacher = 0, kGaussian = 1 };

__device__ __forceinline__ philox::Words philox_at(uint64_t seed, int64_t p, uint32_t c2, uint32_t c3) {
  const uint64_t row = static_cast<uint64_t>(p);
  return philox::philox4x32_10(static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32), c2, c3,
                               static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// R(j, p) = ±1: counter (p, j / 128, 0); bit j mod 32 of word (j mod 128) / 32 is 1 for +1.
template <typename Acc>
struct Rademacher {
  uint64_t seed;
  int64_t extent;  // k: columns of R

  __device__ void load(gemm::Slice<Acc>& s, int64_t, int64_t j0, int64_t p0, int64_t pend) const {
    static_assert(gemm::kTile == 64 && gemm::kThreads == 16 * gemm::kDepth, "one thread per 4 entries");
    // The 64 bits of columns j0 .. j0+63 (j0 is a multiple of 64, so half of one 128-bit block),
    // one Philox call per row of the slice.
    __shared__ uint32_t bits[gemm::kDepth][2];
    const int tid = static_cast<int>(threadIdx.x);
    if (tid < gemm::kDepth) {
      const philox::Words w = philox_at(seed, p0 + tid, static_cast<uint32_t>(j0 >> 7), 0u);
      const bool upper = (j0 & 127) != 0;
      bits[tid][0] = upper ? w.w[2] : w.w[0];
      bits[tid][1] = upper ? w.w[3] : w.w[1];
    }
    __syncthreads();
    const int kk = tid / 16, jj = (tid % 16) * 4;
    const bool row_ok = p0 + kk < pend;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int j = jj + c;
      Acc v = Acc(0);
      if (row_ok && j0 + j < extent) v = ((bits[kk][j >> 5] >> (j & 31)) & 1u) ? Acc(1) : Acc(-1);
      s[kk][j] = v;
    }
  }
};

// Box–Muller from the words (w0, w1): √(−2 ln u1) cos(2π u2), u1 = (w0 + 1)/2^32, u2 = w1/2^32.
__device__ __forceinline__ double box_muller(uint32_t w0, uint32_t w1, double) {
  const double u1 = (static_cast<double>(w0) + 1.0) * 0x1p-32, u2 = static_cast<double>(w1) * 0x1p-32;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

// Single precision with float32 accuracy: ln u1 for u1 near 1 comes from the exact complement
// 1 − u1 = (2^32 − 1 − w0)/2^32, where logf(u1) would lose the small value to rounding.
__device__ __forceinline__ float box_muller(uint32_t w0, uint32_t w1, float) {
  const float ln_u1 = w0 < 0x80000000u ? logf(static_cast<float>(w0 + 1u) * 0x1p-32f)
                                       : log1pf(-static_cast<float>(~w0) * 0x1p-32f);
  return sqrtf(-2.0f * ln_u1) * cospif(static_cast<float>(w1) * 0x1p-31f);
}

// R(j, p) ~ N(0, 1): counter (p, j / 2, 1); even j uses words (0, 1), odd j words (2, 3).
template <typename Acc>
struct Gaussian {
  uint64_t seed;
  int64_t extent;

  __device__ void load(gemm::Slice<Acc>& s, int64_t, int64_t j0, int64_t p0, int64_t pend) const {
    const int tid = static_cast<int>(threadIdx.x);
    const int kk = tid / 16, jj = (tid % 16) * 4;  // four columns: two Philox calls
    const int64_t p = p0 + kk;
#pragma unroll
    for (int pair = 0; pair < 2; ++pair) {
      const int j = jj + 2 * pair;
      const int64_t col = j0 + j;
      Acc even = Acc(0), odd = Acc(0);
      if (p < pend && col < extent) {
        const philox::Words w = philox_at(seed, p, static_cast<uint32_t>(col >> 1), 1u);
        even = box_muller(w.w[0], w.w[1], Acc());
        if (col + 1 < extent) odd = box_muller(w.w[2], w.w[3], Acc());
      }
      s[kk][j] = even;
      s[kk][j + 1] = odd;
    }
  }
};

struct Plan {
  int64_t rows;  // rows of x per launch (the grid's limit)
  int64_t splits;
  int64_t workspace;
};

template <typename Acc>
Plan plan(int64_t N, int64_t P, int64_t k, int device) {
  const int64_t rows = std::min(N, gemm::kMaxRows);
  const int64_t splits = gemm::plan_splits(gemm::tiles(rows) * gemm::tiles(k), P, 256, sm_count(device, kOp),
                                           std::max<int64_t>(1, workspace_budget<Acc>() / std::max<int64_t>(1, rows * k)));
  return {rows, splits, splits > 1 ? splits * rows * k : 0};
}

template <typename T, typename LoadB>
void run(std::uintptr_t x, std::uintptr_t y, std::uintptr_t workspace, int64_t workspace_size, int64_t N,
         int64_t P, int64_t k, const LoadB& r, int device, cudaStream_t stream) {
  using Acc = acc_t<T>;
  const Plan p = plan<Acc>(N, P, k, device);
  check_workspace(kOp, workspace_size, p.workspace);
  for (int64_t n0 = 0; n0 < N; n0 += p.rows) {
    const int64_t nc = std::min(p.rows, N - n0);
    Acc* y0 = as_ptr<Acc>(y) + n0 * k;
    gemm::Shape shape{nc, k, P};
    shape.splits = p.splits;
    gemm::Output<Acc> out{y0, 0, k, 1};
    if (p.splits > 1) out = gemm::Output<Acc>{as_ptr<Acc>(workspace), 0, k, 1, nc * k};
    out.alpha = Acc(1) / std::sqrt(static_cast<Acc>(k));
    gemm::run(kOp, gemm::Strided<T, Acc>{as_ptr<const T>(x) + n0 * P, 0, P, 1, nc}, r, out, shape, stream);
    if (p.splits > 1) gemm::sum_splits(kOp, out.c, p.splits, nc, k, y0, k, stream);
  }
}

}  // namespace

void bind_jl_project(pybind11::module_& m) {
  namespace py = pybind11;
  m.attr("JL_RADEMACHER") = static_cast<int>(kRademacher);
  m.attr("JL_GAUSSIAN") = static_cast<int>(kGaussian);
  m.def(
      "jl_project_workspace",
      [](int64_t N, int64_t P, int64_t k, int dtype, int device) {
        check_sizes(kOp, {{"N", N}, {"P", P}, {"k", k}});
        DeviceGuard guard(device, kOp);
        int64_t elems = 0;
        dispatch_dtype(dtype, [&](auto tag) {
          elems = plan<acc_t<typename decltype(tag)::type>>(N, P, k, device).workspace;
        });
        return elems;
      },
      py::arg("N"), py::arg("P"), py::arg("k"), py::arg("dtype"), py::arg("device"),
      "Workspace (elements of the result dtype) jl_project needs for these sizes.");
  m.def(
      "jl_project",
      [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t workspace, int64_t workspace_size, int64_t N,
         int64_t P, int64_t k, uint64_t seed, int kind, int dtype, int device, std::uintptr_t stream) {
        check_sizes(kOp, {{"N", N}, {"P", P}, {"k", k}});
        if (k < 1) throw std::invalid_argument("dtda._C_cuda.jl_project: k must be >= 1, got " + std::to_string(k));
        if (kind != kRademacher && kind != kGaussian) {
          throw std::invalid_argument("dtda._C_cuda.jl_project: kind must be JL_RADEMACHER or JL_GAUSSIAN, got " +
                                      std::to_string(kind));
        }
        DeviceGuard guard(device, kOp);
        dispatch_dtype(dtype, [&](auto tag) {
          using T = typename decltype(tag)::type;
          using Acc = acc_t<T>;
          if (kind == kRademacher) {
            run<T>(x, y, workspace, workspace_size, N, P, k, Rademacher<Acc>{seed, k}, device, as_stream(stream));
          } else {
            run<T>(x, y, workspace, workspace_size, N, P, k, Gaussian<Acc>{seed, k}, device, as_stream(stream));
          }
        });
      },
      py::arg("x"), py::arg("y"), py::arg("workspace"), py::arg("workspace_size"), py::arg("N"), py::arg("P"),
      py::arg("k"), py::arg("seed"), py::arg("kind"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "y[N, k] = x R / √k for contiguous x [N, P]; R [P, k] regenerated from Philox counters\n"
      "(seed, row, column) exactly as dtda.ops.reference.jl_matrix.");
}

}  // namespace dtda::cuda
