#include "result_memory.hpp"

#include <pthread.h>

#include <cstdlib>
#include <limits>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace knetcnn::cpu {
namespace {

constexpr std::size_t kAlignment = 64;

struct Retained {
  std::mutex mutex;
  std::unordered_map<std::size_t, std::vector<void*>> by_size;  // rounded size -> blocks
  std::size_t bytes = 0;
};

Retained& retained() {
  static Retained* r = [] {
    auto* made = new Retained;  // never destroyed: results may be freed after static destructors ran
    // A fork's child holds only the forking thread: the mutex must not be left locked there.
    pthread_atfork([] { retained().mutex.lock(); }, [] { retained().mutex.unlock(); },
                   [] { retained().mutex.unlock(); });
    return made;
  }();
  return *r;
}

std::size_t rounded(std::size_t bytes) {
  if (bytes > std::numeric_limits<std::size_t>::max() - kAlignment) throw std::bad_alloc();  // would wrap to a tiny block
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

void* fresh(std::size_t size) {
  void* block = std::aligned_alloc(kAlignment, size == 0 ? kAlignment : size);
  if (!block) throw std::bad_alloc();
  return block;
}

}  // namespace

void* acquire_result_memory(std::size_t bytes) {
  const std::size_t size = rounded(bytes);
  if (size >= kMinRecycledBytes) {
    Retained& r = retained();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.by_size.find(size);
    if (it != r.by_size.end() && !it->second.empty()) {
      void* block = it->second.back();
      it->second.pop_back();
      r.bytes -= size;
      return block;
    }
  }
  return fresh(size);
}

void release_result_memory(void* block, std::size_t bytes) {
  if (!block) return;
  const std::size_t size = rounded(bytes);
  if (size >= kMinRecycledBytes) {
    Retained& r = retained();
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.bytes + size > kRetainedResultBytes) {
      // Full: what is kept belongs to an older pattern of calls (another batch size, say); make
      // room for the current one rather than keep stale blocks for good.
      for (auto& [unused, blocks] : r.by_size)
        for (void* kept : blocks) std::free(kept);
      r.by_size.clear();
      r.bytes = 0;
    }
    if (size <= kRetainedResultBytes) {
      r.by_size[size].push_back(block);
      r.bytes += size;
      return;
    }
  }
  std::free(block);
}

std::size_t retained_result_bytes() {
  Retained& r = retained();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.bytes;
}

}  // namespace knetcnn::cpu
