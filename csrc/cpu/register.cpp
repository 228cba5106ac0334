// Registers the CPU kernels for the CPU dispatch key (the rules' list ops: rule_ops.cpp).
#include <torch/csrc/stable/library.h>

#include "ops.h"

STABLE_TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("grad_stats_", TORCH_BOX(&fusedopt::cpu::grad_stats_));
  m.impl("unscale_", TORCH_BOX(&fusedopt::cpu::unscale_));
  m.impl("clip_value_", TORCH_BOX(&fusedopt::cpu::clip_value_));
}

// cpu_isa and rules take no tensor, so it is served whatever the dispatch key.
STABLE_TORCH_LIBRARY_IMPL(fusedopt, CompositeExplicitAutograd, m) {
  m.impl("cpu_isa", TORCH_BOX(&fusedopt::cpu::cpu_isa));
  m.impl("rules", TORCH_BOX(&fusedopt::cpu::rules));
}
