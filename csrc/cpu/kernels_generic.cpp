// The CPU kernels for the build's baseline instruction set (any CPU).
// Selected at run time by isa.cpp; never called on a CPU that lacks the set.
#define FO_ISA_NS generic
#define FO_KERNEL_TABLE kernels_generic

#include "vec_generic.h"
#include "kernels_impl.h"
