// Chooses the CPU kernels once per process from what the CPU (and the OS) support.
// FUSEDOPT_CPU_ISA=generic|avx2|avx512 caps the choice, e.g. to test every path
// on one machine.
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels.h"
#include "ops.h"

namespace fusedopt {
namespace cpu {
namespace {

int requested_cap() {
  const char* env = std::getenv("FUSEDOPT_CPU_ISA");
  if (env == nullptr || *env == '\0') return 2;
  if (std::strcmp(env, "generic") == 0) return 0;
  if (std::strcmp(env, "avx2") == 0) return 1;
  return 2;  // "avx512" or anything else: no cap (the Python side warns on typos)
}

const KernelTable& choose() {
  const int cap = requested_cap();
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the wide registers.
  if (cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return kernels_avx512();
  }
  if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return kernels_avx2();
  }
#else
  (void)cap;
#endif
  return kernels_generic();
}

}  // namespace

const KernelTable& active_kernels() {
  static const KernelTable& table = choose();
  return table;
}

std::string cpu_isa() {
  return active_kernels().isa;
}

}  // namespace cpu
}  // namespace fusedopt
