// cuDNN workspaces: one buffer per call, never shared between calls that may run concurrently.
//
// On devices with the stream-ordered allocator (every CUDA 12 device on Linux, in practice) a
// workspace is a DeviceScratch (device_memory.hpp): taken from knetcnn's memory pool on the
// call's stream and given back with cudaFreeAsync on the same stream once the cuDNN call is
// enqueued. The pool reuses the memory for a later call on any stream only when that is safe, so
// no buffer is ever keyed on a stream (a handle such as cudaStreamPerThread names a different
// stream in every thread, and a destroyed stream's handle may be reused), nothing synchronizes,
// and nothing grows without bound. While the stream captures a CUDA graph the workspace comes
// from cudaMallocAsync on the capturing stream: a graph memory node the graph owns, so a later
// eager call can neither free nor reuse what a replay reads. (CUDA's rules for graphs holding
// memory nodes then apply, cuda_runtime_api.h at cudaGraphAddMemAllocNode: one instantiation at a
// time, no cloning, embedding as a child graph only by moving ownership. DeviceScratch buffers
// captured before this change already made such graphs.)
//
// Devices without memory pools (cudaDevAttrMemoryPoolsSupported = 0) keep the older scheme: a
// grow-only buffer per (device, stream), keyed by cudaStreamGetId (unique for the life of the
// program, and resolving cudaStreamPerThread to the calling thread's own stream), at most
// kMaxCachedWorkspaces of them (least recently used evicted: the device is synchronized before
// its buffer is freed, as its stream may no longer exist). A lease holds the buffer's mutex until
// the cuDNN call is enqueued; growing synchronizes the stream first (with the mutex held: a
// concurrent call on the same stream must not enqueue with the old buffer meanwhile). Such
// devices cannot allocate while capturing: a call that needs a workspace then fails with
// CudaError(cudaErrorStreamCaptureUnsupported).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>

#include <cuda_runtime_api.h>

#include "device_memory.hpp"

namespace knetcnn {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kDefaultWorkspaceCap = 256 * kMiB;
constexpr std::size_t kMaxCachedWorkspaces = 8;

// min(256 MiB, free / 8): large enough for tensor-core algorithms, small enough to leave memory
// to the caller. Pure, for tests.
std::size_t default_workspace_limit_for(std::size_t free_bytes);

// The limit a call uses: `limit` when given, else the default measured (cudaMemGetInfo) the first
// time `device` is used, and kept until release_workspaces(): a limit that moved with free memory
// would change the algorithm-cache key on every call. `device` must be current.
std::size_t resolve_workspace_limit(int device, std::optional<std::size_t> limit);

// One call's workspace of at least `bytes` (0: none, get() is null). `device` must be current.
// Throws CudaError: cudaErrorMemoryAllocation when the memory is not there;
// cudaErrorStreamCaptureUnsupported on a device without memory pools while capturing.
class Workspace {
 public:
  Workspace(int device, cudaStream_t stream, std::size_t bytes, CaptureState capture);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  void* get() const { return pointer_; }
  std::size_t size() const { return size_; }

  struct Entry;  // a cached buffer (devices without memory pools)

 private:
  std::unique_ptr<DeviceScratch> scratch_;
  std::shared_ptr<Entry> entry_;
  std::unique_lock<std::mutex> lock_;
  void* pointer_ = nullptr;
  std::size_t size_ = 0;
};

struct WorkspaceStats {
  std::size_t buffers = 0;  // memory pools holding memory, plus cached buffers
  std::size_t bytes = 0;    // bytes they hold
};
// Never waits for a workspace in use.
WorkspaceStats workspace_stats();
// Synchronizes the devices, frees every cached buffer, releases the pools' unused memory and
// forgets the measured default limits. CUDA graphs own their workspaces: they stay valid.
void release_workspaces();

}  // namespace knetcnn
