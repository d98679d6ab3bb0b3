// ekfac_eigvals: the EK-FAC eigenvalue correction Λ[O,I] = Σ_n (QSᵀ G_n QA)^∘2,
// G_n = Σ_t g_nt a_ntᵀ, for contiguous a [N,T,I], g [N,T,O], QA [I,I], QS [O,O].
//
// QSᵀ G_n QA = Σ_t g̃_nt ã_ntᵀ with the rotated tokens g̃ = g QS, ã = a QA (as rows), so:
//   T = 1:   Λ = (g̃^∘2)ᵀ (ã^∘2), one GEMM over all examples after the two rotations.
//   rotate:  per example block rotate the tokens, then G̃_n = g̃_nᵀ ã_n and Λ += G̃_n^∘2.
//            2·N·T·(O² + I² + O·I) FLOPs.
//   form:    G_n = g_nᵀ a_n first, then QSᵀ G_n QA; cheaper when T exceeds about O·I(O+I)/(O²+I²).
//            2·N·(T·O·I + O²·I + O·I²) FLOPs.
// Examples are split statically over OpenMP threads (single-threaded BLAS inside: OpenBLAS's own
// threads stall badly on a busy machine), each with its own [O, I] accumulator, so the sum order
// (hence the result) is fixed for a given thread count; no [N, O, I] tensor is formed.
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

constexpr int64_t kTileBytes = int64_t{4} << 20;  // rotated-token block per thread

// out[size] = Σ over examples [0, N) of body's contributions: each of `workers` threads takes a
// contiguous range of examples and calls body(lo, hi, acc) to add them into its own zeroed
// accumulator (thread 0's is out); the others are added at the end. Static ranges: the sum order,
// hence the result, is fixed for a given thread count. BLAS runs single-threaded inside.
template <typename T, typename Body>
void sum_over_threads(T* out, int64_t size, int64_t N, int workers, int threads, Body&& body) {
  std::vector<T> partial((workers - 1) * size);
#pragma omp parallel num_threads(workers)
  {
const int w = thread_id();
    T* acc = w == 0 ? out : partial.data() + (w - 1) * size;
    std::fill(acc, acc + size, T(0));
    body(N * w / workers, N * (w + 1) / workers, acc);
  }
  for (int w = 1; w < workers; ++w) {
    const T* p = partial.data() + (w - 1) * size;
    for (int64_t k = 0; k < size; ++k) out[k] += p[k];
  }
}

// T = 1: rows are examples; rotate a block of rows, square, and add (g̃^∘2)ᵀ (ã^∘2) with one GEMM.
template <typename T>
void ekfac_rank_one(const T* a, const T* g, const T* QA, const T* QS, T* out, int64_t N, int64_t I,
                    int64_t O, int threads) {
  const int64_t rb = std::min<int64_t>(std::max<int64_t>(kTileBytes / int64_t(sizeof(T)) / (I + O), 64), N);
  const double flops = 2.0 * N * (double(I) * I + double(O) * O + double(O) * I);
  sum_over_threads(out, O * I, N, team(flops, (N + rb - 1) / rb, threads), threads,
                   [&](int64_t lo, int64_t hi, T* acc) {
    std::vector<T> gt(rb * O), at(rb * I);
    for (int64_t r0 = lo; r0 < hi; r0 += rb) {
      const int64_t rk = std::min(rb, hi - r0);
      blas::gemm(false, false, rk, O, O, T(1), g + r0 * O, O, QS, O, T(0), gt.data(), O);
      blas::gemm(false, false, rk, I, I, T(1), a + r0 * I, I, QA, I, T(0), at.data(), I);
      for (int64_t k = 0; k < rk * O; ++k) gt[k] *= gt[k];
      for (int64_t k = 0; k < rk * I; ++k) at[k] *= at[k];
      blas::gemm(true, false, O, I, rk, T(1), gt.data(), O, at.data(), I, T(1), acc, I);
    }
  });
}

