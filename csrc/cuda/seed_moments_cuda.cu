// seed_moments on CUDA: per (n, q), statistics over K seeds of m [K, Q] and δ [K, N, Q].
// One thread per (n, q) loops over the seeds: sums in float64 (two passes, centred), the K
// values m + δ kept in a per-thread array and insertion-sorted for the sorted-sample W2. The
// sorted columns of m are shared by every n and sorted once, into the workspace.
//
// Limit: K ≤ kMaxSeeds (256); the per-thread array is sized by the smallest of 32, 64, 128,
// 256 that holds K. Larger K raises ValueError (use the torch backend).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "cuda/common.cuh"

namespace dtda::cuda {
namespace {

constexpr const char* kOp = "seed_moments";
constexpr int64_t kMaxSeeds = 256;
constexpr int kBlock = 128;

template <typename Acc>
__device__ void insertion_sort(Acc* v, int64_t K) {
  for (int64_t i = 1; i < K; ++i) {
    const Acc x = v[i];
    int64_t j = i - 1;
    while (j >= 0 && v[j] > x) {
      v[j + 1] = v[j];
      --j;
    }
    v[j + 1] = x;
  }
}

// sorted[k·Q + q] = k-th smallest of m[:, q].
template <int Cap, typename T, typename Acc>
__global__ void sort_columns(const T* m, Acc* sorted, int64_t K, int64_t Q) {
  Acc v[Cap];
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < Q;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    for (int64_t k = 0; k < K; ++k) v[k] = to_acc<Acc>(m[k * Q + q]);
    insertion_sort(v, K);
    for (int64_t k = 0; k < K; ++k) sorted[k * Q + q] = v[k];
  }
}

template <typename Acc>
struct Outputs {
  Acc *mean, *var, *cov, *var_increase, *w2;
};

template <int Cap, typename T, typename Acc>
__global__ void moments(const T* m, const T* delta, const Acc* sorted_m, Outputs<Acc> out, int64_t K, int64_t N,
                        int64_t Q) {
  Acc after[Cap];  // m + δ in the result dtype, as the reference forms it
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < N * Q;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / Q, q = idx % Q;
    double sum_m = 0, sum_d = 0, sum_a = 0;
    for (int64_t k = 0; k < K; ++k) {
      const Acc mk = to_acc<Acc>(m[k * Q + q]), dk = to_acc<Acc>(delta[(k * N + n) * Q + q]);
      after[k] = mk + dk;
      sum_m += mk;
      sum_d += dk;
      sum_a += after[k];
    }
    const double mean_m = sum_m / K, mean_d = sum_d / K, mean_a = sum_a / K;
    double ss_d = 0, ss_md = 0, ss_a = 0, ss_m = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double mc = static_cast<double>(to_acc<Acc>(m[k * Q + q])) - mean_m;
      const double dc = static_cast<double>(to_acc<Acc>(delta[(k * N + n) * Q + q])) - mean_d;
      const double ac = static_cast<double>(after[k]) - mean_a;
      ss_d += dc * dc;
      ss_md += mc * dc;
      ss_a += ac * ac;
      ss_m += mc * mc;
    }
    insertion_sort(after, K);
    double w2 = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double diff = static_cast<double>(after[k]) - static_cast<double>(sorted_m[k * Q + q]);
      w2 += diff * diff;
    }
    const double dof = static_cast<double>(K - 1);
    out.mean[idx] = static_cast<Acc>(mean_d);
    out.var[idx] = static_cast<Acc>(ss_d / dof);
    out.cov[idx] = static_cast<Acc>(ss_md / dof);
    out.var_increase[idx] = static_cast<Acc>(ss_a / dof - ss_m / dof);
    out.w2[idx] = static_cast<Acc>(sqrt(w2 / K));
  }
}

unsigned blocks_for(int64_t threads) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(threads, kBlock), 1, int64_t{1} << 20));
}

// Calls f(std::integral_constant<int, Cap>) with the smallest per-thread capacity holding K.
template <typename F>
void dispatch_capacity(int64_t K, F&& f) {
  if (K <= 32) f(std::integral_constant<int, 32>{});
  else if (K <= 64) f(std::integral_constant<int, 64>{});
  else if (K <= 128) f(std::integral_constant<int, 128>{});
  else f(std::integral_constant<int, 256>{});
}

template <typename T>
void run(std::uintptr_t m, std::uintptr_t delta, const Outputs<acc_t<T>>& out, std::uintptr_t workspace,
         int64_t workspace_size, int64_t K, int64_t N, int64_t Q, cudaStream_t stream) {
  using Acc = acc_t<T>;
  check_workspace(kOp, workspace_size, K * Q);
  Acc* sorted = as_ptr<Acc>(workspace);
  dispatch_capacity(K, [&](auto cap) {
    constexpr int Cap = decltype(cap)::value;
    if (Q > 0) {
      sort_columns<Cap, T, Acc><<<blocks_for(Q), kBlock, 0, stream>>>(as_ptr<const T>(m), sorted, K, Q);
      check_launch(kOp, "sort_columns");
    }
    if (N * Q > 0) {
      moments<Cap, T, Acc><<<blocks_for(N * Q), kBlock, 0, stream>>>(as_ptr<const T>(m), as_ptr<const T>(delta),
                                                                     sorted, out, K, N, Q);
      check_launch(kOp, "moments");
    }
  });
}

}  // namespace

void bind_seed_moments(pybind11::module_& m) {
  namespace py = pybind11;
  m.attr("SEED_MOMENTS_MAX_K") = kMaxSeeds;
  m.def(
      "seed_moments",
      [](std::uintptr_t m_, std::uintptr_t delta, std::uintptr_t mean, std::uintptr_t var, std::uintptr_t cov,
         std::uintptr_t var_increase, std::uintptr_t w2, std::uintptr_t workspace, int64_t workspace_size,
         int64_t K, int64_t N, int64_t Q, int dtype, int device, std::uintptr_t stream) {
        check_sizes(kOp, {{"N", N}, {"Q", Q}});
        if (K < 2 || K > kMaxSeeds) {
          throw std::invalid_argument("dtda._C_cuda.seed_moments: K must be in [2, " + std::to_string(kMaxSeeds) +
                                      "] (seeds sorted per thread), got K = " + std::to_string(K) +
                                      "; use the torch backend for more seeds");
        }
        DeviceGuard guard(device, kOp);
        dispatch_dtype(dtype, [&](auto tag) {
          using T = typename decltype(tag)::type;
          using Acc = acc_t<T>;
          const Outputs<Acc> out{as_ptr<Acc>(mean), as_ptr<Acc>(var), as_ptr<Acc>(cov), as_ptr<Acc>(var_increase),
                                 as_ptr<Acc>(w2)};
          run<T>(m_, delta, out, workspace, workspace_size, K, N, Q, as_stream(stream));
        });
      },
      py::arg("m"), py::arg("delta"), py::arg("mean"), py::arg("var"), py::arg("cov"), py::arg("var_increase"),
      py::arg("w2"), py::arg("workspace"), py::arg("workspace_size"), py::arg("K"), py::arg("N"), py::arg("Q"),
      py::arg("dtype"), py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "Per (n, q) over K seeds of contiguous m [K, Q] and delta [K, N, Q]: mean, var, cov(m, δ),\n"
      "var(m + δ) − var(m) and the sorted-sample W2, each [N, Q] of the result dtype (ddof = 1).\n"
      "workspace: K·Q result-dtype elements. K ≤ SEED_MOMENTS_MAX_K.");
}

}  // namespace dtda::cuda
