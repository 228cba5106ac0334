// __shfl_*_sync as a rendezvous of the lanes named in the mask: each lane
// leaves its value and waits until every lane of the mask has reached a
// shuffle with that mask; then each reads the value its source lane left at
// this same shuffle. Reported instead of guessed at: a lane calling with a
// mask that leaves itself out, lanes of one warp meeting with different masks,
// and a mask naming a lane the block does not have. A lane that never arrives
// is found when the block can no longer move (launcher.cpp).
//
// A read from a lane outside the mask is legal CUDA with an undefined result
// (a half-warp reduction's upper lanes do it, and nobody uses what they get):
// the lane gets all-ones bits (a NaN for floats, which sums carry along), and
// a store of them is reported (access_checks.cpp) as the use of an undefined
// value: a wrong offset whose result matters.
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "state.h"

namespace fo_emu {
namespace {

const char* mode_name(ShuffleMode m) {
  switch (m) {
    case ShuffleMode::kIdx: return "__shfl_sync";
    case ShuffleMode::kUp: return "__shfl_up_sync";
    case ShuffleMode::kDown: return "__shfl_down_sync";
    case ShuffleMode::kXor: return "__shfl_xor_sync";
  }
  return "?";
}

std::string hex(unsigned v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

std::string at(const Thread& t) {
  return std::string(mode_name(t.mode)) + " (" + t.file + ":" + std::to_string(t.line) + ")";
}

[[noreturn]] void report(const std::string& what) {
  fail(cudaErrorLaunchFailure, "shuffle error in kernel " + kernel_name() + ", block " + dims(emu.block) + ": " +
                                   what);
  __builtin_unreachable();
}

// The lane whose value lane `l` reads (itself where CUDA returns its own).
unsigned source_lane(const Thread& t, unsigned l) {
  const unsigned w = static_cast<unsigned>(t.width);
  const unsigned segment = l / w * w;
  const unsigned arg = static_cast<unsigned>(t.lane_arg);
  switch (t.mode) {
    case ShuffleMode::kIdx: return segment + arg % w;
    case ShuffleMode::kUp: return l - segment >= arg ? l - arg : l;
    case ShuffleMode::kDown: return l - segment + arg < w ? l + arg : l;
    case ShuffleMode::kXor: {
      const unsigned src = l ^ arg;
      return src < segment + w ? src : l;  // later groups are out of reach
    }
  }
  return l;
}

}  // namespace

uint64_t shuffle(unsigned mask, uint64_t bits, ShuffleMode mode, int lane_arg, int width, const char* file,
                 int line) {
  Thread* t = emu.current;
  if (t == nullptr) {
    std::fprintf(stderr, "fusedopt CUDA emulation: %s called outside a kernel (%s:%d)\n", mode_name(mode), file, line);
    std::abort();
  }
  t->mask = mask;
  t->mode = mode;
  t->lane_arg = lane_arg;
  t->width = width;
  t->value = bits;
  t->file = file;
  t->line = line;
  const unsigned lane = t->linear % 32;
  const unsigned warp_base = t->linear - lane;
  auto who = [&] { return "thread " + dims(t->idx) + " (lane " + std::to_string(lane) + ") at " + at(*t); };
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    report(who() + ": width " + std::to_string(width) + " is not a power of 2 from 1 to 32");
  }
  if (((mask >> lane) & 1u) == 0) report(who() + ": its mask " + hex(mask) + " does not name its own lane");
  bool complete = true;
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) == 0 || l == lane) continue;
    if (warp_base + l >= emu.nthreads) {
      report(who() + ": the mask " + hex(mask) + " names lane " + std::to_string(l) + ", which this block (" +
             std::to_string(emu.nthreads) + " threads) does not have");
    }
    const Thread& other = emu.threads[warp_base + l];
    if (other.wait != Wait::kShuffle) {
      complete = false;
    } else if (other.mask != mask) {
      report(who() + " with mask " + hex(mask) + " meets lane " + std::to_string(l) + " at " + at(other) +
             " with mask " + hex(other.mask));
    }
  }
  if (!complete) {
    t->wait = Wait::kShuffle;
    yield_to_scheduler(false);
    return t->result;
  }
  // every lane of the mask is here: serve them all
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) == 0) continue;
    Thread& dst = emu.threads[warp_base + l];
    const unsigned src = source_lane(dst, l);
    if (((mask >> src) & 1u) == 0) {
      if (!emu.undefined_shuffle) {
        emu.undefined_shuffle = true;
        emu.undefined_shuffle_what = "thread " + dims(dst.idx) + " (lane " + std::to_string(l) + ") at " + at(dst) +
                                     " read lane " + std::to_string(src) + " (offset " +
                                     std::to_string(dst.lane_arg) + "), which the mask " + hex(mask) +
                                     " leaves out: its value is undefined";
      }
      dst.result = ~uint64_t{0};
      continue;
    }
    dst.result = emu.threads[warp_base + src].value;
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (((mask >> l) & 1u) != 0) emu.threads[warp_base + l].wait = Wait::kReady;
  }
  return t->result;
}

}  // namespace fo_emu
