// jl_project on CPU: Y [N, k] = X [N, P] R [P, k] / √k with R regenerated from Philox counters.
//
// R is never materialised whole: the kernel walks column blocks of k and row blocks of P,
// fills one tile R[p0:p1, j0:j1] from the counters (OpenMP over rows), and adds X[:, p0:p1] · tile
// into Y[:, j0:j1] with BLAS. The tile is a pure function of (seed, row, column), so the result
// does not depend on the tiling or the thread count beyond GEMM summation order; Rademacher
// entries are bit-identical to dtda.ops.reference.jl_matrix.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/philox.h"
#include "cpu/blas.h"

namespace dtda::cpu {
namespace {

enum class Kind { Rademacher, Gaussian };

Kind kind_from_name(const std::string& kind) {
  if (kind == "rademacher") return Kind::Rademacher;
  if (kind == "gaussian") return Kind::Gaussian;
  throw std::invalid_argument("jl_project: kind must be 'rademacher' or 'gaussian', got '" + kind + "'");
}

// Tile shape. Column blocks are whole Philox blocks (128 Rademacher columns per call); the row
// block keeps a tile near 2^18 entries (1-2 MiB, resident in L2) while giving the GEMM a deep
// enough inner dimension to run at full speed.
constexpr int64_t kColBlock = 1024;
constexpr int64_t kTileEntries = int64_t{1} << 18;
constexpr int64_t kMinRowBlock = 128;

// tile[r, c] = R[p0 + r, j0 + c] for r < rows, c < cols; row stride ld.
template <typename T>
void fill_tile(T* tile, int64_t ld, int64_t p0, int64_t rows, int64_t j0, int64_t cols,
               uint64_t seed, Kind kind, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t p = static_cast<uint64_t>(p0 + r);
    T* row = tile + r * ld;
    if (kind == Kind::Rademacher) {
      // j0 is a multiple of 128, so each Philox call fills 128 consecutive columns.
      for (int64_t c0 = 0; c0 < cols; c0 += 128) {
        const philox::Words w = philox::rademacher_block(seed, p, static_cast<uint64_t>(j0 + c0) >> 7);
        const int64_t n = std::min<int64_t>(128, cols - c0);
        for (int64_t c = 0; c < n; ++c) {
          const uint32_t bit = (w.w[c >> 5] >> (c & 31)) & 1u;
          row[c0 + c] = bit ? T(1) : T(-1);
        }
      }
    } else {
      // j0 is even, so each call fills the column pair (2i, 2i + 1).
      for (int64_t c = 0; c < cols; c += 2) {
        double r0, r1;
        philox::gaussian_pair(seed, p, static_cast<uint64_t>(j0 + c) >> 1, r0, r1);
        row[c] = static_cast<T>(r0);
        if (c + 1 < cols) row[c + 1] = static_cast<T>(r1);
      }
    }
  }
}

template <typename T>
void project(const T* x, T* y, int64_t N, int64_t P, int64_t k, uint64_t seed, Kind kind,
             int num_threads) {
  if (N == 0) return;
  if (P == 0) {
    std::fill(y, y + N * k, T(0));
    return;
  }
  const int64_t col_block = std::min(k, kColBlock);
  const int64_t row_block = std::min(P, std::max(kMinRowBlock, kTileEntries / col_block));
  std::vector<T> tile(static_cast<size_t>(row_block * col_block));
  for (int64_t j0 = 0; j0 < k; j0 += col_block) {
    const int64_t cols = std::min(col_block, k - j0);
    for (int64_t p0 = 0; p0 < P; p0 += row_block) {
      const int64_t rows = std::min(row_block, P - p0);
      blas::set_threads(1);
      fill_tile(tile.data(), cols, p0, rows, j0, cols, seed, kind, num_threads);
      blas::set_threads(num_threads);
      // Y[:, j0:j0+cols] (+)= X[:, p0:p0+rows] · tile; the first row block overwrites Y.
      blas::gemm(false, false, N, cols, rows, T(1), x + p0, P, tile.data(), cols,
                 p0 == 0 ? T(0) : T(1), y + j0, k);
    }
  }
  // Divide (not multiply by 1/√k) like the reference, so an identity X reproduces R/√k exactly.
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(k)));
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t i = 0; i < N * k; ++i) y[i] /= scale;
}

void jl_project(std::uintptr_t x, std::uintptr_t y, int64_t N, int64_t P, int64_t k,
                uint64_t seed, const std::string& kind_name, int dtype, int num_threads) {
  if (N < 0 || P < 0 || k < 1) {
    throw std::invalid_argument("jl_project: need N, P >= 0 and k >= 1, got N=" + std::to_string(N) +
                                ", P=" + std::to_string(P) + ", k=" + std::to_string(k));
  }
  const Kind kind = kind_from_name(kind_name);
  num_threads = std::max(1, num_threads);
  switch (dtype_from_code(dtype)) {
    case DType::Float32:
      project(as_ptr<const float>(x), as_ptr<float>(y), N, P, k, seed, kind, num_threads);
      break;
    case DType::Float64:
      project(as_ptr<const double>(x), as_ptr<double>(y), N, P, k, seed, kind, num_threads);
      break;
    default:
      throw std::invalid_argument(std::string("jl_project: the CPU kernel supports float32 and float64, got ") +
                                  dtype_name(dtype_from_code(dtype)));
  }
}

}  // namespace

void bind_jl_project(pybind11::module_& m) {
  m.def("jl_project", &jl_project, pybind11::call_guard<pybind11::gil_scoped_release>(),
        pybind11::arg("x"), pybind11::arg("y"), pybind11::arg("N"), pybind11::arg("P"),
        pybind11::arg("k"), pybind11::arg("seed"), pybind11::arg("kind"), pybind11::arg("dtype"),
        pybind11::arg("num_threads"),
        "Y [N, k] = X [N, P] R [P, k] / sqrt(k), R from Philox(seed, row, column); x, y are "
        "data pointers of contiguous row-major arrays, dtype a dtda dtype code.");
}

}  // namespace dtda::cpu
