// ghost_dot and ghost_pairwise: inner products with per-example gradients G_n = Σ_t g_nt a_ntᵀ
// of a Linear layer, without materialising all N of them.
//
//   ghost_dot:      S[n, q] = ⟨G_n, M_q⟩ = Σ_t g_ntᵀ M_q a_nt     a [N,T,I], g [N,T,O], M [Q,O,I]
//   ghost_pairwise: S[q, n] = ⟨G_q, G_n⟩                         a_q [Q,S,I], g_q [Q,S,O]
//
// Each call picks the contraction order with the fewest FLOPs (see the cost functions):
//   project: P = a Mᵀ per token block and chunk of M's Q·O rows, then S[n,q] = Σ_{t,o} P g.
//            2·N·T·I·O·Q.
//   form:    G tiles [nb, oc·I] (nb examples, oc rows of G_n) times M's matching columns, so the
//            tile stays in cache and M is streamed once per example block. 2·N·O·I·(T+Q).
//   gram:    (pairwise) token Gram products (g_q g_nᵀ)∘(a_q a_nᵀ) summed over tokens.
//            2·Q·S·N·T·(I+O).
// Work is split over example blocks, one OpenMP thread each with single-threaded BLAS calls, so
// every output row is written by exactly one thread: results are bit-identical from run to run
// for a given thread count (the block sizes, hence summation orders, may depend on it).
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

constexpr int64_t kTileBytes = int64_t{4} << 20;  // per-thread workspace target (≈ L2/L3 share)

// Row-major output with arbitrary strides: ghost_dot writes [N, Q] (sn = Q, sq = 1), ghost_pairwise
// reuses the same kernels to write [Q, N] (sn = 1, sq = N).
template <typename T>
struct Scores {
  T* data;
  int64_t sn, sq;
  T& operator()(int64_t n, int64_t q) const { return data[n * sn + q * sq]; }
};

template <typename T>
void fill_zero(Scores<T> S, int64_t N, int64_t Q) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t q = 0; q < Q; ++q) S(n, q) = T(0);
}

double cost_project(double N, double T, double I, double O, double Q) { return 2 * N * T * I * O * Q; }
// + N·O·I for writing and reading the G tiles (memory traffic, not FLOPs)
double cost_form(double N, double T, double I, double O, double Q) { return N * O * I * (2 * (T + Q) + 1); }

// project: per block of token rows (whole examples, or token chunks of one long example) and per
// column chunk [j0, j1) of M viewed [Q·O, I] (row j = q·O + o), P = a_rows M[j0:j1]ᵀ, then
// S[n, q] += Σ_{t, o} P[(n,t), q·O + o − j0] g[(n,t), o]. Tiling both ways keeps P small while
// each streamed chunk of M is reused by a few hundred rows.
template <typename T>
void ghost_dot_project(const T* a, const T* g, const T* M, Scores<T> S, int64_t N, int64_t Tn,
                       int64_t I, int64_t O, int64_t Q, int threads) {
  // M is streamed once per row block and the row block re-read once per column chunk: with P
  // (rows × wc) bounded by the tile, that traffic is least for rows ≈ wc ≈ √tile.
  constexpr int64_t kRows = 1024;
  const int64_t width = Q * O;
  const int64_t tc = std::min(Tn, kRows);  // tokens per chunk
  const int64_t per_thread = (N + threads - 1) / threads;
  const int64_t nb = tc < Tn ? 1 : std::clamp<int64_t>(std::min(per_thread, kRows / Tn), 1, N);  // examples
  const int64_t wc = std::clamp<int64_t>(kTileBytes / int64_t(sizeof(T)) / (nb * tc), 1, width);
  const int64_t blocks = (N + nb - 1) / nb;
  const int workers = team(cost_project(N, Tn, I, O, Q), blocks, threads);
#pragma omp parallel num_threads(workers)
  {
    std::vector<T> P(nb * tc * wc);
    std::vector<T> acc(nb * Q);
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t n0 = b * nb, nk = std::min(nb, N - n0);
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t t0 = 0; t0 < Tn; t0 += tc) {
        const int64_t tk = std::min(tc, Tn - t0);
        const int64_t row0 = n0 * Tn + t0, rows = nk == 1 ? tk : nk * Tn;
        for (int64_t j0 = 0; j0 < width; j0 += wc) {
          const int64_t j1 = std::min(width, j0 + wc), jk = j1 - j0;
          blas::gemm(false, true, rows, jk, I, T(1), a + row0 * I, I, M + j0 * I, I, T(0), P.data(), jk);
          for (int64_t r = 0; r < rows; ++r) {
            const T* gr = g + (row0 + r) * O;
            const T* pr = P.data() + r * jk;  // columns j0 .. j1 - 1
            T* accn = acc.data() + (nk == 1 ? 0 : r / Tn) * Q;
            for (int64_t q = j0 / O; q * O < j1; ++q) {
              const int64_t lo = std::max(j0, q * O), hi = std::min(j1, (q + 1) * O);
              T s = 0;
              for (int64_t j = lo; j < hi; ++j) s += pr[j - j0] * gr[j - q * O];
              accn[q] += s;
            }
          }
        }
      }
      for (int64_t n = 0; n < nk; ++n)
        for (int64_t q = 0; q < Q; ++q) S(n0 + n, q) = acc[n * Q + q];
    }
  }
}

