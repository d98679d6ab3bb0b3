// PLACEHOLDER: replaced by the op's CPU kernel.
#include <pybind11/pybind11.h>
namespace dtda::cpu {
void bind_kron_apply(pybind11::module_& m) {}
}  // namespace dtda::cpu
