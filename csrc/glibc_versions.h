// Binds the libraries' references to glibc functions that newer glibc releases
// gave new default symbol versions to the old versions of the same functions,
// so that the libraries load on glibc 2.28, torch's own floor (manylinux_2_28;
// see glibc_floor.cpp for the libstdc++ side). setup.py force-includes this
// header into every C++ translation unit of the torch libraries, since the
// references come from headers the project does not own as well as its own:
//
//  * pow: glibc 2.29 gave it a new default version (GLIBC_2.29); the update
//    rules call it;
//  * dlsym: glibc 2.34 moved it from libdl into libc under GLIBC_2.34. torch's
//    stable-ABI headers call it from torch 2.14 on (torch/csrc/stable/macros.h,
//    lookup_stable_symbol, behind TORCH_DYNAMIC_VERSION_CALL). The old version
//    is the same function: libc defines it for old binaries, and on glibc
//    < 2.34 libdl.so.2 (which setup.py names as needed) defines it.
//
// tests/test_wheel.py checks the resulting symbol versions against the policy.
#pragma once

#if defined(__GLIBC__) || defined(__linux__)
#include <features.h>  // defines __GLIBC__ on glibc systems
#endif

#if defined(__GLIBC__) && !defined(__CUDA_ARCH__)
#if defined(__x86_64__)
__asm__(".symver pow,pow@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver pow,pow@GLIBC_2.17");
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
#endif
#endif
