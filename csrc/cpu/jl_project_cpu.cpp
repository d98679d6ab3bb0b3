// jl_project on CPU: Y [N, k] = X [N, P] R [P, k] / √k with R regenerated from Philox counters.
//
// R is never materialised whole: each OpenMP task owns a block Y[n0:n1, j0:j1], walks the rows
// of P in tiles, fills R[p0:p1, j0:j1] from the counters and adds X[n0:n1, p0:p1] · tile with
// single-threaded BLAS. The tile is a pure function of (seed, row, column), so the result
// does not depend on the tiling or the thread count beyond GEMM summation order; Rademacher
// entries are bit-identical to dtda.ops.reference.jl_matrix.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "cpu/dispatch.h"
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

// ±1 for the 8 bits of every byte value: a Rademacher row is filled 8 entries per table copy.
template <typename T>
struct SignTable {
  T v[256][8];
  constexpr SignTable() : v() {
    for (int b = 0; b < 256; ++b)
      for (int i = 0; i < 8; ++i) v[b][i] = ((b >> i) & 1) ? T(1) : T(-1);
  }
};
template <typename T>
constexpr SignTable<T> kSigns{};

// row[c] = R[p, j0 + c] for c < cols. j0 is a multiple of 128, so each Philox call fills 128
// consecutive Rademacher columns (or, for Gaussian, each call fills an aligned column pair).
template <typename T>
void fill_row(T* row, uint64_t p, int64_t j0, int64_t cols, uint64_t seed, Kind kind) {
  if (kind == Kind::Rademacher) {
    for (int64_t c0 = 0; c0 < cols; c0 += 128) {
      const philox::Words w = philox::rademacher_block(seed, p, static_cast<uint64_t>(j0 + c0) >> 7);
      for (int64_t byte = 0; byte < 16 && c0 + 8 * byte < cols; ++byte) {
        const uint32_t bits = (w.w[byte >> 2] >> (8 * (byte & 3))) & 0xFFu;
        const int64_t n = std::min<int64_t>(8, cols - c0 - 8 * byte);
        std::memcpy(row + c0 + 8 * byte, kSigns<T>.v[bits], static_cast<size_t>(n) * sizeof(T));
      }
    }
  } else {
    for (int64_t c = 0; c < cols; c += 2) {
      double r0, r1;
      philox::gaussian_pair(seed, p, static_cast<uint64_t>(j0 + c) >> 1, r0, r1);
      row[c] = static_cast<T>(r0);
      if (c + 1 < cols) row[c + 1] = static_cast<T>(r1);
    }
  }
}

// Work split. Each task owns a block of Y (a group of rows of X, a block of columns of R) and
// runs alone: it regenerates its R tiles and multiplies them with single-threaded BLAS, so no
// second thread pool competes with OpenMP (OpenBLAS workers spin after each call). Columns are
// split first (every R entry generated once); rows of X only when columns give too few tasks.
constexpr int64_t kMaxColBlock = 1024;
constexpr int64_t kTileEntries = int64_t{1} << 19;  // per thread: 2 MiB (float) / 4 MiB (double)
constexpr int64_t kMinRowGroup = 64;

template <typename T>
void project(const T* x, T* y, int64_t N, int64_t P, int64_t k, uint64_t seed, Kind kind,
             int num_threads) {
  if (N == 0) return;
  if (P == 0) {
    std::fill(y, y + N * k, T(0));
    return;
  }
  num_threads = team(2.0 * N * P * k, N * k, num_threads);
  const int64_t per_thread = (k + num_threads - 1) / num_threads;
  const int64_t col_block = std::min(kMaxColBlock, std::max<int64_t>(128, (per_thread + 127) / 128 * 128));
  const int64_t col_blocks = (k + col_block - 1) / col_block;
  const int64_t row_groups = std::max<int64_t>(
      1, std::min((num_threads + col_blocks - 1) / col_blocks, N / kMinRowGroup));
  const int64_t group_rows = (N + row_groups - 1) / row_groups;
  const int64_t tile_rows = std::min(P, std::max<int64_t>(128, kTileEntries / col_block));
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<T> tile(static_cast<size_t>(tile_rows * col_block));
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      for (int64_t g = 0; g < row_groups; ++g) {
        const int64_t j0 = cb * col_block, cols = std::min(col_block, k - j0);
        const int64_t n0 = g * group_rows, rows_n = std::min(group_rows, N - n0);
        if (rows_n <= 0) continue;
        for (int64_t p0 = 0; p0 < P; p0 += tile_rows) {
          const int64_t rows = std::min(tile_rows, P - p0);
          for (int64_t r = 0; r < rows; ++r) {
            fill_row(tile.data() + r * cols, static_cast<uint64_t>(p0 + r), j0, cols, seed, kind);
          }
          // Y[n0:, j0:j0+cols] (+)= X[n0:, p0:p0+rows] · tile; the first tile overwrites Y.
          blas::gemm(false, false, rows_n, cols, rows, T(1), x + n0 * P + p0, P, tile.data(), cols,
                     p0 == 0 ? T(0) : T(1), y + n0 * k + j0, k);
        }
      }
    }
  }
  // Divide (not multiply by 1/√k) like the reference, so an identity X reproduces R/√k exactly.
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(k)));
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t i = 0; i < N * k; ++i) y[i] /= scale;
}

void jl_project(std::uintptr_t x, std::uintptr_t y, int64_t N, int64_t P, int64_t k,
                uint64_t seed, const std::string& kind_name, int dtype, int num_threads) {
  const DType dt = dtype_from_code(dtype);
  if (dt != DType::Float32 && dt != DType::Float64) {
    throw std::invalid_argument(std::string("jl_project: the CPU kernel supports float32 and float64, got ") +
                                dtype_name(dt));
  }
  if (N < 0 || P < 0 || k < 1) {
    throw std::invalid_argument("jl_project: need N, P >= 0 and k >= 1, got N=" + std::to_string(N) +
                                ", P=" + std::to_string(P) + ", k=" + std::to_string(k));
  }
  blas::check_sizes("jl_project", {{"N", N}, {"P", P}, {"k", k}});
  const Kind kind = kind_from_name(kind_name);
  num_threads = std::max(1, num_threads);
  if (dt == DType::Float32) {
    project(as_ptr<const float>(x), as_ptr<float>(y), N, P, k, seed, kind, num_threads);
  } else {
    project(as_ptr<const double>(x), as_ptr<double>(y), N, P, k, seed, kind, num_threads);
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
