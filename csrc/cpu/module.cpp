// dtda._C: the torch-free CPU module. Each op's file defines its bind_<op> function; this file
// only collects them and reports how the module was built (python -m dtda info).
#include <pybind11/pybind11.h>

#include "cpu/blas.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace dtda::cpu {
void bind_kron_covariance(pybind11::module_& m);
void bind_ghost(pybind11::module_& m);  // ghost_dot, ghost_pairwise
void bind_ekfac_eigvals(pybind11::module_& m);
void bind_kron_apply(pybind11::module_& m);
void bind_jl_project(pybind11::module_& m);
void bind_seed_moments(pybind11::module_& m);
}  // namespace dtda::cpu

PYBIND11_MODULE(_C, m) {
  m.doc() = "dtda native CPU kernels (torch-free; pointers, sizes and dtype codes in)";
  m.attr("__version__") = DTDA_VERSION_INFO;
  dtda::cpu::blas::set_threads(1);  // kernels parallelise with OpenMP around single-threaded BLAS
#ifdef _OPENMP
  m.attr("openmp") = true;
  m.def("max_threads", [] { return omp_get_max_threads(); });
#else
  m.attr("openmp") = false;
  m.def("max_threads", [] { return 1; });
#endif
  dtda::cpu::bind_kron_covariance(m);
  dtda::cpu::bind_ghost(m);
  dtda::cpu::bind_ekfac_eigvals(m);
  dtda::cpu::bind_kron_apply(m);
  dtda::cpu::bind_jl_project(m);
  dtda::cpu::bind_seed_moments(m);
}
