// The op schemas of csrc/ops.cpp, defined again under the test-only namespace
// fusedopt_emu (torch.ops.fusedopt_emu.*), so that the emulated CUDA library
// and the real CPU library live side by side in one process. torch's macro
// spells the namespace through a second macro, which expands the name given.
#include <torch/csrc/stable/library.h>

#define fusedopt fusedopt_emu
#include "ops.cpp"
#undef fusedopt
