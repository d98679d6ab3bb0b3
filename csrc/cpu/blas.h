// Thin typed wrappers over the OpenBLAS of the scipy-openblas32 wheel (symbols prefixed scipy_).
// The GEMM-shaped parts of the CPU kernels go through here; the kernels' own loops do the fusion
// (contracting blocks while they are hot in cache) that saves memory traffic.
#pragma once
#include <cblas.h>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

namespace dtda::cpu::blas {

// The largest size (dimension or leading stride) this OpenBLAS takes: its blasint is 32-bit.
constexpr int64_t kMaxSize = 2147483647;

// A larger size would be rejected inside OpenBLAS, which only prints to stderr (its cblas calls
// return nothing) and leaves the output unwritten. Each kernel passes the extents that reach its
// BLAS calls here at entry, before any OpenMP region (an exception must not leave one).
inline void check_sizes(const char* op, std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  for (const auto& [name, value] : sizes) {
    if (value > kMaxSize) {
      throw std::invalid_argument(std::string(op) + ": " + name + " = " + std::to_string(value) +
                                  " exceeds 2^31 - 1, the largest size the CPU kernel's 32-bit OpenBLAS "
                                  "takes; run this call on the torch backend");
    }
  }
}

// Row-major C[m,n] = alpha * op(A) op(B) + beta * C, op = transpose when trans_* is true.
// lda/ldb/ldc are the row strides of A, B, C as stored (before transposition).
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, alpha,
                    A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                 const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                 double* C, int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, alpha,
                    A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

// Symmetric rank-k update, lower-or-upper triangle of C[n,n] += alpha * Aᵀ A for A [k,n] (trans)
// or A Aᵀ for A [n,k]. Callers mirror the written triangle.
inline void syrk(bool upper, bool trans, int64_t n, int64_t k, float alpha, const float* A,
                 int64_t lda, float beta, float* C, int64_t ldc) {
  scipy_cblas_ssyrk(CblasRowMajor, upper ? CblasUpper : CblasLower, trans ? CblasTrans : CblasNoTrans,
                    (blasint)n, (blasint)k, alpha, A, (blasint)lda, beta, C, (blasint)ldc);
}

inline void syrk(bool upper, bool trans, int64_t n, int64_t k, double alpha, const double* A,
                 int64_t lda, double beta, double* C, int64_t ldc) {
  scipy_cblas_dsyrk(CblasRowMajor, upper ? CblasUpper : CblasLower, trans ? CblasTrans : CblasNoTrans,
                    (blasint)n, (blasint)k, alpha, A, (blasint)lda, beta, C, (blasint)ldc);
}

// OpenBLAS keeps its own thread pool, whose workers spin after each call and, on a busy machine,
// made a 2-thread syrk 7x slower than one thread (measured). dtda._C therefore pins OpenBLAS to one
// thread at import and parallelises with OpenMP over independent blocks, each calling BLAS alone.
inline void set_threads(int n) { scipy_openblas_set_num_threads(n < 1 ? 1 : n); }

}  // namespace dtda::cpu::blas
