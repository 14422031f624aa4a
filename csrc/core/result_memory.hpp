// Memory for the CPU backend's results. A result freshly taken from the OS page-faults on its
// first write, page by page: on this project's machines that was most of a small call (a 3 MiB
// poolx result: ~100 of ~140 us). Blocks given back are kept, up to kRetainedResultBytes in all,
// and handed out again for the next request of the same size, so a loop's results reuse mapped,
// cache-warm pages. Thread-safe; fork-safe (a child starts with the parent's blocks, unlocked).
#pragma once

#include <cstddef>

namespace knetcnn::cpu {

// Requests below this size come straight from malloc, which already reuses small blocks.
constexpr std::size_t kMinRecycledBytes = 64 << 10;
// At most this many bytes of given-back blocks are kept; a block that does not fit goes in
// place of all of them (they go back to the OS).
constexpr std::size_t kRetainedResultBytes = std::size_t(64) << 20;

// `bytes` (any size, 0 too) of 64-byte-aligned memory; std::bad_alloc if there is none (or
// `bytes` is within 64 of SIZE_MAX).
void* acquire_result_memory(std::size_t bytes);
// Gives back what acquire_result_memory(bytes) returned; it is kept or freed.
void release_result_memory(void* block, std::size_t bytes);
// Bytes kept for reuse now (for tests).
std::size_t retained_result_bytes();

}  // namespace knetcnn::cpu
