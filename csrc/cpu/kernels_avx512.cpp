// The CPU kernels for AVX-512 F/BW/VL (built with -mavx512f -mavx512bw -mavx512vl).
// Selected at run time by isa.cpp; never called on a CPU that lacks the set.
#define FO_ISA_NS avx512
#define FO_KERNEL_TABLE kernels_avx512

#include "vec_avx512.h"
#include "kernels_impl.h"
