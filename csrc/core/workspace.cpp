#include "workspace.hpp"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "cudnn_check.hpp"
#include "device_memory.hpp"

namespace knetcnn {

struct WorkspaceLease::Entry {
  std::mutex mutex;
  int device = 0;
  void* pointer = nullptr;
  std::size_t size = 0;
};

namespace {

using Key = std::pair<int, cudaStream_t>;

struct Registry {
  std::mutex mutex;
  std::map<Key, std::shared_ptr<WorkspaceLease::Entry>> entries;
  std::map<int, std::size_t> default_limits;
};

// Never destroyed: freeing device memory during process teardown is not safe.
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

std::shared_ptr<WorkspaceLease::Entry> entry_for(int device, cudaStream_t stream) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto& slot = r.entries[Key{device, stream}];
  if (!slot) {
    slot = std::make_shared<WorkspaceLease::Entry>();
    slot->device = device;
  }
  return slot;
}

}  // namespace

std::size_t default_workspace_limit_for(std::size_t free_bytes) {
  return std::min(kDefaultWorkspaceCap, free_bytes / 8);
}

std::size_t resolve_workspace_limit(int device, std::optional<std::size_t> limit) {
  if (limit) return *limit;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.default_limits.find(device);
  if (it != r.default_limits.end()) return it->second;
  std::size_t free_bytes = 0, total_bytes = 0;
  check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo", "device " + std::to_string(device));
  return r.default_limits[device] = default_workspace_limit_for(free_bytes);
}

WorkspaceLease acquire_workspace(int device, cudaStream_t stream, std::size_t bytes, bool may_grow) {
  std::shared_ptr<WorkspaceLease::Entry> entry = entry_for(device, stream);
  std::unique_lock<std::mutex> lock(entry->mutex);
  if (bytes > entry->size && may_grow) {
    // Round up to whole MiB so that slowly growing requests do not reallocate every time.
    const std::size_t grown = (bytes + kMiB - 1) / kMiB * kMiB;
    const std::string context = std::to_string(grown) + " bytes of cuDNN workspace on device " +
                                std::to_string(device);
    if (entry->pointer) {
      // Earlier work on this stream may still read the old buffer.
      check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize", context);
      check_cuda(cudaFree(entry->pointer), "cudaFree", context);
      entry->pointer = nullptr;
      entry->size = 0;
    }
    check_cuda(cudaMalloc(&entry->pointer, grown), "cudaMalloc", context);
    entry->size = grown;
  }
  void* pointer = entry->pointer;
  const std::size_t size = entry->size;
  return WorkspaceLease(std::move(entry), std::move(lock), pointer, size);
}

std::size_t workspace_size(int device, cudaStream_t stream) {
  std::shared_ptr<WorkspaceLease::Entry> entry = entry_for(device, stream);
  std::lock_guard<std::mutex> lock(entry->mutex);
  return entry->size;
}

WorkspaceStats workspace_stats() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  WorkspaceStats stats;
  for (auto& [key, entry] : r.entries) {
    std::lock_guard<std::mutex> entry_lock(entry->mutex);
    if (entry->pointer) {
      ++stats.buffers;
      stats.bytes += entry->size;
    }
  }
  return stats;
}

void release_workspaces() {
  Registry& r = registry();
  // Entries stay registered (they are small); only their buffers go. A thread that looked an
  // entry up before this call and grows it afterwards therefore allocates into a registered
  // entry, never into an orphan that nothing would free.
  std::vector<std::shared_ptr<WorkspaceLease::Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    for (auto& [key, entry] : r.entries) entries.push_back(entry);
    r.default_limits.clear();
  }
  // The streams may no longer exist, so synchronize the device, not the stream, before freeing.
  std::map<int, bool> synchronized;
  for (auto& entry : entries) {
    std::lock_guard<std::mutex> entry_lock(entry->mutex);  // waits for a lease in use
    if (!entry->pointer) continue;
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
    cudaSetDevice(entry->device);
    if (!synchronized[entry->device]) {
      cudaDeviceSynchronize();
      synchronized[entry->device] = true;
    }
    cudaFree(entry->pointer);
    if (previous >= 0) cudaSetDevice(previous);
    cudaGetLastError();
    entry->pointer = nullptr;
    entry->size = 0;
  }
}

}  // namespace knetcnn
