// kron_covariance on CUDA: C = Σ_{n,t} w_nt x_nt x_ntᵀ = Xᵀ diag(w) X with X = x viewed as
// [N·T, D]. One symmetric GEMM (upper tiles, mirrored); when D is small the N·T reduction is
// split into partials that a second kernel sums in a fixed order.
#include <pybind11/pybind11.h>

#include "cuda/common.cuh"
#include "cuda/gemm.cuh"

namespace dtda::cuda {
namespace {

constexpr const char* kOp = "kron_covariance";

struct Plan {
  int64_t splits;
  int64_t workspace;  // accumulator elements
};

template <typename Acc>
Plan plan(int64_t rows, int64_t D, int device) {
  const int64_t t = gemm::tiles(D);
  const int64_t dd = std::max<int64_t>(1, D * D);
  const int64_t splits = gemm::plan_splits(t * (t + 1) / 2, rows, 256, sm_count(device, kOp),
                                           std::max<int64_t>(1, workspace_budget<Acc>() / dd));
  return {splits, splits > 1 ? splits * D * D : 0};
}

template <typename T>
void run(std::uintptr_t x, std::uintptr_t mask, std::uintptr_t out, std::uintptr_t workspace,
         int64_t workspace_size, int64_t N, int64_t T_, int64_t D, int device, cudaStream_t stream) {
  using Acc = acc_t<T>;
  const int64_t rows = N * T_;
  const Plan p = plan<Acc>(rows, D, device);
  check_workspace(kOp, workspace_size, p.workspace);
  // A(m, r) = x[r, m] and B(n, r) = w_r x[r, n]: the contiguous index is i, so loads walk D.
  // Both operands skip rows with w_r = 0 (masked positions are not read, NaN there stays out).
  gemm::Strided<T, Acc> a{as_ptr<const T>(x), 0, 1, D, D};
  a.gate = as_ptr<const Acc>(mask);  // null: every row read
  gemm::Strided<T, Acc> b = a;
  b.weight = as_ptr<const Acc>(mask);  // null: all ones
  gemm::Shape shape{D, D, rows};
  shape.splits = p.splits;
  shape.symmetric = true;
  gemm::Output<Acc> o{as_ptr<Acc>(out), 0, D, 1};
  if (p.splits > 1) {
    o.c = as_ptr<Acc>(workspace);
    o.ss = D * D;
  }
  gemm::run(kOp, a, b, o, shape, stream);
  if (p.splits > 1) gemm::sum_splits(kOp, o.c, p.splits, D, D, as_ptr<Acc>(out), D, stream);
}

}  // namespace

void bind_kron_covariance(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "kron_covariance_workspace",
      [](int64_t N, int64_t T, int64_t D, int dtype, int device) {
        check_sizes(kOp, {{"N", N}, {"T", T}, {"D", D}});
        DeviceGuard guard(device, kOp);
        int64_t elems = 0;
        dispatch_dtype(dtype, [&](auto tag) {
          elems = plan<acc_t<typename decltype(tag)::type>>(N * T, D, device).workspace;
        });
        return elems;
      },
      py::arg("N"), py::arg("T"), py::arg("D"), py::arg("dtype"), py::arg("device"),
      "Workspace (elements of the result dtype) kron_covariance needs for these sizes.");
  m.def(
      "kron_covariance",
      [](std::uintptr_t x, std::uintptr_t mask, std::uintptr_t out, std::uintptr_t workspace,
         int64_t workspace_size, int64_t N, int64_t T, int64_t D, int dtype, int device,
         std::uintptr_t stream) {
        check_sizes(kOp, {{"N", N}, {"T", T}, {"D", D}});
        DeviceGuard guard(device, kOp);
        dispatch_dtype(dtype, [&](auto tag) {
          run<typename decltype(tag)::type>(x, mask, out, workspace, workspace_size, N, T, D, device,
                                            as_stream(stream));
        });
      },
      py::arg("x"), py::arg("mask"), py::arg("out"), py::arg("workspace"), py::arg("workspace_size"),
      py::arg("N"), py::arg("T"), py::arg("D"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "out[D, D] = Σ_{n,t} mask[n, t] x[n, t] x[n, t]ᵀ for contiguous x [N, T, D]; mask is a\n"
      "contiguous [N, T] weight array of the result dtype, or 0 for all ones.");
}

}  // namespace dtda::cuda
