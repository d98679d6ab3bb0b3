// dtda._C_cuda_emu: the CUDA kernels of csrc/cuda built for the host emulation (test-only, CMake
// option DTDA_CUDA_EMULATION). Same entry points as dtda._C_cuda (module.cu), taking host
// pointers; `emulation` holds the controls and the emulation's own test kernels.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda_runtime.h"
#include "cuda/bindings.h"

namespace dtda::cuda::selftest {
void bind(pybind11::module_& m);
}  // namespace dtda::cuda::selftest

PYBIND11_MODULE(_C_cuda_emu, m) {
  namespace py = pybind11;
  m.doc() = "dtda CUDA kernels run on the CPU by the host emulation (tests only; host pointers in)";
  m.attr("archs") = "host-emulation";
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  dtda::cuda::bind_ops(m);

  py::module_ emu = m.def_submodule("emulation", "Controls and self-tests of the host emulation");
  emu.def("set_sm_count", &dtda::emu::set_sm_count, py::arg("n"),
          "Set the SM count cudaDeviceGetAttribute reports (drives the split planning).");
  emu.def("sm_count", &dtda::emu::sm_count, "The SM count cudaDeviceGetAttribute reports.");
  emu.def("launch_counts", &dtda::emu::launch_counts,
          "Launches per kernel (named as written at the launch) since the last reset.");
  emu.def("reset_launch_counts", &dtda::emu::reset_launch_counts);
  emu.def("set_workspace_bytes", &dtda::emu::set_workspace_bytes, py::arg("bytes"),
          "Set the ops' workspace budget (default 1 GiB); smaller budgets process examples in chunks.");
  emu.def("workspace_bytes", &dtda::emu::workspace_bytes, "The ops' workspace budget in bytes.");
  dtda::cuda::selftest::bind(emu);
}
