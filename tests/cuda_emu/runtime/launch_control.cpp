// See launch_control.h.
#include "launch_control.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "state.h"

namespace fo_emu {
namespace {

enum class Order { kShuffled, kForward, kReverse };

Order order_from_env() {
  const char* v = std::getenv("FUSEDOPT_EMU_BLOCK_ORDER");
  if (v == nullptr || std::strcmp(v, "shuffled") == 0 || *v == '\0') return Order::kShuffled;
  if (std::strcmp(v, "forward") == 0) return Order::kForward;
  if (std::strcmp(v, "reverse") == 0) return Order::kReverse;
  std::fprintf(stderr, "fusedopt CUDA emulation: FUSEDOPT_EMU_BLOCK_ORDER=%s is not forward, reverse or shuffled\n",
               v);
  std::abort();
}

const Order order = order_from_env();
constexpr uint64_t kMaxShuffled = uint64_t{1} << 20;  // past that, blocks run forward
std::vector<uint64_t> permutation;
uint64_t permutation_stamp = 0;

struct Selected {
  int64_t launch, first, end;
};
std::vector<Selected> selection;
uint64_t selection_base = 0;  // launch_stamp when the selection was made
std::string log_text;

}  // namespace

uint64_t block_at(uint64_t k, uint64_t blocks) {
  if (order == Order::kForward || blocks > kMaxShuffled) return k;
  if (order == Order::kReverse) return blocks - 1 - k;
  if (permutation_stamp != emu.launch_stamp || permutation.size() != blocks) {
    permutation.resize(blocks);
    for (uint64_t i = 0; i < blocks; ++i) permutation[i] = i;
    std::mt19937_64 rng(emu.launch_stamp);  // deterministic: a failure reproduces
    std::shuffle(permutation.begin(), permutation.end(), rng);
    permutation_stamp = emu.launch_stamp;
  }
  return permutation[k];
}

bool block_selected(uint64_t linear) {
  if (selection.empty()) return true;
  const auto launch = static_cast<int64_t>(emu.launch_stamp - selection_base - 1);
  bool listed = false;
  for (const Selected& s : selection) {
    if (s.launch != launch) continue;
    listed = true;
    if (static_cast<int64_t>(linear) >= s.first && static_cast<int64_t>(linear) < s.end) return true;
  }
  return !listed;
}

void log_launch(uint64_t blocks) {
  uint64_t ran = 0;
  for (uint64_t b = 0; b < blocks; ++b) ran += block_selected(b);
  const dim3 g = emu.shape->grid, k = emu.shape->block;
  log_text += kernel_name() + "|" + std::to_string(g.x) + "," + std::to_string(g.y) + "," + std::to_string(g.z) +
              "|" + std::to_string(k.x) + "," + std::to_string(k.y) + "," + std::to_string(k.z) + "|" +
              std::to_string(emu.aborted ? 0 : ran) + "\n";
}

}  // namespace fo_emu

extern "C" __attribute__((visibility("default"))) void fo_emu_select_blocks(const int64_t* triples, int count) {
  using namespace fo_emu;
  selection.clear();
  for (int i = 0; i < count; ++i) selection.push_back({triples[3 * i], triples[3 * i + 1], triples[3 * i + 2]});
  selection_base = emu.launch_stamp;
}

extern "C" __attribute__((visibility("default"))) uint64_t fo_emu_launch_log(char* out, uint64_t size) {
  const std::string& s = fo_emu::log_text;
  if (out != nullptr && size > 0) {
    const uint64_t n = std::min<uint64_t>(size - 1, s.size());
    std::memcpy(out, s.data(), n);
    out[n] = '\0';
  }
  return s.size() + 1;
}

extern "C" __attribute__((visibility("default"))) void fo_emu_clear_launch_log() { fo_emu::log_text.clear(); }
