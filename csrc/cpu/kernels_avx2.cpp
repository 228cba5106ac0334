// The CPU kernels for AVX2 + FMA + F16C (built with -mavx2 -mfma -mf16c).
// Selected at run time by isa.cpp; never called on a CPU that lacks the set.
#define FO_ISA_NS avx2
#define FO_KERNEL_TABLE kernels_avx2

#include "vec_avx2.h"
#include "kernels_impl.h"
