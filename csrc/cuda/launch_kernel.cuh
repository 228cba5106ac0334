// The one place the library launches a kernel, and reads the launch's error.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace fusedopt {
namespace cuda {

// The launch's error, or one an earlier kernel left behind (CUDA errors are
// sticky), which is why device.h's message says "or before it".
inline const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// Launches `kernel` over grid x block on `stream` (no dynamic shared memory);
// returns the launch's error or nullptr.
//
// Only nvcc builds the product. The other branch exists for the tests: they
// compile these sources with a host compiler, against the stand-in CUDA headers
// of tests/cuda_emu, which run the same kernel over the same grid on the CPU
// under an emulation of CUDA's execution model (the launch syntax is not C++).
template <class... Params, class... Args>
inline const char* launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                                 Args&&... args) {
#if defined(__CUDACC__)
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
#else
  fo_emu_launch(kernel, grid, block, 0, stream, std::forward<Args>(args)...);
#endif
  return last_error();
}

}  // namespace cuda
}  // namespace fusedopt
