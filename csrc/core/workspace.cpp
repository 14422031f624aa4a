#include "workspace.hpp"

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <utility>
#include <vector>

#include "cudnn_check.hpp"

namespace knetcnn {

struct Workspace::Entry {
  std::mutex mutex;
  int device = 0;
  void* pointer = nullptr;            // guarded by mutex
  std::atomic<std::size_t> size{0};   // written under mutex, read by workspace_stats without it
  bool evicted = false;               // guarded by mutex: no longer registered, never grow it
};

namespace {

using Entry = Workspace::Entry;
using Key = std::pair<int, unsigned long long>;  // (device, cudaStreamGetId)

struct Registry {
  std::mutex mutex;
  std::list<Key> lru;  // front: most recently used
  std::map<Key, std::pair<std::shared_ptr<Entry>, std::list<Key>::iterator>> entries;
  std::map<int, std::size_t> default_limits;
};

// Never destroyed: freeing device memory during process teardown is not safe.
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

// Frees buffers no longer registered. Their streams may be gone, so the device is synchronized
// before cudaFree (which does not order itself after pending work).
void free_unregistered(const std::vector<std::shared_ptr<Entry>>& entries) {
  for (const auto& entry : entries) {
    std::lock_guard<std::mutex> lock(entry->mutex);  // waits for a lease in use
    entry->evicted = true;
    if (!entry->pointer) continue;
    DeviceGuard guard(entry->device);
    RelaxedCaptureMode relaxed;
    const cudaError_t pending = cudaPeekAtLastError();
    cudaError_t status = cudaDeviceSynchronize();
    const cudaError_t freed = cudaFree(entry->pointer);
    if (status == cudaSuccess) status = freed;
    clear_own_cuda_error(status, pending);
    entry->pointer = nullptr;
    entry->size = 0;
  }
}

std::shared_ptr<Entry> cached_entry(int device, unsigned long long stream_id) {
  Registry& r = registry();
  std::vector<std::shared_ptr<Entry>> evicted;
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    const Key key{device, stream_id};
    auto it = r.entries.find(key);
    if (it != r.entries.end()) {
      r.lru.splice(r.lru.begin(), r.lru, it->second.second);
      entry = it->second.first;
    } else {
      entry = std::make_shared<Entry>();
      entry->device = device;
      r.lru.push_front(key);
      r.entries.emplace(key, std::make_pair(entry, r.lru.begin()));
      while (r.lru.size() > kMaxCachedWorkspaces) {
        auto last = r.entries.find(r.lru.back());
        evicted.push_back(last->second.first);
        r.entries.erase(last);
        r.lru.pop_back();
      }
    }
  }
  free_unregistered(evicted);
  return entry;
}

}  // namespace

std::size_t default_workspace_limit_for(std::size_t free_bytes) {
  return std::min(kDefaultWorkspaceCap, free_bytes / 8);
}

std::size_t resolve_workspace_limit(int device, std::optional<std::size_t> limit) {
  std::size_t resolved = 0;
  if (limit) {
    resolved = *limit;
  } else {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.default_limits.find(device);
    if (it != r.default_limits.end()) {
      resolved = it->second;
    } else {
      std::size_t free_bytes = 0, total_bytes = 0;
      RelaxedCaptureMode relaxed;  // a query, harmless to any capture; allowed even during one
      KNETCNN_CUDA_CTX(cudaMemGetInfo(&free_bytes, &total_bytes), "device " + std::to_string(device));
      resolved = r.default_limits[device] = default_workspace_limit_for(free_bytes);
    }
  }
  retain_pool_bytes(device, resolved);
  return resolved;
}

Workspace::Workspace(int device, cudaStream_t stream, std::size_t bytes, CaptureState capture) {
  if (bytes == 0) return;
  if (memory_pools_supported(device) || capture != CaptureState::None) {
    // (Without pools while capturing, DeviceScratch refuses with the reason.)
    scratch_ = std::make_unique<DeviceScratch>(bytes, device, stream, capture, "cuDNN workspace");
    pointer_ = scratch_->get();
    size_ = scratch_->size();
    return;
  }
  const std::string context = std::to_string(bytes) + " bytes of cuDNN workspace on device " + std::to_string(device);
  unsigned long long stream_id = 0;
  KNETCNN_CUDA_CTX(cudaStreamGetId(stream, &stream_id), context);
  for (;;) {
    entry_ = cached_entry(device, stream_id);
    lock_ = std::unique_lock<std::mutex>(entry_->mutex);
    if (!entry_->evicted) break;
    lock_.unlock();  // evicted between lookup and lock: look again
  }
  if (bytes > entry_->size) {
    // Round up to whole MiB so that slowly growing requests do not reallocate every time.
    const std::size_t grown = (bytes + kMiB - 1) / kMiB * kMiB;
    RelaxedCaptureMode relaxed;
    if (entry_->pointer) {
      // Earlier work on this stream (the only stream with this id) may still read the old buffer.
      KNETCNN_CUDA_CTX(cudaStreamSynchronize(stream), context);
      KNETCNN_CUDA_CTX(cudaFree(entry_->pointer), context);
      entry_->pointer = nullptr;
      entry_->size = 0;
    }
    void* fresh = nullptr;
    KNETCNN_CUDA_CTX(cudaMalloc(&fresh, grown), context);
    entry_->pointer = fresh;
    entry_->size = grown;
  }
  pointer_ = entry_->pointer;
  size_ = entry_->size;
}

Workspace::~Workspace() = default;

WorkspaceStats workspace_stats() {
  WorkspaceStats stats;
  const PoolStats pools = stream_pool_stats();
  stats.buffers = pools.pools;
  stats.bytes = pools.reserved;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& [key, value] : r.entries) {
    const std::size_t size = value.first->size.load();
    if (size) {
      ++stats.buffers;
      stats.bytes += size;
    }
  }
  return stats;
}

void release_workspaces() {
  Registry& r = registry();
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    for (auto& [key, value] : r.entries) entries.push_back(value.first);
    r.entries.clear();
    r.lru.clear();
    r.default_limits.clear();
  }
  free_unregistered(entries);
  trim_stream_pools();
}

}  // namespace knetcnn
