// seed_moments on CPU: per (n, q) statistics over K seeds of m [K, Q] and δ [K, N, Q].
//
// One pass over δ: the flat (n, q) range is cut into blocks; a thread copies the K rows of its
// block into a double buffer (K·B values, cache resident) and computes every statistic there:
//   mean = Σ δ_s / K,  var = Σ (δ_s − mean)² / (K−1),  cov = Σ (m_s − m̄)(δ_s − mean) / (K−1),
//   var_increase = var(m+δ) − var(m) = Σ (δ_s − mean)(2(m_s − m̄) + δ_s − mean) / (K−1)
//                 (the centred form of 2 cov + var: no cancellation against var(m)),
//   w2 = √(Σ_s (m_(s) − (m+δ)_(s))² / K) on sorted samples.
// Sorting: m is sorted per q once; m+δ is gathered in m's sorted order, where it is nearly
// sorted when δ is small against the spread of m, and finished by an insertion sort that hands
// over to std::sort when the input turns out far from sorted.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "cpu/dispatch.h"

namespace dtda::cpu {
namespace {

// Values a thread buffers per block (K rows of B columns): 256 KiB of doubles.
constexpr int64_t kBlockValues = int64_t{1} << 15;

// Insertion sort of a[0:n], giving up after `budget` element moves (a stays a permutation).
bool insertion_sort_bounded(double* a, int64_t n, int64_t budget) {
  int64_t moves = 0;
  for (int64_t i = 1; i < n; ++i) {
    const double v = a[i];
    int64_t j = i;
    while (j > 0 && a[j - 1] > v) {
      a[j] = a[j - 1];
      --j;
      if (++moves > budget) {
        a[j] = v;
        return false;
      }
    }
    a[j] = v;
  }
  return true;
}

void sort_nearly_sorted(double* a, int64_t n) {
  if (!insertion_sort_bounded(a, n, 8 * n)) std::sort(a, a + n);
}

// Per-measurement quantities shared by every example: centred m, and m sorted with its order.
struct Measurements {
  std::vector<double> centred;  // [K, Q]: m_sq − mean_s m_sq
  std::vector<double> sorted;   // [Q, K]: m_(s)q
  std::vector<int64_t> order;   // [Q, K]: seed of the s-th smallest m_sq
  std::vector<char> has_nan;    // [Q]: W2 is NaN for this q (sorting NaN is undefined)
};

template <typename T>
Measurements prepare(const T* m, int64_t K, int64_t Q) {
  Measurements r{std::vector<double>(K * Q), std::vector<double>(Q * K), std::vector<int64_t>(Q * K),
                 std::vector<char>(Q, 0)};
  for (int64_t q = 0; q < Q; ++q) {
    double mean = 0;
    for (int64_t s = 0; s < K; ++s) mean += static_cast<double>(m[s * Q + q]);
    mean /= static_cast<double>(K);
    for (int64_t s = 0; s < K; ++s) {
      const double v = static_cast<double>(m[s * Q + q]);
      r.centred[s * Q + q] = v - mean;
      if (std::isnan(v)) r.has_nan[q] = 1;
    }
    int64_t* order = r.order.data() + q * K;
    std::iota(order, order + K, int64_t{0});
    if (!r.has_nan[q]) {
      std::stable_sort(order, order + K, [&](int64_t a, int64_t b) { return m[a * Q + q] < m[b * Q + q]; });
    }
    for (int64_t s = 0; s < K; ++s) r.sorted[q * K + s] = static_cast<double>(m[order[s] * Q + q]);
  }
  return r;
}

template <typename T>
void moments(const T* m, const T* delta, T* mean_out, T* var_out, T* cov_out, T* vi_out, T* w2_out,
             int64_t K, int64_t N, int64_t Q, int num_threads) {
  const int64_t NQ = N * Q;
  if (NQ == 0) return;
  const Measurements meas = prepare(m, K, Q);
  const int64_t B = std::min(NQ, std::max<int64_t>(16, kBlockValues / K));
  const int64_t blocks = (NQ + B - 1) / B;
  const double inv_k = 1.0 / static_cast<double>(K), inv_k1 = 1.0 / static_cast<double>(K - 1);

#pragma omp parallel num_threads(team(20.0 * K * NQ, blocks, num_threads))
  {
    std::vector<double> d(K * B), mean(B), var(B), cov(B), sample(K);
    std::vector<int64_t> qs(B);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t j0 = b * B, width = std::min(B, NQ - j0);
      for (int64_t i = 0; i < width; ++i) qs[i] = (j0 + i) % Q;
      std::fill(mean.begin(), mean.begin() + width, 0.0);
      for (int64_t s = 0; s < K; ++s) {
        const T* src = delta + s * NQ + j0;
        double* row = d.data() + s * B;
        for (int64_t i = 0; i < width; ++i) {
          row[i] = static_cast<double>(src[i]);
          mean[i] += row[i];
        }
      }
      for (int64_t i = 0; i < width; ++i) mean[i] *= inv_k;
      // Second pass over the cached block: centred sums (exact two-pass variance).
      std::fill(var.begin(), var.begin() + width, 0.0);
      std::fill(cov.begin(), cov.begin() + width, 0.0);
      for (int64_t s = 0; s < K; ++s) {
        const double* row = d.data() + s * B;
        const double* mc = meas.centred.data() + s * Q;
        for (int64_t i = 0; i < width; ++i) {
          const double dc = row[i] - mean[i];
          var[i] += dc * dc;
          cov[i] += mc[qs[i]] * dc;
        }
      }
      for (int64_t i = 0; i < width; ++i) {
        const int64_t j = j0 + i, q = qs[i];
        mean_out[j] = static_cast<T>(mean[i]);
        var_out[j] = static_cast<T>(var[i] * inv_k1);
        cov_out[j] = static_cast<T>(cov[i] * inv_k1);
        vi_out[j] = static_cast<T>((2.0 * cov[i] + var[i]) * inv_k1);
        // W2: m + δ gathered in the sorted order of m, then sorted.
        const double* msorted = meas.sorted.data() + q * K;
        const int64_t* order = meas.order.data() + q * K;
        bool nan = meas.has_nan[q] != 0;
        for (int64_t s = 0; s < K; ++s) {
          sample[s] = msorted[s] + d[order[s] * B + i];
          nan = nan || std::isnan(sample[s]);
        }
        double w2 = std::numeric_limits<double>::quiet_NaN();
        if (!nan) {
          sort_nearly_sorted(sample.data(), K);
          double ss = 0;
          for (int64_t s = 0; s < K; ++s) {
            const double diff = sample[s] - msorted[s];
            ss += diff * diff;
          }
          w2 = std::sqrt(ss * inv_k);
        }
        w2_out[j] = static_cast<T>(w2);
      }
    }
  }
}

void seed_moments(std::uintptr_t m, std::uintptr_t delta, std::uintptr_t mean, std::uintptr_t var,
                  std::uintptr_t cov, std::uintptr_t var_increase, std::uintptr_t w2, int64_t K,
                  int64_t N, int64_t Q, int dtype, int num_threads) {
  const DType dt = dtype_from_code(dtype);
  if (dt != DType::Float32 && dt != DType::Float64) {
    throw std::invalid_argument(std::string("seed_moments: the CPU kernel supports float32 and float64, got ") +
                                dtype_name(dt));
  }
  if (K < 2 || N < 0 || Q < 0) {
    throw std::invalid_argument("seed_moments: need K >= 2 and N, Q >= 0, got K=" + std::to_string(K) +
                                ", N=" + std::to_string(N) + ", Q=" + std::to_string(Q));
  }
  num_threads = std::max(1, num_threads);
  if (dt == DType::Float32) {
    moments(as_ptr<const float>(m), as_ptr<const float>(delta), as_ptr<float>(mean), as_ptr<float>(var),
            as_ptr<float>(cov), as_ptr<float>(var_increase), as_ptr<float>(w2), K, N, Q, num_threads);
  } else {
    moments(as_ptr<const double>(m), as_ptr<const double>(delta), as_ptr<double>(mean), as_ptr<double>(var),
            as_ptr<double>(cov), as_ptr<double>(var_increase), as_ptr<double>(w2), K, N, Q, num_threads);
  }
}

}  // namespace

void bind_seed_moments(pybind11::module_& m) {
  m.def("seed_moments", &seed_moments, pybind11::call_guard<pybind11::gil_scoped_release>(),
        pybind11::arg("m"), pybind11::arg("delta"), pybind11::arg("mean"), pybind11::arg("var"),
        pybind11::arg("cov"), pybind11::arg("var_increase"), pybind11::arg("w2"), pybind11::arg("K"),
        pybind11::arg("N"), pybind11::arg("Q"), pybind11::arg("dtype"), pybind11::arg("num_threads"),
        "Seed moments of m [K, Q] and delta [K, N, Q] into five [N, Q] outputs (mean, var, cov, "
        "var_increase, w2); all pointers to contiguous row-major arrays, dtype a dtda dtype code.");
}

}  // namespace dtda::cpu
