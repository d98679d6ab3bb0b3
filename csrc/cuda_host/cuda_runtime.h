// Shim of the CUDA runtime header for the host emulation (emu.h): the runtime calls, types and
// math functions that the kernels of csrc/cuda use, and nothing else. Test-only.
#pragma once
#include <math.h>

#include "emu.h"

// The runtime API level the shim mirrors (CUDA 13.0), reported as cuda_runtime_version.
#define CUDART_VERSION 13000

// One emulated device, index 0.
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
// cudaDevAttrMultiProcessorCount reports dtda::emu::sm_count() (tests vary it to exercise the
// split planning); cudaDevAttrMaxThreadsPerBlock reports 1024; other attributes are invalid.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
// Returns and clears the calling thread's last error.
cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t error);

// cos(πx) of the CUDA math API, computed in double and rounded once.
inline float cospif(float x) {
  const double r = fmod(static_cast<double>(x), 2.0);  // exact
  return static_cast<float>(cos(3.14159265358979323846 * r));
}
