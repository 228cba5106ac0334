// What a test may steer about launches, and what it can read back:
//  - the order blocks run in: shuffled per launch by default, so that nothing
//    can lean on block 0 running first or on the last block being the last
//    index (FUSEDOPT_EMU_BLOCK_ORDER=forward|reverse|shuffled);
//  - which blocks run at all (fo_emu_select_blocks): a layout whose tensors
//    span gigabytes of zero pages runs only the blocks around the offsets it
//    tests; the others are skipped, as if the kernel had returned at once;
//  - a log of launches (kernel, grid, block, blocks run), so a test can check
//    that its layout reached the path it names (a table rollover, a second
//    batch of step counters).
#pragma once

#include <cstdint>

namespace fo_emu {

// The block that runs k-th among the launch's `blocks`.
uint64_t block_at(uint64_t k, uint64_t blocks);
// Whether block `linear` of the running launch runs.
bool block_selected(uint64_t linear);
void log_launch(uint64_t blocks);

}  // namespace fo_emu

extern "C" {
// triples (launch, first block, end block) for the launches counted from this
// call on, 0 the next one: only those blocks of a listed launch run (several
// triples may name one launch); unlisted launches run whole. count 0 clears.
void fo_emu_select_blocks(const int64_t* triples, int count);
// Copies the launch log ("kernel|gx,gy,gz|bx,by,bz|blocks run" per line) into
// out (up to size bytes, NUL-terminated); returns the bytes the whole log needs.
uint64_t fo_emu_launch_log(char* out, uint64_t size);
void fo_emu_clear_launch_log();
}
