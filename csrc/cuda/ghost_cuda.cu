// ghost_dot and ghost_pairwise on CUDA: inner products with per-example gradients
// G_n = Σ_t g_nt a_ntᵀ, choosing per call the cheaper contraction order (DESIGN.md):
//
// ghost_dot S[n, q] = Σ_t g_ntᵀ M_q a_nt
//   tokens (T·Q ≤ T + Q, e.g. T = 1): U = a·M_flatᵀ [(n,t), (q,o)], then S = Σ_{t,o} U ∘ g;
//   gradients (otherwise):            G_n per chunk of examples, then S = G_flat · M_flatᵀ.
// ghost_pairwise S[q, n] = ⟨G_q, G_n⟩
//   tokens:    W = (g_q g_nᵀ) ∘ (a_q a_nᵀ) over (s, t), then S = Σ_{s,t} W;
//   gradients: G_q once, G_n per chunk, S = G_q,flat · G_n,flatᵀ (split over O·I).
// Flop counts decide; examples are processed in chunks whose workspace fits the budget.
#include <pybind11/pybind11.h>

#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/gemm.cuh"

namespace dtda::cuda {
namespace {

constexpr const char* kDot = "ghost_dot";
constexpr const char* kPair = "ghost_pairwise";
constexpr int kReduceThreads = 256;

int64_t chunk_for(int64_t per_item, int64_t budget, int64_t count) {
  return std::clamp<int64_t>(budget / std::max<int64_t>(1, per_item), 1, std::max<int64_t>(1, count));
}

int reduce_blocks(int64_t warps) {
  return static_cast<int>(std::clamp<int64_t>(ceil_div(warps, kReduceThreads / 32), 1, 1 << 20));
}

// G[b] (o, i) = Σ_t g[b, t, o] a[b, t, i] for b < count: G [count, O, I] contiguous.
template <typename T, typename Acc>
void per_example_gradients(const char* op, const T* g, const T* a, int64_t count, int64_t T_, int64_t O,
                           int64_t I, Acc* G, cudaStream_t stream) {
  const gemm::Strided<T, Acc> A{g, T_ * O, 1, O, O};
  const gemm::Strided<T, Acc> B{a, T_ * I, 1, I, I};
  gemm::Shape shape{O, I, T_};
  shape.batch = count;
  gemm::run(op, A, B, gemm::Output<Acc>{G, O * I, I, 1}, shape, stream);
}

// ---- ghost_dot -----------------------------------------------------------------------------------

struct DotPlan {
  bool tokens;
  int64_t chunk;   // examples per pass
  int64_t splits;  // gradients path: partials of the O·I reduction
  int64_t workspace;
};

template <typename Acc>
DotPlan plan_dot(int64_t N, int64_t T_, int64_t I, int64_t O, int64_t Q, int device) {
  const int64_t budget = workspace_budget<Acc>();
  if (T_ * Q <= T_ + Q) {
    const int64_t per = T_ * Q * O;  // U rows of one example
    int64_t chunk = chunk_for(per, budget, N);
    chunk = std::min(chunk, std::max<int64_t>(1, gemm::kMaxRows / std::max<int64_t>(1, T_)));
    return {true, chunk, 1, chunk * per};
  }
  const int64_t chunk = std::min(chunk_for(O * I, budget, N), gemm::kMaxRows);
  const int64_t splits = gemm::plan_splits(gemm::tiles(chunk) * gemm::tiles(Q), O * I, 256,
                                           sm_count(device, kDot),
                                           std::max<int64_t>(1, budget / std::max<int64_t>(1, chunk * Q)));
  return {false, chunk, splits, chunk * O * I + (splits > 1 ? splits * chunk * Q : 0)};
}

// S[n, q] = Σ_{t,o} U[(n·T + t)·Q·O + q·O + o] g[(n·T + t)·O + o]: one warp per (n, q).
template <typename T, typename Acc>
__global__ void dot_tokens_reduce(const Acc* U, const T* g, Acc* S, int64_t count, int64_t T_, int64_t O,
                                  int64_t Q) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; w < count * Q;
       w += warps) {
    const int64_t n = w / Q, q = w % Q;
    Acc sum = Acc(0);
    for (int64_t t = 0; t < T_; ++t) {
      const Acc* u = U + ((n * T_ + t) * Q + q) * O;
      const T* gt = g + (n * T_ + t) * O;
      for (int64_t o = lane; o < O; o += 32) sum += u[o] * to_acc<Acc>(gt[o]);
    }
    sum = warp_sum(sum);
    if (lane == 0) S[w] = sum;
  }
}

