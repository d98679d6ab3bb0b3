// PLACEHOLDER: replaced by the op's CUDA kernel.
#include <pybind11/pybind11.h>
namespace dtda::cuda {
void bind_ghost(pybind11::module_& m) {}
}  // namespace dtda::cuda
