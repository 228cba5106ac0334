// The storage types the kernels read and write (CPU and CUDA alike).
#pragma once

#include <cstdint>

namespace fusedopt {

// U8: 8-bit blockwise-quantized states (uint8 codes + a float32 absmax per
// block, csrc/math/quant8.h); never a param or grad dtype.
enum class DType : uint8_t { F32 = 0, BF16 = 1, F16 = 2, U8 = 3 };

// 16-bit floats as their bit patterns; each backend converts them itself.
struct bf16_t {
  uint16_t x;
};
struct fp16_t {
  uint16_t x;
};

static inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32:
      return "float32";
    case DType::BF16:
      return "bfloat16";
    case DType::F16:
      return "float16";
    case DType::U8:
      return "8-bit";
  }
  return "?";
}

}  // namespace fusedopt