// form: per block of nb examples and chunk of oc output rows, Gt[n] = g_n[:, o0:o1]ᵀ a_n
// ([oc, I], one GEMM per example), then acc[nb, Q] += Gt [nb, oc·I] · M[:, o0:o1, :]ᵀ where the
// chunk of M is the column range [o0·I, o1·I) of M viewed [Q, O·I] (row stride O·I).
template <typename T>
void ghost_dot_form(const T* a, const T* g, const T* M, Scores<T> S, int64_t N, int64_t Tn,
                    int64_t I, int64_t O, int64_t Q, int threads) {
  const int64_t elems = kTileBytes / int64_t(sizeof(T));
  // Fewer examples per block when I is wide, so that each G_n GEMM keeps at least
  // min(O, kMinRows) output rows: with 32 examples and I = 1025, chunks of 31 rows made the GEMMs
  // so skinny that they ran at 60% of one [O, I] GEMM's rate (M is then streamed more often).
  constexpr int64_t kMinRows = 128;
  const int64_t nb = std::clamp<int64_t>(std::min((N + threads - 1) / threads, elems / (std::min(O, kMinRows) * I)),
                                         1, 64);
  const int64_t oc = std::clamp<int64_t>(elems / (nb * I), 1, O);
  const int64_t blocks = (N + nb - 1) / nb;
  const int workers = team(cost_form(N, Tn, I, O, Q), blocks, threads);
#pragma omp parallel num_threads(workers)
  {
    std::vector<T> Gt(nb * oc * I);
    std::vector<T> acc(nb * Q);
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t n0 = b * nb, nk = std::min(nb, N - n0);
      for (int64_t o0 = 0; o0 < O; o0 += oc) {
        const int64_t ok = std::min(oc, O - o0);
        for (int64_t n = 0; n < nk; ++n) {
          const int64_t row = (n0 + n) * Tn;
          blas::gemm(true, false, ok, I, Tn, T(1), g + row * O + o0, O, a + row * I, I, T(0),
                     Gt.data() + n * ok * I, I);
        }
        blas::gemm(false, true, nk, Q, ok * I, T(1), Gt.data(), ok * I, M + o0 * I, O * I,
                   o0 == 0 ? T(0) : T(1), acc.data(), Q);
      }
      for (int64_t n = 0; n < nk; ++n)
        for (int64_t q = 0; q < Q; ++q) S(n0 + n, q) = acc[n * Q + q];
    }
  }
}

template <typename T>
void ghost_dot_any(const T* a, const T* g, const T* M, Scores<T> S, int64_t N, int64_t Tn,
                   int64_t I, int64_t O, int64_t Q, int threads) {
  if (N == 0 || Q == 0) return;
  if (Tn == 0 || I == 0 || O == 0) return fill_zero(S, N, Q);
  if (cost_project(N, Tn, I, O, Q) <= cost_form(N, Tn, I, O, Q))
    ghost_dot_project(a, g, M, S, N, Tn, I, O, Q, threads);
  else
    ghost_dot_form(a, g, M, S, N, Tn, I, O, Q, threads);
}

// gram: S[q, n] = Σ_{s,t} (g_qs·g_nt)(a_qs·a_nt), tiled over (query block, example block).
template <typename T>
void ghost_pairwise_gram(const T* a_q, const T* g_q, const T* a, const T* g, T* S, int64_t Q,
                         int64_t Sq, int64_t N, int64_t Tn, int64_t I, int64_t O, int threads) {
  const int64_t elems = kTileBytes / int64_t(sizeof(T)) / 2;  // two Gram tiles
  const int64_t nb = std::clamp<int64_t>(256 / Tn, 1, N);
  const int64_t cols = nb * Tn;
  const int64_t qb = std::clamp<int64_t>(elems / (cols * Sq), 1, Q);
  const int64_t nblocks = (N + nb - 1) / nb;
  const int workers = team(2.0 * Q * Sq * N * Tn * (I + O), nblocks, threads);
#pragma omp parallel num_threads(workers)
  {
    std::vector<T> Gg(qb * Sq * cols), Ga(qb * Sq * cols);
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t n0 = b * nb, nk = std::min(nb, N - n0), ck = nk * Tn;
      for (int64_t q0 = 0; q0 < Q; q0 += qb) {
        const int64_t qk = std::min(qb, Q - q0), rk = qk * Sq;
        blas::gemm(false, true, rk, ck, O, T(1), g_q + q0 * Sq * O, O, g + n0 * Tn * O, O, T(0), Gg.data(), ck);
        blas::gemm(false, true, rk, ck, I, T(1), a_q + q0 * Sq * I, I, a + n0 * Tn * I, I, T(0), Ga.data(), ck);
        for (int64_t q = 0; q < qk; ++q)
          for (int64_t n = 0; n < nk; ++n) {
            T s = 0;
            for (int64_t si = 0; si < Sq; ++si) {
              const int64_t off = (q * Sq + si) * ck + n * Tn;
              for (int64_t t = 0; t < Tn; ++t) s += Gg[off + t] * Ga[off + t];
            }
            S[(q0 + q) * N + n0 + n] = s;
          }
      }
    }
  }
}

