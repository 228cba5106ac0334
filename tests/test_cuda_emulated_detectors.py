"""The emulation's checks bite: each is fed a deliberately broken kernel,
written here (not a change to the product), and must report it with the
kernel, block, thread(s) and address; the same kernels done right run clean.

The kernels are compiled like csrc/cuda's (tests/cuda_emu_build.py) into one
program whose first argument picks the case."""

import os
import re
import subprocess

import pytest

import cuda_emu_build

pytestmark = pytest.mark.cuda_emulated

PROGRAM = r"""
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

extern "C" void* fo_emu_alloc(uint64_t bytes, uint64_t lead);

template <class T>
struct alignas(sizeof(T) * 4) Pack {
  T v[4];
};

// thread 0 sets a value the others read: they need a barrier between
__global__ void broadcast_kernel(float* out, bool sync) {
  __shared__ float value;
  if (threadIdx.x == 0) value = 42.0f;
  if (sync) __syncthreads();
  out[threadIdx.x] = value;
}

// reads shared memory no thread of this block wrote
__global__ void uninitialized_kernel(float* out) {
  __shared__ float values[64];
  if (threadIdx.x < 32) values[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = values[threadIdx.x];
}

// a sum over the first half-warp (mask 0xffff): offsets must start at 8 (with 8,
// lanes 8-15 read lanes 16-23, outside the mask: legal, and unused)
__global__ void half_warp_sum_kernel(float* out, int first_offset) {
  float x = static_cast<float>(threadIdx.x);
  if (threadIdx.x < 16) {
    for (int offset = first_offset; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffu, x, offset);
    if (threadIdx.x == 0) out[0] = x;
  }
}

// a full-warp shuffle that half the warp never calls
__global__ void partial_warp_kernel(float* out, bool all) {
  float x = static_cast<float>(threadIdx.x);
  if (all || threadIdx.x < 16) x += __shfl_down_sync(0xffffffffu, x, 1);
  out[threadIdx.x] = x;
}

// a tail rounded up to whole packs: reads past the end of `in`
__global__ void tail_kernel(const float* in, float* out, int n, bool round_up) {
  const int end = round_up ? (n + 3) / 4 * 4 : n;
  for (int i = threadIdx.x; i < end; i += blockDim.x) out[i] = in[i] * 2.0f;
}

// a vector load that trusts alignment it was not given
__global__ void pack_kernel(const float* in, float* out, bool check_alignment) {
  if (threadIdx.x != 0) return;
  if (check_alignment && reinterpret_cast<uintptr_t>(in) % sizeof(Pack<float>) != 0) {
    for (int k = 0; k < 4; ++k) out[k] = in[k];
    return;
  }
  const Pack<float> p = *reinterpret_cast<const Pack<float>*>(in);
  for (int k = 0; k < 4; ++k) out[k] = p.v[k];
}

// every block writes its index into one element
__global__ void blocks_kernel(float* out, bool own_element) {
  if (threadIdx.x == 0) out[own_element ? blockIdx.x : 0] = static_cast<float>(blockIdx.x);
}

// a barrier only some threads of the block reach
__global__ void divergent_kernel(float* out, bool uniform) {
  if (uniform || threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// reads the element before its (misaligned) start
__global__ void lead_kernel(const float* in, float* out, int shift) {
  out[threadIdx.x] = in[static_cast<int>(threadIdx.x) - shift];
}

template <int N>
struct Bytes {
  char bytes[N];
};
// 8 + 40000 bytes of parameters; 8 + 32756 is the most CUDA takes
template <int N>
__global__ void params_kernel(float* out, Bytes<N> b) { out[threadIdx.x] = b.bytes[threadIdx.x]; }

template <class... P, class... A>
int launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
  fo_emu_launch(kernel, grid, block, 0, nullptr, args...);
  const cudaError_t err = cudaGetLastError();
  std::printf("%s\n", err == cudaSuccess ? "clean" : cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 3;
}

int main(int argc, char** argv) {
  const char* c = argv[1];
  const bool fixed = argc > 2 && std::strcmp(argv[2], "fixed") == 0;
  float* out;
  cudaMalloc(&out, 1024 * sizeof(float));
  float* in;
  cudaMalloc(&in, 1001 * sizeof(float));
  cudaMemset(in, 0, 1001 * sizeof(float));
  if (!std::strcmp(c, "missing_sync")) return launch(broadcast_kernel, 2, 128, out, fixed);
  if (!std::strcmp(c, "uninitialized_shared")) return launch(uninitialized_kernel, 1, fixed ? 32 : 64, out);
  if (!std::strcmp(c, "wrong_shuffle_offset")) return launch(half_warp_sum_kernel, 1, 32, out, fixed ? 8 : 16);
  if (!std::strcmp(c, "shuffle_lanes_missing")) return launch(partial_warp_kernel, 1, 32, out, fixed);
  if (!std::strcmp(c, "out_of_bounds_tail")) return launch(tail_kernel, 1, 256, (const float*)in, out, 1001, !fixed);
  if (!std::strcmp(c, "misaligned_pack")) return launch(pack_kernel, 1, 32, (const float*)(in + 1), out, fixed);
  if (!std::strcmp(c, "two_blocks_one_element")) return launch(blocks_kernel, 3, 64, out, fixed);
  if (!std::strcmp(c, "divergent_barrier")) return launch(divergent_kernel, 1, 64, out, fixed);
  if (!std::strcmp(c, "before_a_misaligned_start")) {
    auto* view = static_cast<float*>(fo_emu_alloc(64 * sizeof(float), sizeof(float)));  // one float into its block
    std::memset(view, 0, 64 * sizeof(float));
    return launch(lead_kernel, 1, 64, (const float*)view, out, fixed ? 0 : 1);
  }
  if (!std::strcmp(c, "too_many_threads")) return launch(divergent_kernel, 1, fixed ? 1024 : 1025, out, true);
  if (!std::strcmp(c, "grid_too_tall")) return launch(blocks_kernel, dim3(1, fixed ? 65535 : 65536), 1, out, true);
  if (!std::strcmp(c, "parameters_too_big")) {
    return fixed ? launch(params_kernel<32756>, 1, 32, out, Bytes<32756>{})
                 : launch(params_kernel<40000>, 1, 32, out, Bytes<40000>{});
  }
  std::printf("no case %s\n", c);
  return 2;
}
"""

