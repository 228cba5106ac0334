// CPU implementations of the fusedopt ops (schemas in csrc/ops.cpp).
#pragma once

#include <optional>
#include <string>

#include <torch/csrc/stable/c/shim.h>

#include "../tensor_checks.h"

namespace fusedopt {
namespace cpu {

#include "../op_decls.inc"

std::string cpu_isa();

// The registered rules' names, comma-separated (csrc/rules/registry.h).
std::string rules();

}  // namespace cpu
}  // namespace fusedopt
