// How the emulated library takes CPU tensors for CUDA tensors: it defines, for
// itself alone (hidden symbols bind inside this shared object), the few C-shim
// functions of torch that the CUDA host code asks about devices. Every other
// library in the process keeps torch's own.
//  - aoti_torch_device_type_cuda(): the code the host code compares a tensor's
//    device type with (raw_handles.h, torch::stable::Tensor::is_cuda) answers
//    the CPU's, so CPU tensors pass every "is a CUDA tensor" check; their
//    device index is -1, the emulated device's index.
//  - the device guard and the current stream: a CPU-only torch has neither;
//    here the guard accepts the emulated device only, and its stream is a
//    token (launches are synchronous).
// No product source changes for this: the CUDA host code compiles unchanged.
#include <cstdint>
#include <cstdio>

extern "C" {

int32_t aoti_torch_device_type_cpu();  // torch's

namespace {
constexpr int32_t kSuccess = 0;
constexpr int32_t kFailure = 1;
constexpr int32_t kEmulatedDevice = -1;  // a CPU tensor's device index
struct Guard {
  int32_t index;
};
Guard the_guard;
char stream_token;
}  // namespace

__attribute__((visibility("hidden"))) int32_t aoti_torch_device_type_cuda() { return aoti_torch_device_type_cpu(); }

__attribute__((visibility("hidden"))) int32_t aoti_torch_create_device_guard(int32_t index, void** ret) {
  if (index != kEmulatedDevice) {
    std::fprintf(stderr, "fusedopt CUDA emulation: a device guard for device %d, not the emulated device\n", index);
    return kFailure;
  }
  the_guard.index = index;
  *ret = &the_guard;
  return kSuccess;
}

__attribute__((visibility("hidden"))) int32_t aoti_torch_delete_device_guard(void*) { return kSuccess; }

__attribute__((visibility("hidden"))) int32_t aoti_torch_device_guard_set_index(void*, int32_t index) {
  return index == kEmulatedDevice ? kSuccess : kFailure;
}

__attribute__((visibility("hidden"))) int32_t aoti_torch_get_current_cuda_stream(int32_t device, void** ret) {
  if (device != kEmulatedDevice) return kFailure;
  *ret = &stream_token;
  return kSuccess;
}

}  // extern "C"
