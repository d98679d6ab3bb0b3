// One tiled shared-memory GEMM that the linear-algebra ops compose (no cuBLAS: the wheel links
// the CUDA runtime statically and depends on nothing else).
//
//   C(b, m, n) = combine( alpha · Σ_k A(b, m, k) · B(b, n, k) · scale(m, n) )
//
// Each operand is a loader: `Strided` reads X(b, i, k) = p[b·sb + i·si + k·sk] with arbitrary
// element strides (so transposes and per-example batches cost nothing), converts to the
// accumulation type and may square or weight its elements; jl_project supplies loaders that
// generate their values. Per block a 64 × 64 output tile, 256 threads each owning 4 × 4 outputs,
// 16-deep slices of both operands staged in shared memory; at most 128 registers per thread so
// that two blocks share an SM.
//
// Two ways to spread a small output over more blocks, both writing `splits` partial results
// (at c + split·ss) that sum_splits() adds in a fixed order (deterministic, no atomics):
//   * split-K (default): split s reduces over its own range of k;
//   * reduce_batch: split s owns a range of batch entries and sums, per output element,
//     the squares (alpha·acc·scale)² over them (ekfac_eigvals' Σ_n (…)^∘2).
// `symmetric` computes only tiles on or above the diagonal and mirrors them (kron_covariance).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/common.cuh"

namespace dtda::cuda::gemm {

constexpr int kTile = 64;      // output tile edge per block
constexpr int kDepth = 16;     // reduction slice staged per step
constexpr int kThreads = 256;  // 16 × 16 threads
constexpr int kSide = 16;      // threads per tile edge
constexpr int kSub = kTile / kSide;  // 4 × 4 outputs per thread: rows ty + 16 r, columns tx + 16 c
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxGridZ = 65535;
constexpr int64_t kMaxRows = kMaxGridY * kTile;  // M of one launch; callers chunk above it

// A (k, i) slice of one operand in shared memory; the +1 column spreads rows over banks.
template <typename Acc>
using Slice = Acc[kDepth][kTile + 1];

// X(b, i, k) = p[b·sb + i·si + k·sk] as Acc (squared if `square`, times weight[b·swb + k] if
// `weight`), zero outside i < extent and k < kend. Where `gate` (or `weight`) is 0 at k the
// element is not read but taken as 0, so garbage (NaN, Inf) under a zero mask stays out.
template <typename T, typename Acc>
struct Strided {
  const T* p;
  int64_t sb, si, sk;
  int64_t extent;
  const Acc* weight = nullptr;
  const Acc* gate = nullptr;  // rows k with gate[b·swb + k] == 0 are not read (indexed like weight)
  int64_t swb = 0;
  bool square = false;

  __device__ void load(Slice<Acc>& s, int64_t b, int64_t i0, int64_t k0, int64_t kend) const {
    const bool k_fast = sk == 1;  // consecutive threads walk the contiguous index (coalescing)
#pragma unroll 1  // unrolled, the hoisted addresses push the kernel past 128 registers
    for (int r = 0; r < kTile * kDepth / kThreads; ++r) {
      const int idx = static_cast<int>(threadIdx.x) + r * kThreads;
      const int ii = k_fast ? idx / kDepth : idx % kTile;
      const int kk = k_fast ? idx % kDepth : idx / kTile;
      const int64_t i = i0 + ii, k = k0 + kk;
      Acc v = Acc(0);
      if (i < extent && k < kend && (gate == nullptr || gate[b * swb + k] != Acc(0)) &&
          (weight == nullptr || weight[b * swb + k] != Acc(0))) {
        v = to_acc<Acc>(p[b * sb + i * si + k * sk]);
        if (square) v *= v;
        if (weight != nullptr) v *= weight[b * swb + k];
      }
      s[kk][ii] = v;
    }
  }
};

enum class Combine : int { Store, Add, Multiply };

template <typename Acc>
struct Output {
  Acc* c;
  int64_t sb, sm, sn;  // C(b, m, n) = c[b·sb + m·sm + n·sn] (b = 0 under reduce_batch)
  int64_t ss = 0;      // distance between split partials
  Acc alpha = Acc(1);
  const Acc* scale = nullptr;  // optional elementwise factor scale[m·ssm + n·ssn]
  int64_t ssm = 0, ssn = 0;
  Combine combine = Combine::Store;

