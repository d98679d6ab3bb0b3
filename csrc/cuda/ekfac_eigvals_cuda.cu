// ekfac_eigvals on CUDA: Λ = Σ_n (QSᵀ G_n QA)^∘2 with G_n = Σ_t g_nt a_ntᵀ.
//
// The per-token factors are rotated first (DESIGN.md: about half the flops of rotating G_n):
// ĝ = g·QS [(n,t), O] and â = a·QA [(n,t), I]. Then
//   T = 1: the rank-1 identity Λ = Σ_n ĝ_n² â_n²ᵀ, one GEMM over n of the squared factors;
//   T > 1: R_n = Σ_t ĝ_nt â_ntᵀ per example, squared and summed over n inside the GEMM.
// Examples go in chunks (workspace budget); small outputs are split into partials summed last.
#include <pybind11/pybind11.h>

#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/gemm.cuh"

namespace dtda::cuda {
namespace {

constexpr const char* kOp = "ekfac_eigvals";

struct Plan {
  bool rank1;
  int64_t chunk;
  int64_t splits;
  int64_t workspace;
};

template <typename Acc>
Plan plan(int64_t N, int64_t T_, int64_t I, int64_t O, int device) {
  const int64_t budget = workspace_budget<Acc>();
  const int64_t per = T_ * (O + I);
  int64_t chunk = std::clamp<int64_t>(budget / std::max<int64_t>(1, per), 1, std::max<int64_t>(1, N));
  chunk = std::min(chunk, std::max<int64_t>(1, gemm::kMaxRows / std::max<int64_t>(1, T_)));  // rows of the rotations
  const bool rank1 = T_ == 1;
  const int64_t splits = gemm::plan_splits(gemm::tiles(O) * gemm::tiles(I), std::min(chunk, N),
                                           rank1 ? 256 : 4, sm_count(device, kOp),
                                           std::max<int64_t>(1, budget / std::max<int64_t>(1, O * I)));
  return {rank1, chunk, splits, chunk * per + (splits > 1 ? splits * O * I : 0)};
}

template <typename T>
void run(std::uintptr_t a_, std::uintptr_t g_, std::uintptr_t QA_, std::uintptr_t QS_, std::uintptr_t out_,
         std::uintptr_t workspace, int64_t workspace_size, int64_t N, int64_t T_, int64_t I, int64_t O,
         int device, cudaStream_t stream) {
  using Acc = acc_t<T>;
  const Plan p = plan<Acc>(N, T_, I, O, device);
  check_workspace(kOp, workspace_size, p.workspace);
  const T *a = as_ptr<const T>(a_), *g = as_ptr<const T>(g_);
  const T *QA = as_ptr<const T>(QA_), *QS = as_ptr<const T>(QS_);
  Acc* out = as_ptr<Acc>(out_);
  Acc* U = as_ptr<Acc>(workspace);  // ĝ [chunk·T, O]
  Acc* V = U + p.chunk * T_ * O;     // â [chunk·T, I]
  Acc* part = V + p.chunk * T_ * I;  // [splits, O, I] when splits > 1
  gemm::Output<Acc> result{out, 0, I, 1};
  if (p.splits > 1) result = gemm::Output<Acc>{part, 0, I, 1, O * I};

  // At least one pass, so that N = 0 writes zeros.
  for (int64_t n0 = 0; n0 == 0 || n0 < N; n0 += p.chunk) {
    const int64_t nc = std::min(p.chunk, N - n0), rows = nc * T_;
    // ĝ[r, o'] = Σ_o g[r, o] QS[o, o'] and â[r, i'] = Σ_i a[r, i] QA[i, i'].
    gemm::run(kOp, gemm::Strided<T, Acc>{g + n0 * T_ * O, 0, O, 1, rows}, gemm::Strided<T, Acc>{QS, 0, 1, O, O},
              gemm::Output<Acc>{U, 0, O, 1}, gemm::Shape{rows, O, O}, stream);
    gemm::run(kOp, gemm::Strided<T, Acc>{a + n0 * T_ * I, 0, I, 1, rows}, gemm::Strided<T, Acc>{QA, 0, 1, I, I},
              gemm::Output<Acc>{V, 0, I, 1}, gemm::Shape{rows, I, I}, stream);
    result.combine = n0 == 0 ? gemm::Combine::Store : gemm::Combine::Add;
    if (p.rank1) {
      gemm::Strided<Acc, Acc> A{U, 0, 1, O, O}, B{V, 0, 1, I, I};  // (i, k = n)
      A.square = B.square = true;
      gemm::Shape shape{O, I, nc};
      shape.splits = p.splits;
      gemm::run(kOp, A, B, result, shape, stream);
    } else {
      const gemm::Strided<Acc, Acc> A{U, T_ * O, 1, O, O}, B{V, T_ * I, 1, I, I};  // (b = n, i, k = t)
      gemm::Shape shape{O, I, T_};
      shape.batch = nc;
      shape.splits = p.splits;
      shape.reduce_batch = true;
      gemm::run(kOp, A, B, result, shape, stream);
    }
  }
  if (p.splits > 1) gemm::sum_splits(kOp, part, p.splits, O, I, out, I, stream);
}

}  // namespace

void bind_ekfac_eigvals(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "ekfac_eigvals_workspace",
      [](int64_t N, int64_t T, int64_t I, int64_t O, int dtype, int device) {
        check_sizes(kOp, {{"N", N}, {"T", T}, {"I", I}, {"O", O}});
        DeviceGuard guard(device, kOp);
        int64_t elems = 0;
        dispatch_dtype(dtype, [&](auto tag) {
          elems = plan<acc_t<typename decltype(tag)::type>>(N, T, I, O, device).workspace;
        });
        return elems;
      },
      py::arg("N"), py::arg("T"), py::arg("I"), py::arg("O"), py::arg("dtype"), py::arg("device"),
      "Workspace (elements of the result dtype) ekfac_eigvals needs for these sizes.");
  m.def(
      "ekfac_eigvals",
      [](std::uintptr_t a, std::uintptr_t g, std::uintptr_t QA, std::uintptr_t QS, std::uintptr_t out,
         std::uintptr_t workspace, int64_t workspace_size, int64_t N, int64_t T, int64_t I, int64_t O, int dtype,
         int device, std::uintptr_t stream) {
        check_sizes(kOp, {{"N", N}, {"T", T}, {"I", I}, {"O", O}});
        DeviceGuard guard(device, kOp);
        dispatch_dtype(dtype, [&](auto tag) {
          run<typename decltype(tag)::type>(a, g, QA, QS, out, workspace, workspace_size, N, T, I, O, device,
                                            as_stream(stream));
        });
      },
      py::arg("a"), py::arg("g"), py::arg("QA"), py::arg("QS"), py::arg("out"), py::arg("workspace"),
      py::arg("workspace_size"), py::arg("N"), py::arg("T"), py::arg("I"), py::arg("O"), py::arg("dtype"),
      py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "out[O, I] = Σ_n (QSᵀ G_n QA)^∘2, G_n = Σ_t g[n, t] a[n, t]ᵀ, for contiguous a [N, T, I],\n"
      "g [N, T, O], QA [I, I], QS [O, O].");
}

}  // namespace dtda::cuda
