// Forced include (-include) for csrc/cuda/register.cpp and csrc/cuda/plan_ops.cpp
// in the emulated build: their STABLE_TORCH_LIBRARY_IMPL(fusedopt, CUDA, m)
// registers the same functions for torch.ops.fusedopt_emu on the CPU dispatch
// key instead (see device_shims.cpp for why CPU tensors are the emulated
// device). Keeps the product's registration lines the only list of the ops.
#pragma once

#include <torch/csrc/stable/library.h>

#undef STABLE_TORCH_LIBRARY_IMPL
#define STABLE_TORCH_LIBRARY_IMPL(ns, k, m) _STABLE_TORCH_LIBRARY_IMPL(fusedopt_emu, CPU, m, C10_UID)