template <typename T>
void run_dot(std::uintptr_t a_, std::uintptr_t g_, std::uintptr_t M_, std::uintptr_t S_,
             std::uintptr_t workspace, int64_t workspace_size, int64_t N, int64_t T_, int64_t I, int64_t O,
             int64_t Q, int device, cudaStream_t stream) {
  using Acc = acc_t<T>;
  const DotPlan p = plan_dot<Acc>(N, T_, I, O, Q, device);
  check_workspace(kDot, workspace_size, p.workspace);
  const T *a = as_ptr<const T>(a_), *g = as_ptr<const T>(g_), *M = as_ptr<const T>(M_);
  Acc* S = as_ptr<Acc>(S_);
  Acc* ws = as_ptr<Acc>(workspace);
  if (Q == 0) return;
  for (int64_t n0 = 0; n0 < N; n0 += p.chunk) {
    const int64_t nc = std::min(p.chunk, N - n0);
    if (p.tokens) {
      const int64_t rows = nc * T_;
      const gemm::Strided<T, Acc> A{a + n0 * T_ * I, 0, I, 1, rows};
      const gemm::Strided<T, Acc> B{M, 0, I, 1, Q * O};
      gemm::run(kDot, A, B, gemm::Output<Acc>{ws, 0, Q * O, 1}, gemm::Shape{rows, Q * O, I}, stream);
      dot_tokens_reduce<T, Acc><<<reduce_blocks(nc * Q), kReduceThreads, 0, stream>>>(
          ws, g + n0 * T_ * O, S + n0 * Q, nc, T_, O, Q);
      check_launch(kDot, "dot_tokens_reduce");
    } else {
      per_example_gradients(kDot, g + n0 * T_ * O, a + n0 * T_ * I, nc, T_, O, I, ws, stream);
      const gemm::Strided<Acc, Acc> A{ws, 0, O * I, 1, nc};
      const gemm::Strided<T, Acc> B{M, 0, O * I, 1, Q};
      gemm::Shape shape{nc, Q, O * I};
      shape.splits = p.splits;
      gemm::Output<Acc> out{S + n0 * Q, 0, Q, 1};
      Acc* part = ws + p.chunk * O * I;
      if (p.splits > 1) out = gemm::Output<Acc>{part, 0, Q, 1, nc * Q};
      gemm::run(kDot, A, B, out, shape, stream);
      if (p.splits > 1) gemm::sum_splits(kDot, part, p.splits, nc, Q, S + n0 * Q, Q, stream);
    }
  }
}

// ---- ghost_pairwise ------------------------------------------------------------------------------

struct PairPlan {
  bool tokens;
  int64_t chunk;
  int64_t splits;
  int64_t workspace;
};

template <typename Acc>
PairPlan plan_pair(int64_t Q, int64_t S, int64_t N, int64_t T_, int64_t I, int64_t O, int device) {
  const int64_t budget = workspace_budget<Acc>();
  // Flops (as doubles: the products overflow int64 at extreme sizes).
  const double qs = double(Q) * S, nt = double(N) * T_, oi = double(O) * I;
  const double tokens_cost = qs * nt * double(O + I);
  const double gradients_cost = (qs + nt) * oi + double(Q) * N * oi;
  if (tokens_cost <= gradients_cost) {
    const int64_t chunk = chunk_for(Q * S * T_, budget, N);
    return {true, chunk, 1, chunk * Q * S * T_};
  }
  const int64_t gq = Q * O * I;
  const int64_t chunk = chunk_for(O * I, std::max<int64_t>(0, budget - gq), N);
  const int64_t splits = gemm::plan_splits(gemm::tiles(Q) * gemm::tiles(chunk), O * I, 256,
                                           sm_count(device, kPair),
                                           std::max<int64_t>(1, budget / std::max<int64_t>(1, Q * chunk)));
  return {false, chunk, splits, gq + chunk * O * I + (splits > 1 ? splits * Q * chunk : 0)};
}

