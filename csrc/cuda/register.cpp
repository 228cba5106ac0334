// Registers the CUDA kernels for the CUDA dispatch key. The schemas come from
// the CPU library (fusedopt/_C), which is always loaded first.
#include <torch/csrc/stable/library.h>

#include "ops.h"

STABLE_TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("adam_", TORCH_BOX(&fusedopt::cuda::adam_));
  m.impl("sgd_", TORCH_BOX(&fusedopt::cuda::sgd_));
  m.impl("grad_stats_", TORCH_BOX(&fusedopt::cuda::grad_stats_));
  m.impl("unscale_", TORCH_BOX(&fusedopt::cuda::unscale_));
  m.impl("clip_value_", TORCH_BOX(&fusedopt::cuda::clip_value_));
  m.impl("adam_plan_make", TORCH_BOX(&fusedopt::cuda::adam_plan_make));
  m.impl("sgd_plan_make", TORCH_BOX(&fusedopt::cuda::sgd_plan_make));
  m.impl("plan_bind", TORCH_BOX(&fusedopt::cuda::plan_bind));
  m.impl("plan_grad_stats_", TORCH_BOX(&fusedopt::cuda::plan_grad_stats_));
  m.impl("adam_plan_step_", TORCH_BOX(&fusedopt::cuda::adam_plan_step_));
  m.impl("sgd_plan_step_", TORCH_BOX(&fusedopt::cuda::sgd_plan_step_));
  m.impl("plan_release", TORCH_BOX(&fusedopt::cuda::plan_release));
  m.impl("plan_free", TORCH_BOX(&fusedopt::cuda::plan_free));
}