// via_g: G_q = g_qᵀ a_q for every query ([Q, O·I] workspace), then ghost_dot(a, g, G_q) transposed.
template <typename T>
void ghost_pairwise_via_g(const T* a_q, const T* g_q, const T* a, const T* g, T* S, int64_t Q,
                          int64_t Sq, int64_t N, int64_t Tn, int64_t I, int64_t O, int threads) {
  std::vector<T> Gq(Q * O * I);
#pragma omp parallel for schedule(static) num_threads(team(2.0 * Q * Sq * O * I, Q, threads))
  for (int64_t q = 0; q < Q; ++q)
    blas::gemm(true, false, O, I, Sq, T(1), g_q + q * Sq * O, O, a_q + q * Sq * I, I, T(0),
               Gq.data() + q * O * I, I);
  ghost_dot_any(a, g, Gq.data(), Scores<T>{S, 1, N}, N, Tn, I, O, Q, threads);
}

template <typename T>
void ghost_pairwise_any(const T* a_q, const T* g_q, const T* a, const T* g, T* S, int64_t Q,
                        int64_t Sq, int64_t N, int64_t Tn, int64_t I, int64_t O, int threads) {
  if (N == 0 || Q == 0) return;
  if (Sq == 0 || Tn == 0 || I == 0 || O == 0) return fill_zero(Scores<T>{S, 1, N}, N, Q);
  const double gram = 2.0 * Q * Sq * N * Tn * (I + O) + 2.0 * Q * Sq * N * Tn;
  const double via_g = 2.0 * Q * Sq * O * I + std::min(cost_project(N, Tn, I, O, Q), cost_form(N, Tn, I, O, Q));
  if (gram <= via_g)
    ghost_pairwise_gram(a_q, g_q, a, g, S, Q, Sq, N, Tn, I, O, threads);
  else
    ghost_pairwise_via_g(a_q, g_q, a, g, S, Q, Sq, N, Tn, I, O, threads);
}

}  // namespace

void bind_ghost(py::module_& m) {
  m.def(
      "ghost_dot",
      [](std::uintptr_t a, std::uintptr_t g, std::uintptr_t M, std::uintptr_t out, int64_t N,
         int64_t T, int64_t I, int64_t O, int64_t Q, int dtype, int threads) {
        blas::check_sizes("ghost_dot", {{"T", T}, {"I", I}, {"O", O}, {"O*I", O * I}});
        with_float_type(dtype, "ghost_dot", [&](auto zero) {
          using F = decltype(zero);
          ghost_dot_any(as_ptr<const F>(a), as_ptr<const F>(g), as_ptr<const F>(M),
                        Scores<F>{as_ptr<F>(out), Q, 1}, N, T, I, O, Q, threads);
        });
      },
      py::arg("a"), py::arg("g"), py::arg("M"), py::arg("out"), py::arg("N"), py::arg("T"),
      py::arg("I"), py::arg("O"), py::arg("Q"), py::arg("dtype"), py::arg("num_threads"),
      py::call_guard<py::gil_scoped_release>(),
      "out[N,Q] = Σ_t g[n,t]ᵀ M[q] a[n,t] for contiguous a [N,T,I], g [N,T,O], M [Q,O,I].");
  m.def(
      "ghost_pairwise",
      [](std::uintptr_t a_q, std::uintptr_t g_q, std::uintptr_t a, std::uintptr_t g,
         std::uintptr_t out, int64_t Q, int64_t S, int64_t N, int64_t T, int64_t I, int64_t O,
         int dtype, int threads) {
        blas::check_sizes("ghost_pairwise", {{"S", S}, {"T", T}, {"I", I}, {"O", O}});
        with_float_type(dtype, "ghost_pairwise", [&](auto zero) {
          using F = decltype(zero);
          ghost_pairwise_any(as_ptr<const F>(a_q), as_ptr<const F>(g_q), as_ptr<const F>(a),
                             as_ptr<const F>(g), as_ptr<F>(out), Q, S, N, T, I, O, threads);
        });
      },
      py::arg("a_q"), py::arg("g_q"), py::arg("a"), py::arg("g"), py::arg("out"), py::arg("Q"),
      py::arg("S"), py::arg("N"), py::arg("T"), py::arg("I"), py::arg("O"), py::arg("dtype"),
      py::arg("num_threads"), py::call_guard<py::gil_scoped_release>(),
      "out[Q,N] = ⟨Σ_s g_q[q,s] a_q[q,s]ᵀ, Σ_t g[n,t] a[n,t]ᵀ⟩ for contiguous factors.");
}

}  // namespace dtda::cpu