// T > 1: per example block, either rotate the tokens and form G̃_n = g̃_nᵀ ã_n, or form G_n and
// rotate it; then add G̃_n^∘2.
template <typename T>
void ekfac_tokens(const T* a, const T* g, const T* QA, const T* QS, T* out, int64_t N, int64_t Tn,
                  int64_t I, int64_t O, int threads, bool rotate_first) {
  const int64_t OI = O * I;
  const int64_t nb = std::clamp<int64_t>(kTileBytes / int64_t(sizeof(T)) / (Tn * (I + O)), 1, N);
  const double flops = rotate_first ? 2.0 * N * Tn * (double(O) * O + double(I) * I + double(O) * I)
                                    : 2.0 * N * (double(Tn) * O * I + double(O) * O * I + double(O) * I * I);
  sum_over_threads(out, OI, N, team(flops, N, threads), threads, [&](int64_t lo, int64_t hi, T* acc) {
    std::vector<T> gt(rotate_first ? nb * Tn * O : 0), at(rotate_first ? nb * Tn * I : 0);
    std::vector<T> G(OI), H(rotate_first ? 0 : OI);
    for (int64_t n0 = lo; n0 < hi; n0 += nb) {
      const int64_t nk = std::min(nb, hi - n0), rows = nk * Tn;
      if (rotate_first) {
        blas::gemm(false, false, rows, O, O, T(1), g + n0 * Tn * O, O, QS, O, T(0), gt.data(), O);
        blas::gemm(false, false, rows, I, I, T(1), a + n0 * Tn * I, I, QA, I, T(0), at.data(), I);
      }
      for (int64_t n = 0; n < nk; ++n) {
        if (rotate_first) {
          blas::gemm(true, false, O, I, Tn, T(1), gt.data() + n * Tn * O, O, at.data() + n * Tn * I, I,
                     T(0), G.data(), I);
        } else {
          const int64_t row = (n0 + n) * Tn;
          blas::gemm(true, false, O, I, Tn, T(1), g + row * O, O, a + row * I, I, T(0), H.data(), I);
          blas::gemm(true, false, O, I, O, T(1), QS, O, H.data(), I, T(0), G.data(), I);
          blas::gemm(false, false, O, I, I, T(1), G.data(), I, QA, I, T(0), H.data(), I);
        }
        const T* R = rotate_first ? G.data() : H.data();  // QSᵀ G_n QA
        for (int64_t k = 0; k < OI; ++k) acc[k] += R[k] * R[k];
      }
    }
  });
}

template <typename T>
void ekfac_eigvals(const T* a, const T* g, const T* QA, const T* QS, T* out, int64_t N, int64_t Tn,
                   int64_t I, int64_t O, int threads) {
  if (I == 0 || O == 0) return;
  if (N == 0 || Tn == 0) return std::fill(out, out + O * I, T(0));
  if (Tn == 1) return ekfac_rank_one(a, g, QA, QS, out, N, I, O, threads);
  const double rotate = double(Tn) * (double(O) * O + double(I) * I);
  const double form = double(O) * I * (double(O) + I);
  ekfac_tokens(a, g, QA, QS, out, N, Tn, I, O, threads, rotate <= form);
}

}  // namespace

void bind_ekfac_eigvals(py::module_& m) {
  m.def(
      "ekfac_eigvals",
      [](std::uintptr_t a, std::uintptr_t g, std::uintptr_t QA, std::uintptr_t QS, std::uintptr_t out,
         int64_t N, int64_t T, int64_t I, int64_t O, int dtype, int threads) {
        blas::check_sizes("ekfac_eigvals", {{"T", T}, {"I", I}, {"O", O}});
        with_float_type(dtype, "ekfac_eigvals", [&](auto zero) {
          using F = decltype(zero);
          ekfac_eigvals(as_ptr<const F>(a), as_ptr<const F>(g), as_ptr<const F>(QA), as_ptr<const F>(QS),
                        as_ptr<F>(out), N, T, I, O, threads);
        });
      },
      py::arg("a"), py::arg("g"), py::arg("QA"), py::arg("QS"), py::arg("out"), py::arg("N"),
      py::arg("T"), py::arg("I"), py::arg("O"), py::arg("dtype"), py::arg("num_threads"),
      py::call_guard<py::gil_scoped_release>(),
      "out[O,I] = Σ_n (QSᵀ (Σ_t g[n,t] a[n,t]ᵀ) QA)^∘2 for contiguous inputs.");
}

}  // namespace dtda::cpu
