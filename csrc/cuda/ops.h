// CUDA implementations of the fusedopt ops (schemas in csrc/ops.cpp).
#pragma once

#include <optional>

#include "../tensor_checks.h"

namespace fusedopt {
namespace cuda {

#include "../op_decls.inc"

}  // namespace cuda
}  // namespace fusedopt
