// The op bindings of the CUDA kernels: each op's .cu file defines its bind_<op>; bind_ops adds
// them all. Shared by dtda._C_cuda (module.cu) and the test-only host-emulation module
// (csrc/cuda_host/module_emu.cpp), so both expose the same entry points.
#pragma once
#include <pybind11/pybind11.h>

namespace dtda::cuda {
void bind_kron_covariance(pybind11::module_& m);
void bind_ghost(pybind11::module_& m);
void bind_ekfac_eigvals(pybind11::module_& m);
void bind_kron_apply(pybind11::module_& m);
void bind_jl_project(pybind11::module_& m);
void bind_seed_moments(pybind11::module_& m);

inline void bind_ops(pybind11::module_& m) {
  bind_kron_covariance(m);
  bind_ghost(m);
  bind_ekfac_eigvals(m);
  bind_kron_apply(m);
  bind_jl_project(m);
  bind_seed_moments(m);
}
}  // namespace dtda::cuda
