// kron_apply on CUDA: out_q = QS (scale ∘ (QSᵀ V_q QA)) QAᵀ as four batched GEMMs over q,
// ping-ponging between `out` and one workspace of the same size; the scale is fused into the
// epilogue of the second.
#include <pybind11/pybind11.h>

#include "cuda/common.cuh"
#include "cuda/gemm.cuh"

namespace dtda::cuda {
namespace {

constexpr const char* kOp = "kron_apply";

template <typename T>
void run(std::uintptr_t V_, std::uintptr_t QA_, std::uintptr_t QS_, std::uintptr_t scale_, std::uintptr_t out_,
         std::uintptr_t workspace, int64_t workspace_size, int64_t Q, int64_t O, int64_t I, cudaStream_t stream) {
  using Acc = acc_t<T>;
  check_workspace(kOp, workspace_size, Q * O * I);
  const T *V = as_ptr<const T>(V_), *QA = as_ptr<const T>(QA_), *QS = as_ptr<const T>(QS_);
  Acc* out = as_ptr<Acc>(out_);
  Acc* ws = as_ptr<Acc>(workspace);
  const int64_t OI = O * I;
  gemm::Shape right{O, I, I};  // [O, I] · [I, I] per q
  right.batch = Q;
  gemm::Shape left{O, I, O};  // [O, O] · [O, I] per q
  left.batch = Q;
  const gemm::Output<Acc> to_ws{ws, OI, I, 1}, to_out{out, OI, I, 1};

  // 1. ws_q = V_q QA: (o, i) = Σ_j V[q, o, j] QA[j, i].
  gemm::run(kOp, gemm::Strided<T, Acc>{V, OI, I, 1, O}, gemm::Strided<T, Acc>{QA, 0, 1, I, I}, to_ws, right,
            stream);
  // 2. out_q = scale ∘ (QSᵀ ws_q): (o, i) = scale[o, i] Σ_p QS[p, o] ws[q, p, i].
  gemm::Output<Acc> scaled = to_out;
  scaled.scale = as_ptr<const Acc>(scale_);
  scaled.ssm = I;
  scaled.ssn = 1;
  gemm::run(kOp, gemm::Strided<T, Acc>{QS, 0, 1, O, O}, gemm::Strided<Acc, Acc>{ws, OI, 1, I, I}, scaled, left,
            stream);
  // 3. ws_q = out_q QAᵀ: (o, i) = Σ_j out[q, o, j] QA[i, j].
  gemm::run(kOp, gemm::Strided<Acc, Acc>{out, OI, I, 1, O}, gemm::Strided<T, Acc>{QA, 0, I, 1, I}, to_ws, right,
            stream);
  // 4. out_q = QS ws_q: (o, i) = Σ_p QS[o, p] ws[q, p, i].
  gemm::run(kOp, gemm::Strided<T, Acc>{QS, 0, O, 1, O}, gemm::Strided<Acc, Acc>{ws, OI, 1, I, I}, to_out, left,
            stream);
}

}  // namespace

void bind_kron_apply(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "kron_apply",
      [](std::uintptr_t V, std::uintptr_t QA, std::uintptr_t QS, std::uintptr_t scale, std::uintptr_t out,
         std::uintptr_t workspace, int64_t workspace_size, int64_t Q, int64_t O, int64_t I, int dtype, int device,
         std::uintptr_t stream) {
        check_sizes(kOp, {{"Q", Q}, {"O", O}, {"I", I}});
        DeviceGuard guard(device, kOp);
        dispatch_dtype(dtype, [&](auto tag) {
          run<typename decltype(tag)::type>(V, QA, QS, scale, out, workspace, workspace_size, Q, O, I,
                                            as_stream(stream));
        });
      },
      py::arg("V"), py::arg("QA"), py::arg("QS"), py::arg("scale"), py::arg("out"), py::arg("workspace"),
      py::arg("workspace_size"), py::arg("Q"), py::arg("O"), py::arg("I"), py::arg("dtype"), py::arg("device"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "out[Q, O, I] = QS (scale ∘ (QSᵀ V[q] QA)) QAᵀ for contiguous V [Q, O, I], QA [I, I], QS [O, O]\n"
      "of `dtype` and scale [O, I] of the result dtype; workspace: Q·O·I result-dtype elements.");
}

}  // namespace dtda::cuda
