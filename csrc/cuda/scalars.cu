// The per-tensor scalar kernel: advances step counters and clears momentum flags
// (and stochastic rounding's keys) for a whole call in one launch (3072 tensors per launch).
#include "kernel_common.cuh"

namespace fusedopt {
namespace cuda {
namespace {

constexpr int kMaxScalars = 3072;

struct ScalarTable {
  void* ptr[kMaxScalars];
};

__global__ void advance_scalars_kernel(const ScalarTable table, int n, const float* found_inf, ScalarOp op) {
  if (skip_step(found_inf)) return;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (op == ScalarOp::kIncrementFloat) {
    *static_cast<float*>(table.ptr[i]) += 1.0f;
  } else if (op == ScalarOp::kAdvanceRoundingKey) {
    static_cast<int64_t*>(table.ptr[i])[1] += 1;
  } else {
    *static_cast<bool*>(table.ptr[i]) = false;
  }
}

}  // namespace

const char* advance_scalars(const TensorLists& t, const float* found_inf, ScalarOp op, cudaStream_t stream) {
  return advance_scalars(t.scalar, t.n, found_inf, op, stream);
}

const char* advance_scalars(void* const* ptrs, int count, const float* found_inf, ScalarOp op, cudaStream_t stream) {
  ScalarTable table;
  int n = 0;
  for (int i = 0; i <= count; ++i) {
    if (n == kMaxScalars || (i == count && n > 0)) {
      const char* err = launch_kernel(advance_scalars_kernel, (n + 255) / 256, 256, stream, table, n, found_inf, op);
      if (err) return err;
      n = 0;
    }
    if (i < count) table.ptr[n++] = ptrs[i];
  }
  return nullptr;
}

}  // namespace cuda
}  // namespace fusedopt
