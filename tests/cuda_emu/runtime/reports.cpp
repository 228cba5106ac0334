// How findings are named and surfaced. A detector's finding ends the launch
// with an error whose text is the report (the op that launched then raises it,
// as a CUDA error after a launch would); ASan and UBSan findings end the
// process, and the death callback adds which kernel, block and thread ran.
#include <dlfcn.h>
#include <link.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <unordered_map>

#include "state.h"

namespace fo_emu {
namespace {

cudaError_t last_error = cudaSuccess;
std::string last_text;
std::unordered_map<const void*, std::string> names;  // kernel entry -> name

std::string symbolize(const void* pc, const char* fmt) {
  if (!__sanitizer_symbolize_pc) return "";
  char buf[1024] = {0};
  __sanitizer_symbolize_pc(const_cast<void*>(pc), fmt, buf, sizeof(buf));
  return buf;
}

// Drops parameter lists: "ns::(anonymous namespace)::adam_kernel<float, ...>(ChunkTable<6>, ...)"
// becomes "ns::(anonymous namespace)::adam_kernel<float, ...>", and a static
// local "f(float*, bool)::value" becomes "f::value".
std::string strip_params(const std::string& name) {
  std::string out;
  int angle = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<') ++angle;
    if (c == '>') --angle;
    if (c == '(' && angle == 0 && name.compare(i, 21, "(anonymous namespace)") != 0) {
      int depth = 0;
      for (; i < name.size(); ++i) {
        if (name[i] == '(') ++depth;
        if (name[i] == ')' && --depth == 0) break;
      }
      continue;
    }
    out += c;
  }
  return out;
}

void on_death() {
  if (emu.current == nullptr) return;
  std::fprintf(stderr,
               "fusedopt CUDA emulation: the error above happened in kernel %s, block %s, thread %s\n",
               kernel_name().c_str(), dims(emu.block).c_str(), dims(emu.current->idx).c_str());
}

// ASan and UBSan are two runtimes, each with its own death callback: set both.
int install_in(struct dl_phdr_info* info, size_t, void*) {
  const char* name = info->dlpi_name;
  if (name == nullptr || (std::strstr(name, "libasan") == nullptr && std::strstr(name, "libubsan") == nullptr)) {
    return 0;
  }
  void* handle = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return 0;
  if (auto set = reinterpret_cast<void (*)(void (*)())>(dlsym(handle, "__sanitizer_set_death_callback"))) {
    set(&on_death);
  }
  dlclose(handle);
  return 0;
}

struct InstallDeathCallback {
  InstallDeathCallback() { dl_iterate_phdr(&install_in, nullptr); }
} install_death_callback;

}  // namespace

std::string dims(uint3 v) {
  return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")";
}

const std::string& kernel_name() {
  if (emu.shape == nullptr) {
    static const std::string none = "(none)";
    return none;
  }
  std::string& name = names[emu.shape->kernel];
  if (name.empty()) {
    // +1: the symbolizer looks up the instruction before the address it gets
    name = strip_params(symbolize(static_cast<const char*>(emu.shape->kernel) + 1, "%f"));
    if (name.compare(0, 5, "void ") == 0) name = name.substr(5);  // a template's return type
    if (name.empty() || name == "??") {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%p", emu.shape->kernel);
      name = buf;
    }
  }
  return name;
}

std::string where(const void* pc) {
  std::string s = symbolize(pc, "%s:%l");
  if (s.empty() || s.compare(0, 2, "??") == 0) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "pc %p", pc);
    return buf;
  }
  return s;
}

std::string shared_name(const void* addr) {
  std::ostringstream out;
  char name[512] = {0};
  if (__sanitizer_symbolize_global) {
    __sanitizer_symbolize_global(const_cast<void*>(addr), "%g", name, sizeof(name));
  }
  out << "shared offset " << (static_cast<const char*>(addr) - shared_begin());
  if (name[0] != '\0' && std::strcmp(name, "??") != 0) out << ", " << strip_params(name);
  return out.str();
}

void set_error(cudaError_t code, const std::string& text) {
  last_error = code;
  last_text = text;
}

void fail(cudaError_t code, const std::string& report) {
  if (!emu.aborted) set_error(code, "fusedopt CUDA emulation: " + report);
  emu.aborted = true;
  if (emu.current != nullptr) {
    yield_to_scheduler(false);
    __builtin_trap();  // an aborted launch never resumes its threads
  }
}

}  // namespace fo_emu

cudaError_t cudaGetLastError() {
  const cudaError_t e = fo_emu::last_error;
  fo_emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return fo_emu::last_error; }

const char* cudaGetErrorString(cudaError_t err) {
  // The report of the last finding, whose code this is; CUDA's wording otherwise.
  if (!fo_emu::last_text.empty() && err != cudaSuccess) return fo_emu::last_text.c_str();
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
