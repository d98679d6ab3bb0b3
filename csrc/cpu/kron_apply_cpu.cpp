// kron_apply: out_q = QS (scale ∘ (QSᵀ V_q QA)) QAᵀ for contiguous V [Q,O,I], QA [I,I], QS [O,O],
// scale [O,I]; out [Q,O,I]. Four GEMMs per query (4·Q·O·I·(O+I) FLOPs) with the elementwise
// scale fused between them; each query's intermediates ([O, I] twice) stay in the thread's cache.
// With Q ≥ threads the queries are split over OpenMP threads, otherwise each query's columns are;
// BLAS runs single-threaded inside (OpenBLAS's own threads stall badly on a busy machine).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>


#include "common/dtype.h"
#include "cpu/blas.h"
#include "cpu/dispatch.h"

namespace py = pybind11;

namespace dtda::cpu {
namespace {

// One query: W = V_q QA; X = scale ∘ (QSᵀ W); W = QS X; out_q = W QAᵀ.
template <typename T>
void apply_one(const T* V, const T* QA, const T* QS, const T* scale, T* out, int64_t O, int64_t I,
               T* W, T* X) {
  blas::gemm(false, false, O, I, I, T(1), V, I, QA, I, T(0), W, I);
  blas::gemm(true, false, O, I, O, T(1), QS, O, W, I, T(0), X, I);
  for (int64_t k = 0; k < O * I; ++k) X[k] *= scale[k];
  blas::gemm(false, false, O, I, O, T(1), QS, O, X, I, T(0), W, I);
  blas::gemm(false, true, O, I, I, T(1), W, I, QA, I, T(0), out, I);
}

template <typename T>
void kron_apply(const T* V, const T* QA, const T* QS, const T* scale, T* out, int64_t Q, int64_t O,
                int64_t I, int threads) {
  if (Q == 0 || O == 0 || I == 0) return;
  const int64_t OI = O * I;
  const int workers = team(4.0 * Q * OI * (O + I), std::max(Q, I), threads);
  if (Q >= workers) {
#pragma omp parallel num_threads(workers)
    {
      std::vector<T> W(OI), X(OI);
#pragma omp for schedule(dynamic)
      for (int64_t q = 0; q < Q; ++q)
        apply_one(V + q * OI, QA, QS, scale, out + q * OI, O, I, W.data(), X.data());
    }
  } else {
    // Fewer queries than threads: split each query's columns c. The first three steps only
    // touch columns c (W[:, c] = V QA[:, c], X[:, c] = scale ∘ QSᵀ W[:, c], Y[:, c] = QS X[:, c]);
    // the last, out[:, c] = Y QA[c, :]ᵀ, reads all of Y, hence the barrier.
    std::vector<T> W(OI), X(OI);
    for (int64_t q = 0; q < Q; ++q) {
#pragma omp parallel num_threads(workers)
      {
const int w = thread_id();
        const int64_t c0 = I * w / workers, nc = I * (w + 1) / workers - c0;
        if (nc > 0) {
          blas::gemm(false, false, O, nc, I, T(1), V + q * OI, I, QA + c0, I, T(0), W.data() + c0, I);
          blas::gemm(true, false, O, nc, O, T(1), QS, O, W.data() + c0, I, T(0), X.data() + c0, I);
          for (int64_t o = 0; o < O; ++o)
            for (int64_t c = c0; c < c0 + nc; ++c) X[o * I + c] *= scale[o * I + c];
          blas::gemm(false, false, O, nc, O, T(1), QS, O, X.data() + c0, I, T(0), W.data() + c0, I);
        }
#pragma omp barrier
        if (nc > 0)
          blas::gemm(false, true, O, nc, I, T(1), W.data(), I, QA + c0 * I, I, T(0), out + q * OI + c0, I);
      }
    }
  }
}

}  // namespace

void bind_kron_apply(py::module_& m) {
  m.def(
      "kron_apply",
      [](std::uintptr_t V, std::uintptr_t QA, std::uintptr_t QS, std::uintptr_t scale, std::uintptr_t out,
         int64_t Q, int64_t O, int64_t I, int dtype, int threads) {
        blas::check_sizes("kron_apply", {{"I", I}, {"O", O}});
        with_float_type(dtype, "kron_apply", [&](auto zero) {
          using F = decltype(zero);
          kron_apply(as_ptr<const F>(V), as_ptr<const F>(QA), as_ptr<const F>(QS), as_ptr<const F>(scale),
                     as_ptr<F>(out), Q, O, I, threads);
        });
      },
      py::arg("V"), py::arg("QA"), py::arg("QS"), py::arg("scale"), py::arg("out"), py::arg("Q"),
      py::arg("O"), py::arg("I"), py::arg("dtype"), py::arg("num_threads"),
      py::call_guard<py::gil_scoped_release>(),
      "out[q] = QS (scale ∘ (QSᵀ V[q] QA)) QAᵀ for contiguous V [Q,O,I], QA [I,I], QS [O,O], scale [O,I].");
}

}  // namespace dtda::cpu
