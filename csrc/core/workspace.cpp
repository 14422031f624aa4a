#include "workspace.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include "cudnn_check.hpp"
#include "test_hooks.hpp"

namespace knetcnn {
namespace {

struct Limits {
  std::mutex mutex;
  std::map<int, std::size_t> defaults;
};

// Never destroyed (used from thread-exit paths).
Limits& limits() {
  static Limits* l = new Limits();
  return *l;
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
    Limits& l = limits();
    std::lock_guard<std::mutex> lock(l.mutex);
    auto it = l.defaults.find(device);
    if (it != l.defaults.end()) {
      resolved = it->second;
    } else {
      std::size_t free_bytes = 0, total_bytes = 0;
      RelaxedCaptureMode relaxed;  // a query, harmless to any capture; allowed even during one
      KNETCNN_CUDA_CTX(cudaMemGetInfo(&free_bytes, &total_bytes), "device " + std::to_string(device));
      resolved = l.defaults[device] = default_workspace_limit_for(free_bytes);
    }
  }
  retain_pool_bytes(device, resolved);
  return resolved;
}

Workspace::Workspace(int device, cudaStream_t stream, std::size_t bytes, CaptureState capture)
    : scratch_(bytes, device, stream, capture, "cuDNN workspace") {
  test_hooks::ThreadRecord& record = test_hooks::thread_record();
  record.largest_workspace = std::max(record.largest_workspace, scratch_.size());
}

WorkspaceStats workspace_stats() {
  const PoolStats pools = stream_pool_stats();
  return WorkspaceStats{pools.pools + pools.idle_buffers, pools.reserved + pools.idle_bytes};
}

void release_workspaces() {
  check_release_allowed("clear_cache (release_workspaces)");
  {
    Limits& l = limits();
    std::lock_guard<std::mutex> lock(l.mutex);
    l.defaults.clear();
  }
  release_device_memory();
}

}  // namespace knetcnn
