// kron_covariance: C[D,D] = Σ_r w_r x_r x_rᵀ over the rows r = (n, t) of contiguous x [N·T, D].
//
// Without a mask this is one symmetric rank-k update (syrk, half the FLOPs of a GEMM). With a
// mask the weighted rows are gathered in blocks: zero weights are skipped, and a row with weight
// w is copied as √|w| x_r into a block that syrk adds with sign(w), so negative float weights stay
// exact up to rounding and bool masks copy rows unscaled. Rows with weight 0 (or false) are never
// read, so NaN or Inf in masked positions does not reach C; a NaN weight makes C NaN. syrk writes the upper triangle; the
// lower one is mirrored at the end. Rows are split over OpenMP threads with private accumulators
// and single-threaded BLAS (OpenBLAS's own threads stall badly on a busy machine).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
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

constexpr int64_t kBlockBytes = int64_t{4} << 20;  // gathered rows per syrk call

enum class Mask : int { None = 0, Bool = 1, Weight = 2 };

// Gathers √|w| x_r rows of one sign and flushes them into C with syrk(alpha = ±1).
template <typename T>
struct SignedBlock {
  std::vector<T> rows;
  int64_t count = 0, capacity, D;
  T sign;
  T* C;
  SignedBlock(int64_t capacity, int64_t D, T sign, T* C) : rows(capacity * D), capacity(capacity), D(D), sign(sign), C(C) {}
  void add(const T* x, T s) {
    T* dst = rows.data() + count * D;
    for (int64_t d = 0; d < D; ++d) dst[d] = s * x[d];
    if (++count == capacity) flush();
  }
  void flush() {
    if (count > 0) blas::syrk(true, true, D, count, sign, rows.data(), D, T(1), C, D);
    count = 0;
  }
};

template <typename T>
void kron_covariance(const T* x, Mask kind, const void* mask, T* C, int64_t R, int64_t D, int threads) {
  if (D == 0) return;
  const int64_t capacity = std::max<int64_t>(64, kBlockBytes / int64_t(sizeof(T)) / D);
  const int workers = team(double(R) * D * D, (R + capacity - 1) / capacity, threads);
  const bool* keep = static_cast<const bool*>(mask);
  const T* weight = static_cast<const T*>(mask);
  std::vector<T> partial((workers - 1) * D * D);
  // Each thread adds its contiguous range of rows into its own upper triangle (thread 0's is C).
#pragma omp parallel num_threads(workers)
  {
const int w = thread_id();
    T* acc = w == 0 ? C : partial.data() + (w - 1) * D * D;
    std::fill(acc, acc + D * D, T(0));
    const int64_t lo = R * w / workers, hi = R * (w + 1) / workers;
    if (kind == Mask::None) {
      for (int64_t r0 = lo; r0 < hi; r0 += capacity)  // bounded k keeps syrk's 32-bit sizes valid
        blas::syrk(true, true, D, std::min(capacity, hi - r0), T(1), x + r0 * D, D, T(1), acc, D);
    } else {
      SignedBlock<T> pos(capacity, D, T(1), acc), neg(kind == Mask::Weight ? capacity : 0, D, T(-1), acc);
      for (int64_t r = lo; r < hi; ++r) {
        if (kind == Mask::Bool) {
          if (keep[r]) pos.add(x + r * D, T(1));
        } else if (weight[r] > 0) {
          pos.add(x + r * D, std::sqrt(weight[r]));
        } else if (weight[r] < 0) {
          neg.add(x + r * D, std::sqrt(-weight[r]));
        } else if (std::isnan(weight[r])) {
          pos.add(x + r * D, weight[r]);  // a NaN weight is not zero: it propagates, as in the reference
        }
      }
      pos.flush();
      if (kind == Mask::Weight) neg.flush();
    }
  }
  for (int w = 1; w < workers; ++w) {
    const T* p = partial.data() + (w - 1) * D * D;
    for (int64_t i = 0; i < D; ++i)
      for (int64_t j = i; j < D; ++j) C[i * D + j] += p[i * D + j];
  }
  for (int64_t i = 1; i < D; ++i)
    for (int64_t j = 0; j < i; ++j) C[i * D + j] = C[j * D + i];
}

}  // namespace

void bind_kron_covariance(py::module_& m) {
  m.def(
      "kron_covariance",
      [](std::uintptr_t x, int mask_kind, std::uintptr_t mask, std::uintptr_t out, int64_t rows, int64_t D,
         int dtype, int threads) {
        if (mask_kind < 0 || mask_kind > 2)
          throw std::invalid_argument("kron_covariance: mask_kind must be 0 (none), 1 (bool) or 2 (weights), got " +
                                      std::to_string(mask_kind));
        blas::check_sizes("kron_covariance", {{"D", D}});
        with_float_type(dtype, "kron_covariance", [&](auto zero) {
          using F = decltype(zero);
          kron_covariance(as_ptr<const F>(x), Mask(mask_kind), reinterpret_cast<const void*>(mask), as_ptr<F>(out),
                          rows, D, threads);
        });
      },
      py::arg("x"), py::arg("mask_kind"), py::arg("mask"), py::arg("out"), py::arg("rows"), py::arg("D"),
      py::arg("dtype"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>(),
      "out[D,D] = Σ_r w_r x[r] x[r]ᵀ for contiguous x [rows, D]; mask_kind 0: w = 1, 1: bool w [rows], "
      "2: weights w [rows] of x's dtype.");
}

}  // namespace dtda::cpu
