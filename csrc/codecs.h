// State codecs: the storage layer between an update rule and memory. A rule's
// kernels load each state element as float and store it back through the
// state list's codec; they are templated on the codec, never on a raw dtype.
//
// A codec declares
//   using Storage = ...;           what one element is stored as
//   static constexpr int kBlock;   elements that share side data (a scale); 1: none
// and each backend supplies the element conversions of the storage types
// (csrc/cpu/vec_*.h, csrc/cuda/multi_tensor_apply.cuh). The kernels' loops walk
// a tensor in units of max(vector, kBlock) elements: for kBlock == 1 a unit is
// the CPU vector or the CUDA pack, exactly what runs without codecs. A codec
// with kBlock > 1 (Quant8Codec: 8-bit codes + an fp32 scale per block) has a
// loop of its own (CPU: rule_blocks_q8 in cpu/kernels_impl.h): each state's
// block is dequantized into floats, the plain-float loop updates the block, and
// the block's new values are requantized with their new absmax in the same
// pass. The update rules do not change.
//
// fp32, bf16 and fp16 states are PlainCodec<float>, <bf16_t>, <fp16_t>; params
// and grads go through the same family.
#pragma once

#include <cstdint>

#include "storage.h"

namespace fusedopt {

template <class T>
struct PlainCodec {
  using Storage = T;
  static constexpr int kBlock = 1;
};

// 8-bit blockwise dynamic quantization (csrc/math/quant8.h): uint8 codes, one
// float32 absmax per block of 256 (math::kQuant8Block; checked where the CPU
// loop includes both). Whether a state uses the signed or the unsigned map is
// the rule's declaration (Rule::kStateSigned).
struct Quant8Codec {
  using Storage = uint8_t;
  static constexpr int kBlock = 256;
};

// Calls fn(PlainCodec<T>{}) for the codec of a state list stored as `d`.
template <class Fn>
bool dispatch_state_codec(DType d, Fn fn) {
  switch (d) {
    case DType::F32:
      fn(PlainCodec<float>{});
      return true;
    case DType::BF16:
      fn(PlainCodec<bf16_t>{});
      return true;
    case DType::F16:
      fn(PlainCodec<fp16_t>{});
      return true;
    case DType::U8:
      return false;  // blockwise: the callers that handle it dispatch it themselves
  }
  return false;
}

}  // namespace fusedopt