# A kernel whose static shared memory alone is over the limit (in a program of
# its own: the emulation counts every __shared__ variable of a program).
BIG_SHARED = r"""
#include <cuda_runtime.h>
#include <cstdio>

__global__ void big_shared_kernel(float* out) {
  __shared__ float tile[12289];  // 48 KiB + 4 bytes
  tile[threadIdx.x] = 1.0f;
  out[threadIdx.x] = tile[threadIdx.x];
}

int main() {
  float* out;
  cudaMalloc(&out, 32 * sizeof(float));
  fo_emu_launch(big_shared_kernel, 1, 32, 0, nullptr, out);
  const cudaError_t err = cudaGetLastError();
  std::printf("%s\n", err == cudaSuccess ? "clean" : cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 3;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    build = cuda_emu_build.build()
    out = {}
    tmp = tmp_path_factory.mktemp("broken_kernels")
    for name, text in (("broken", PROGRAM), ("big_shared", BIG_SHARED)):
        src = tmp / f"{name}.cu"
        src.write_text(text)
        out[name] = tmp / name
        build.compile_program(src, out[name])
    return out


def _run(exe, *args):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)
    return res.returncode, res.stdout + res.stderr


# case, what the report must say (regular expressions, all of them)
CASES = {
    "missing_sync": [
        r"shared-memory race \(read after write\) in kernel broadcast_kernel, block \(\d, 0, 0\)",
        r"thread \((?!0,)\d+, 0, 0\) reads 4 bytes at 0x[0-9a-f]+ \(shared offset \d+, .*value\) at .*broken\.cu:\d+",
        r"which thread \(0, 0, 0\) wrote at .*broken\.cu:\d+ with no barrier between",
    ],
    "uninitialized_shared": [
        r"shared-memory read of uninitialized memory in kernel uninitialized_kernel, block \(0, 0, 0\): "
        r"thread \(32, 0, 0\) reads 4 bytes at 0x[0-9a-f]+ \(shared offset \d+, uninitialized_kernel::values\)",
    ],
    "wrong_shuffle_offset": [
        r"undefined shuffle value used in kernel half_warp_sum_kernel, block \(0, 0, 0\): thread \(0, 0, 0\) "
        r"stores 4 bytes at 0x[0-9a-f]+ at .*broken\.cu:\d+ made of what thread \(0, 0, 0\) \(lane 0\) at "
        r"__shfl_down_sync \(.*broken\.cu:\d+\) read lane 16 \(offset 16\), which the mask 0xffff leaves out",
    ],
    "shuffle_lanes_missing": [
        r"divergent barrier or shuffle in kernel partial_warp_kernel, block \(0, 0, 0\): the block cannot go on",
        r"threads 0-15 wait at a shuffle with mask 0xffffffff \(.*broken\.cu:\d+\)",
        r"threads 16-31 have exited",
    ],
    "out_of_bounds_tail": [
        r"ERROR: AddressSanitizer: heap-buffer-overflow on address 0x[0-9a-f]+",
        r"READ of size 4",
        r"in tail_kernel\(.*broken\.cu:\d+",
        r"the error above happened in kernel tail_kernel, block \(0, 0, 0\), thread \(\d+, 0, 0\)",
    ],
    "misaligned_pack": [
        r"broken\.cu:\d+:\d+: runtime error: (load of|reference binding to) misaligned address 0x[0-9a-f]+ for type "
        r"'const struct Pack', which requires 16 byte alignment",
        r"the error above happened in kernel pack_kernel, block \(0, 0, 0\), thread \(0, 0, 0\)",
    ],
    "two_blocks_one_element": [
        r"two blocks write one element in kernel blocks_kernel: block \(\d, 0, 0\) thread \(0, 0, 0\) writes 4 bytes "
        r"at 0x[0-9a-f]+ at .*broken\.cu:\d+, which block \(\d, 0, 0\)( thread \(0, 0, 0\))? wrote in the same "
        r"launch",
    ],
    "divergent_barrier": [
        r"divergent barrier or shuffle in kernel divergent_kernel, block \(0, 0, 0\): the block cannot go on",
        r"threads 0-15 wait at __syncthreads \(.*broken\.cu:\d+\)",
        r"threads 16-63 have exited",
    ],
    "before_a_misaligned_start": [
        r"out-of-bounds read in kernel lead_kernel, block \(0, 0, 0\), thread \(0, 0, 0\): 4 bytes at 0x[0-9a-f]+ "
        r"at .*broken\.cu:\d+, 4 bytes before an emulated allocation of 256 bytes",
    ],
    "too_many_threads": [r"invalid launch of kernel divergent_kernel: block \(1025, 1, 1\) \(1025 threads\)"],
    "grid_too_tall": [r"invalid launch of kernel blocks_kernel: grid \(1, 65536, 1\)"],
    "parameters_too_big": [r"invalid launch of kernel params_kernel<40000>: its parameters take 40008 bytes: "
                           r"CUDA allows 32764"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_check_reports_the_broken_kernel(programs, case):
    code, out = _run(programs["broken"], case)
    assert code != 0, out
    for pattern in CASES[case]:
        assert re.search(pattern, out), f"{pattern!r} not in:\n{out}"


@pytest.mark.parametrize("case", list(CASES))
def test_the_kernel_done_right_runs_clean(programs, case):
    code, out = _run(programs["broken"], case, "fixed")
    assert code == 0 and out.strip() == "clean", out


def test_static_shared_memory_over_48_kib_is_refused(programs):
    code, out = _run(programs["big_shared"])
    assert code == 3, out
    assert re.search(r"invalid launch of kernel big_shared_kernel: 49156 bytes of static \(all kernels' __shared__ "
                     r"variables together\) and 0 of dynamic shared memory: a block may have 48 KiB", out), out
