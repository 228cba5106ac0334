// Registers the CUDA kernels for the CUDA dispatch key. The schemas come from
// the CPU library (fusedopt/_C), which is always loaded first.
#include <torch/csrc/stable/library.h>

#include "ops.h"

STABLE_TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("grad_stats_", TORCH_BOX(&fusedopt::cuda::grad_stats_));
  m.impl("unscale_", TORCH_BOX(&fusedopt::cuda::unscale_));
  m.impl("clip_value_", TORCH_BOX(&fusedopt::cuda::clip_value_));
}