  __device__ Acc value(Acc acc, int64_t m, int64_t n) const {
    Acc v = alpha * acc;
    if (scale != nullptr) v *= scale[m * ssm + n * ssn];
    return v;
  }
  __device__ void put(Acc* base, int64_t m, int64_t n, Acc v) const {
    Acc* p = base + m * sm + n * sn;
    if (combine == Combine::Store) *p = v;
    else if (combine == Combine::Add) *p += v;
    else *p *= v;
  }
};

struct Shape {
  int64_t M, N, K;
  int64_t batch = 1;
  int64_t splits = 1;
  bool reduce_batch = false;
  bool symmetric = false;
};

template <typename Acc, typename LoadA, typename LoadB>
__global__ void __launch_bounds__(kThreads, 2) gemm_kernel(LoadA a, LoadB b, Output<Acc> out, Shape s) {
  __shared__ Slice<Acc> as, bs;
  const int tx = static_cast<int>(threadIdx.x) % kSide, ty = static_cast<int>(threadIdx.x) / kSide;
  const int64_t tm = blockIdx.y, tn = blockIdx.x;
  if (s.symmetric && tm > tn) return;  // uniform per block: no barrier is skipped by part of it
  const bool mirror = s.symmetric && tm < tn;
  const int64_t m0 = tm * kTile, n0 = tn * kTile;
  const int64_t groups = s.reduce_batch ? s.splits : s.batch * s.splits;

  // Writes this thread's 4 × 4 values v[r][c] (already transformed) at split `split`, batch `bi`.
  auto finish = [&](const Acc (&v)[kSub][kSub], int64_t bi, int64_t split) {
    Acc* base = out.c + split * out.ss + bi * out.sb;
#pragma unroll
    for (int r = 0; r < kSub; ++r) {
#pragma unroll
      for (int c = 0; c < kSub; ++c) {
        const int64_t m = m0 + ty + kSide * r, n = n0 + tx + kSide * c;
        if (m < s.M && n < s.N) {
          out.put(base, m, n, v[r][c]);
          if (mirror) out.put(base, n, m, v[r][c]);
        }
      }
    }
  };

  for (int64_t z = blockIdx.z; z < groups; z += gridDim.z) {
    const int64_t split = z % s.splits;
    int64_t b_begin = z / s.splits, b_end = b_begin + 1, k_begin = 0, k_end = s.K;
    if (s.reduce_batch) {
      const int64_t len = ceil_div(s.batch, s.splits);
      b_begin = imin(s.batch, split * len);
      b_end = imin(s.batch, b_begin + len);
    } else {
      const int64_t len = ceil_div(ceil_div(s.K, s.splits), kDepth) * kDepth;
      k_begin = imin(s.K, split * len);
      k_end = imin(s.K, k_begin + len);
    }
    Acc total[kSub][kSub] = {};  // reduce_batch: Σ_b value²
    for (int64_t bi = b_begin; bi < b_end; ++bi) {
      Acc acc[kSub][kSub] = {};
      for (int64_t k0 = k_begin; k0 < k_end; k0 += kDepth) {
        a.load(as, bi, m0, k0, k_end);
        b.load(bs, bi, n0, k0, k_end);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kDepth; ++kk) {
          Acc av[kSub], bv[kSub];
#pragma unroll
          for (int r = 0; r < kSub; ++r) {
            av[r] = as[kk][ty + kSide * r];
            bv[r] = bs[kk][tx + kSide * r];
          }
#pragma unroll
          for (int r = 0; r < kSub; ++r) {
#pragma unroll
            for (int c = 0; c < kSub; ++c) acc[r][c] += av[r] * bv[c];
          }
        }
        __syncthreads();
      }
#pragma unroll
      for (int r = 0; r < kSub; ++r) {
#pragma unroll
        for (int c = 0; c < kSub; ++c) {
          const int64_t m = m0 + ty + kSide * r, n = n0 + tx + kSide * c;
          const Acc v = (m < s.M && n < s.N) ? out.value(acc[r][c], m, n) : Acc(0);
          if (s.reduce_batch) total[r][c] += v * v;
          else acc[r][c] = v;
        }
      }
      if (!s.reduce_batch) finish(acc, bi, split);
    }
    if (s.reduce_batch) finish(total, 0, split);
  }
}

// Launch one GEMM on `stream`. Empty outputs launch nothing; K = 0 writes zeros.
template <typename Acc, typename LoadA, typename LoadB>
void run(const char* op, const LoadA& a, const LoadB& b, const Output<Acc>& out, const Shape& s,
         cudaStream_t stream) {
  const int64_t groups = s.reduce_batch ? s.splits : s.batch * s.splits;
  if (s.M == 0 || s.N == 0 || groups == 0) return;
  const int64_t gy = ceil_div(s.M, kTile), gx = ceil_div(s.N, kTile);
  if (gy > kMaxGridY) {
    throw std::invalid_argument(std::string("dtda._C_cuda.") + op + ": a GEMM of " +
                                std::to_string(s.M) + " rows exceeds the grid limit of " +
                                std::to_string(kMaxRows) + " rows");
  }
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy),
                  static_cast<unsigned>(std::min(groups, kMaxGridZ)));
  gemm_kernel<Acc, LoadA, LoadB><<<grid, kThreads, 0, stream>>>(a, b, out, s);
  check_launch(op, "gemm_kernel");
}

// out(m, n) (+)= Σ_s part[s·rows·cols + m·cols + n], summed in split order.
template <typename Acc>
__global__ void sum_splits_kernel(const Acc* part, int64_t splits, int64_t rows, int64_t cols,
                                  Acc* out, int64_t ld, bool add) {
  const int64_t count = rows * cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < count;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Acc sum = Acc(0);
    for (int64_t sp = 0; sp < splits; ++sp) sum += part[sp * count + idx];
    Acc* p = out + (idx / cols) * ld + idx % cols;
    *p = add ? *p + sum : sum;
  }
}

template <typename Acc>
void sum_splits(const char* op, const Acc* part, int64_t splits, int64_t rows, int64_t cols, Acc* out,
                int64_t ld, cudaStream_t stream, bool add = false) {
  const int64_t count = rows * cols;
  if (count == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div(count, 256), 65535);
  sum_splits_kernel<Acc><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(part, splits, rows, cols, out,
                                                                           ld, add);
  check_launch(op, "sum_splits_kernel");
}

inline int64_t tiles(int64_t extent) { return ceil_div(extent, kTile); }

// How many partial results to make when `blocks` output tiles alone would leave the GPU idle:
// about four blocks per SM, at least `min_depth` of the reduced extent `depth` per split, and
// at most `max_splits` (the workspace the partials may take).
inline int64_t plan_splits(int64_t blocks, int64_t depth, int64_t min_depth, int sms, int64_t max_splits) {
  if (blocks <= 0 || depth <= 0) return 1;
  int64_t want = ceil_div(4 * static_cast<int64_t>(sms), blocks);
  want = std::min(want, std::max<int64_t>(1, depth / min_depth));
  want = std::min<int64_t>(want, 256);
  return std::max<int64_t>(1, std::min(want, max_splits));
}

}  // namespace dtda::cuda::gemm