// S[q·ld + n] = Σ_{s,t} W[(q·S + s)·cols + n·T + t] with cols = count·T: one warp per (q, n).
template <typename Acc>
__global__ void pair_tokens_reduce(const Acc* W, Acc* S, int64_t ld, int64_t Q, int64_t S_len,
                                   int64_t count, int64_t T_) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t cols = count * T_;
  for (int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; w < Q * count;
       w += warps) {
    const int64_t q = w / count, n = w % count;
    Acc sum = Acc(0);
    for (int64_t j = lane; j < S_len * T_; j += 32) {
      const int64_t s = j / T_, t = j % T_;
      sum += W[(q * S_len + s) * cols + n * T_ + t];
    }
    sum = warp_sum(sum);
    if (lane == 0) S[q * ld + n] = sum;
  }
}

template <typename T>
void run_pair(std::uintptr_t a_q_, std::uintptr_t g_q_, std::uintptr_t a_, std::uintptr_t g_,
              std::uintptr_t S_, std::uintptr_t workspace, int64_t workspace_size, int64_t Q, int64_t S_len,
              int64_t N, int64_t T_, int64_t I, int64_t O, int device, cudaStream_t stream) {
  using Acc = acc_t<T>;
  const PairPlan p = plan_pair<Acc>(Q, S_len, N, T_, I, O, device);
  check_workspace(kPair, workspace_size, p.workspace);
  const T *a_q = as_ptr<const T>(a_q_), *g_q = as_ptr<const T>(g_q_);
  const T *a = as_ptr<const T>(a_), *g = as_ptr<const T>(g_);
  Acc* S = as_ptr<Acc>(S_);
  Acc* ws = as_ptr<Acc>(workspace);
  if (Q == 0) return;
  if (!p.tokens) per_example_gradients(kPair, g_q, a_q, Q, S_len, O, I, ws, stream);
  for (int64_t n0 = 0; n0 < N; n0 += p.chunk) {
    const int64_t nc = std::min(p.chunk, N - n0);
    if (p.tokens) {
      const int64_t rows = Q * S_len, cols = nc * T_;
      gemm::run(kPair, gemm::Strided<T, Acc>{g_q, 0, O, 1, rows},
                gemm::Strided<T, Acc>{g + n0 * T_ * O, 0, O, 1, cols},
                gemm::Output<Acc>{ws, 0, cols, 1}, gemm::Shape{rows, cols, O}, stream);
      gemm::Output<Acc> hadamard{ws, 0, cols, 1};
      hadamard.combine = gemm::Combine::Multiply;
      gemm::run(kPair, gemm::Strided<T, Acc>{a_q, 0, I, 1, rows},
                gemm::Strided<T, Acc>{a + n0 * T_ * I, 0, I, 1, cols}, hadamard,
                gemm::Shape{rows, cols, I}, stream);
      pair_tokens_reduce<Acc><<<reduce_blocks(Q * nc), kReduceThreads, 0, stream>>>(ws, S + n0, N, Q, S_len,
                                                                                   nc, T_);
      check_launch(kPair, "pair_tokens_reduce");
    } else {
      Acc* Gn = ws + Q * O * I;
      Acc* part = Gn + p.chunk * O * I;
      per_example_gradients(kPair, g + n0 * T_ * O, a + n0 * T_ * I, nc, T_, O, I, Gn, stream);
      gemm::Shape shape{Q, nc, O * I};
      shape.splits = p.splits;
      gemm::Output<Acc> out{S + n0, 0, N, 1};
      if (p.splits > 1) out = gemm::Output<Acc>{part, 0, nc, 1, Q * nc};
      gemm::run(kPair, gemm::Strided<Acc, Acc>{ws, 0, O * I, 1, Q}, gemm::Strided<Acc, Acc>{Gn, 0, O * I, 1, nc},
                out, shape, stream);
      if (p.splits > 1) gemm::sum_splits(kPair, part, p.splits, Q, nc, S + n0, N, stream);
    }
  }
}

}  // namespace

