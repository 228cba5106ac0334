// Keeps the libraries loadable wherever torch's own wheels load (manylinux_2_28:
// glibc >= 2.28, the libstdc++ of GCC 8), whatever newer toolchain builds them.
//
// A newer glibc/libstdc++ gives a few symbols newer versions than that floor;
// each has an older, equivalent form. The libstdc++ ones are bound here inside
// the library (hidden, so nothing outside sees these definitions); glibc's pow
// and dlsym are bound to their old versions by glibc_versions.h:
//
//  * std::ostringstream / std::stringstream default constructors
//    (GLIBCXX_3.4.26, GCC 9): the constructors taking the default open mode,
//    which the standard defines them to be;
//  * __libc_single_threaded (GLIBC_2.32), which libstdc++'s reference counting
//    reads to skip atomics: 0 here, i.e. always use the atomic path;
//  * std::__throw_bad_array_new_length (GLIBCXX_3.4.29, GCC 11), which
//    std::allocator calls for a length past what it can allocate: it throws
//    std::bad_array_new_length, which the old libstdc++ has (CXXABI_1.3.8);
//  * pow (GLIBC_2.29) and dlsym (GLIBC_2.34): see glibc_versions.h.
//
// tests/test_wheel.py checks the resulting symbol versions.
#include <new>  // std::bad_array_new_length
#include <sstream>  // defines __GLIBCXX__ and, through glibc's headers, __GLIBC__

#if defined(__linux__) && defined(__GLIBC__) && defined(__GLIBCXX__)

extern "C" {
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}

namespace {

using OStream = std::basic_ostringstream<char>;
using IOStream = std::basic_stringstream<char>;

}  // namespace

extern "C" __attribute__((visibility("hidden"))) void fo_ostringstream_default(void* self) __asm__(
    "_ZNSt7__cxx1119basic_ostringstreamIcSt11char_traitsIcESaIcEEC1Ev");
extern "C" __attribute__((visibility("hidden"))) void fo_stringstream_default(void* self) __asm__(
    "_ZNSt7__cxx1118basic_stringstreamIcSt11char_traitsIcESaIcEEC1Ev");

void fo_ostringstream_default(void* self) {
  new (self) OStream(std::ios_base::out);
}

void fo_stringstream_default(void* self) {
  new (self) IOStream(std::ios_base::in | std::ios_base::out);
}

extern "C" __attribute__((visibility("hidden"), noreturn)) void fo_throw_bad_array_new_length() __asm__(
    "_ZSt28__throw_bad_array_new_lengthv");

void fo_throw_bad_array_new_length() {
  throw std::bad_array_new_length();
}

#endif
