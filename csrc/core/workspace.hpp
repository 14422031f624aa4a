// cuDNN workspaces: one buffer per call, never shared between calls that may run concurrently.
//
// A workspace is a DeviceScratch (device_memory.hpp). On devices with the stream-ordered
// allocator (every CUDA 12 device on Linux, in practice) it is taken from knetcnn's memory pool on
// the call's stream and given back with cudaFreeAsync on the same stream once the cuDNN call is
// enqueued, both in relaxed capture mode. The pool reuses the memory for a later call on any
// stream only when that is known safe, so no buffer is ever keyed on a stream (a handle such as
// cudaStreamPerThread names a different stream in every thread, and a destroyed stream's handle
// may be reused), nothing synchronizes, and nothing grows without bound. While the stream captures
// a CUDA graph the workspace comes from cudaMallocAsync on the capturing stream: a graph memory
// node the graph owns, so a later eager call can neither free nor reuse what a replay reads.
// (CUDA's rules for graphs holding memory nodes then apply, cuda_runtime_api.h at
// cudaGraphAddMemAllocNode: one instantiation at a time, no cloning, embedding as a child graph
// only by moving ownership. DeviceScratch buffers captured before this change already made such
// graphs.)
//
// Devices without memory pools (cudaDevAttrMemoryPoolsSupported = 0) recycle a few idle buffers,
// each with an event marking its last use (see DeviceScratch): reused at once on the same stream,
// on another only once that event has completed, freed beyond kMaxIdleBuffers once complete. No
// device is ever synchronized and no buffer is freed by an allocation that found one to reuse.
// Such devices cannot allocate while capturing: a call that needs a workspace then fails with
// CudaError(cudaErrorStreamCaptureUnsupported).
#pragma once

#include <cstddef>
#include <optional>

#include <cuda_runtime_api.h>

#include "device_memory.hpp"

namespace knetcnn {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kDefaultWorkspaceCap = 256 * kMiB;

// min(256 MiB, free / 8): large enough for tensor-core algorithms, small enough to leave memory
// to the caller. Pure, for tests.
std::size_t default_workspace_limit_for(std::size_t free_bytes);

// The limit a call uses: `limit` when given, else the default measured (cudaMemGetInfo) the first
// time `device` is used, and kept until release_workspaces(): a limit that moved with free memory
// would change the algorithm-cache key on every call. Raises the device pool's release threshold
// to pool_retention_for(limit) (capped at a quarter of the device's memory). `device` must be
// current.
std::size_t resolve_workspace_limit(int device, std::optional<std::size_t> limit);

// One call's workspace of at least `bytes` (0: none, get() is null). `device` must be current.
// Throws CudaError: cudaErrorMemoryAllocation when the memory is not there;
// cudaErrorStreamCaptureUnsupported on a device without memory pools while capturing.
class Workspace {
 public:
  Workspace(int device, cudaStream_t stream, std::size_t bytes, CaptureState capture);
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  void* get() const { return scratch_.get(); }
  std::size_t size() const { return scratch_.size(); }

 private:
  DeviceScratch scratch_;
};

struct WorkspaceStats {
  std::size_t buffers = 0;  // memory pools holding memory, plus idle buffers (devices without pools)
  std::size_t bytes = 0;    // bytes they hold
};
// Never waits for a workspace in use.
WorkspaceStats workspace_stats();
// clear_cache's memory half. Refuses first (CudaError, nothing released) while a capture it can
// see is in progress on a device knetcnn holds memory on (check_release_allowed: this thread's
// default streams, or any blocking stream; a capture on a non-blocking stream is invisible, so do
// not call it during one). Then forgets the measured default limits and releases what is not in
// use without synchronizing a device (release_device_memory): memory whose asynchronous free has
// not been seen complete yet stays reserved until a later release or synchronization. CUDA graphs
// own their workspaces: they stay valid.
void release_workspaces();

}  // namespace knetcnn
