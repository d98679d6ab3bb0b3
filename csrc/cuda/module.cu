// dtda._C_cuda: the torch-free CUDA module. Each op's .cu file defines its bind_<op> function
// (cuda/bindings.h); kernels run on the stream handle Python passes
// (torch.cuda.current_stream().cuda_stream).
#include <pybind11/pybind11.h>
#include <cuda_runtime.h>

#include "cuda/bindings.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "dtda native CUDA kernels (torch-free; pointers, sizes, dtype codes and streams in)";
  m.attr("archs") = DTDA_CUDA_ARCHS;
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  dtda::cuda::bind_ops(m);
}
