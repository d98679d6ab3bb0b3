// dtda._C_cuda: the torch-free CUDA module. Each op's .cu file defines its bind_<op> function;
// kernels run on the stream handle Python passes (torch.cuda.current_stream().cuda_stream).
#include <pybind11/pybind11.h>
#include <cuda_runtime.h>

namespace dtda::cuda {
void bind_kron_covariance(pybind11::module_& m);
void bind_ghost(pybind11::module_& m);
void bind_ekfac_eigvals(pybind11::module_& m);
void bind_kron_apply(pybind11::module_& m);
void bind_jl_project(pybind11::module_& m);
void bind_seed_moments(pybind11::module_& m);
}  // namespace dtda::cuda

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "dtda native CUDA kernels (torch-free; pointers, sizes, dtype codes and streams in)";
  m.attr("archs") = DTDA_CUDA_ARCHS;
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  dtda::cuda::bind_kron_covariance(m);
  dtda::cuda::bind_ghost(m);
  dtda::cuda::bind_ekfac_eigvals(m);
  dtda::cuda::bind_kron_apply(m);
  dtda::cuda::bind_jl_project(m);
  dtda::cuda::bind_seed_moments(m);
}
