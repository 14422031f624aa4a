// core/result_memory: blocks given back are handed out again for the same size, aligned, never
// twice at once, and what is kept stays within kRetainedResultBytes.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <set>
#include <thread>
#include <vector>

#include "result_memory.hpp"

namespace knetcnn {
namespace {

constexpr std::size_t kBig = cpu::kMinRecycledBytes * 3 + 40;  // not a multiple of the alignment

TEST(ResultMemory, AGivenBackBlockServesTheNextRequestOfItsSize) {
  void* first = cpu::acquire_result_memory(kBig);
  std::memset(first, 1, kBig);  // all of it is usable
  cpu::release_result_memory(first, kBig);
  EXPECT_GE(cpu::retained_result_bytes(), kBig);
  void* again = cpu::acquire_result_memory(kBig);
  EXPECT_EQ(again, first);
  void* other = cpu::acquire_result_memory(kBig);  // the one block is taken: a fresh one
  EXPECT_NE(other, again);
  void* different_size = cpu::acquire_result_memory(kBig * 2);
  EXPECT_NE(different_size, first);
  for (void* p : {again, other, different_size}) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u);
  cpu::release_result_memory(again, kBig);
  cpu::release_result_memory(other, kBig);
  cpu::release_result_memory(different_size, kBig * 2);
}

TEST(ResultMemory, SmallAndEmptyRequestsAreNotKept) {
  const std::size_t before = cpu::retained_result_bytes();
  for (std::size_t bytes : {std::size_t(0), std::size_t(8), cpu::kMinRecycledBytes - 64}) {
    void* p = cpu::acquire_result_memory(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u);
    cpu::release_result_memory(p, bytes);
  }
  EXPECT_EQ(cpu::retained_result_bytes(), before);
  cpu::release_result_memory(nullptr, kBig);  // ignored
  // Sizes that rounding up to the alignment would wrap round to a tiny block are refused.
  EXPECT_THROW(cpu::acquire_result_memory(std::numeric_limits<std::size_t>::max() - 10), std::bad_alloc);
  EXPECT_EQ(cpu::retained_result_bytes(), before);
}

TEST(ResultMemory, WhatIsKeptStaysWithinTheLimit) {
  // Give back more than the limit in blocks of one size, then a block of another size: the
  // total kept never passes the limit, and the newest block is the one kept.
  const std::size_t block = cpu::kRetainedResultBytes / 4;
  std::vector<void*> blocks;
  for (int i = 0; i < 6; ++i) blocks.push_back(cpu::acquire_result_memory(block));
  for (void* p : blocks) {
    cpu::release_result_memory(p, block);
    EXPECT_LE(cpu::retained_result_bytes(), cpu::kRetainedResultBytes);
  }
  void* newest = cpu::acquire_result_memory(kBig);
  cpu::release_result_memory(newest, kBig);
  EXPECT_LE(cpu::retained_result_bytes(), cpu::kRetainedResultBytes);
  void* again = cpu::acquire_result_memory(kBig);
  EXPECT_EQ(again, newest);
  cpu::release_result_memory(again, kBig);
  // Larger than the limit: freed, not kept.
  const std::size_t before = cpu::retained_result_bytes();
  void* huge = cpu::acquire_result_memory(cpu::kRetainedResultBytes + 64);
  cpu::release_result_memory(huge, cpu::kRetainedResultBytes + 64);
  EXPECT_LE(cpu::retained_result_bytes(), before);
}

TEST(ResultMemory, ThreadsNeverShareABlock) {
  constexpr int kThreads = 4, kRounds = 2000;
  std::vector<std::thread> threads;
  std::vector<int> clashes(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        auto* p = static_cast<unsigned char*>(cpu::acquire_result_memory(kBig));
        std::memset(p, t + 1, 256);  // a block held by two threads would see another's mark
        for (int i = 0; i < 256; ++i) clashes[t] += p[i] != t + 1;
        cpu::release_result_memory(p, kBig);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(clashes, std::vector<int>(kThreads, 0));
}

}  // namespace
}  // namespace knetcnn