void bind_ghost(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "ghost_dot_workspace",
      [](int64_t N, int64_t T, int64_t I, int64_t O, int64_t Q, int dtype, int device) {
        check_sizes(kDot, {{"N", N}, {"T", T}, {"I", I}, {"O", O}, {"Q", Q}});
        DeviceGuard guard(device, kDot);
        int64_t elems = 0;
        dispatch_dtype(dtype, [&](auto tag) {
          elems = plan_dot<acc_t<typename decltype(tag)::type>>(N, T, I, O, Q, device).workspace;
        });
        return elems;
      },
      py::arg("N"), py::arg("T"), py::arg("I"), py::arg("O"), py::arg("Q"), py::arg("dtype"),
      py::arg("device"), "Workspace (elements of the result dtype) ghost_dot needs for these sizes.");
  m.def(
      "ghost_dot",
      [](std::uintptr_t a, std::uintptr_t g, std::uintptr_t M, std::uintptr_t S, std::uintptr_t workspace,
         int64_t workspace_size, int64_t N, int64_t T, int64_t I, int64_t O, int64_t Q, int dtype, int device,
         std::uintptr_t stream) {
        check_sizes(kDot, {{"N", N}, {"T", T}, {"I", I}, {"O", O}, {"Q", Q}});
        DeviceGuard guard(device, kDot);
        dispatch_dtype(dtype, [&](auto tag) {
          run_dot<typename decltype(tag)::type>(a, g, M, S, workspace, workspace_size, N, T, I, O, Q, device,
                                                as_stream(stream));
        });
      },
      py::arg("a"), py::arg("g"), py::arg("M"), py::arg("S"), py::arg("workspace"), py::arg("workspace_size"),
      py::arg("N"), py::arg("T"), py::arg("I"), py::arg("O"), py::arg("Q"), py::arg("dtype"), py::arg("device"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "S[N, Q] = Σ_t g[n, t]ᵀ M[q] a[n, t] for contiguous a [N, T, I], g [N, T, O], M [Q, O, I].");
  m.def(
      "ghost_pairwise_workspace",
      [](int64_t Q, int64_t S, int64_t N, int64_t T, int64_t I, int64_t O, int dtype, int device) {
        check_sizes(kPair, {{"Q", Q}, {"S", S}, {"N", N}, {"T", T}, {"I", I}, {"O", O}});
        DeviceGuard guard(device, kPair);
        int64_t elems = 0;
        dispatch_dtype(dtype, [&](auto tag) {
          elems = plan_pair<acc_t<typename decltype(tag)::type>>(Q, S, N, T, I, O, device).workspace;
        });
        return elems;
      },
      py::arg("Q"), py::arg("S"), py::arg("N"), py::arg("T"), py::arg("I"), py::arg("O"), py::arg("dtype"),
      py::arg("device"), "Workspace (elements of the result dtype) ghost_pairwise needs for these sizes.");
  m.def(
      "ghost_pairwise",
      [](std::uintptr_t a_q, std::uintptr_t g_q, std::uintptr_t a, std::uintptr_t g, std::uintptr_t S_out,
         std::uintptr_t workspace, int64_t workspace_size, int64_t Q, int64_t S, int64_t N, int64_t T, int64_t I,
         int64_t O, int dtype, int device, std::uintptr_t stream) {
        check_sizes(kPair, {{"Q", Q}, {"S", S}, {"N", N}, {"T", T}, {"I", I}, {"O", O}});
        DeviceGuard guard(device, kPair);
        dispatch_dtype(dtype, [&](auto tag) {
          run_pair<typename decltype(tag)::type>(a_q, g_q, a, g, S_out, workspace, workspace_size, Q, S, N, T,
                                                 I, O, device, as_stream(stream));
        });
      },
      py::arg("a_q"), py::arg("g_q"), py::arg("a"), py::arg("g"), py::arg("out"), py::arg("workspace"),
      py::arg("workspace_size"), py::arg("Q"), py::arg("S"), py::arg("N"), py::arg("T"), py::arg("I"),
      py::arg("O"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "out[Q, N] = ⟨Σ_s g_q[q, s] a_q[q, s]ᵀ, Σ_t g[n, t] a[n, t]ᵀ⟩ for contiguous a_q [Q, S, I],\n"
      "g_q [Q, S, O], a [N, T, I], g [N, T, O].");
}

}  // namespace dtda::cuda
