// C entry points for the tests (ctypes) that probe the stand-in headers
// themselves: the fp16/bf16 conversions, element by element.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#define FO_EMU_EXPORT extern "C" __attribute__((visibility("default")))

FO_EMU_EXPORT void fo_emu_float_to_half(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __half_as_ushort(__float2half_rn(in[i]));
}

FO_EMU_EXPORT void fo_emu_half_to_float(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __half2float(__ushort_as_half(in[i]));
}

FO_EMU_EXPORT void fo_emu_float_to_bfloat16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
}

FO_EMU_EXPORT void fo_emu_bfloat16_to_float(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __bfloat162float(__ushort_as_bfloat16(in[i]));
}
