// cuDNN workspaces: one grow-only device buffer per (device, stream).
//
// Work on one stream runs in order, so one buffer per stream is never used by two kernels at
// once. A lease also holds the buffer's mutex until the cuDNN calls that use it have been
// enqueued, so another host thread on the same stream cannot grow (free) it under them.
// Growing synchronizes the stream, frees the old buffer and allocates the new one (rare: the
// buffer only grows). During CUDA graph capture a buffer never grows (cudaMalloc and synchronizing
// are not allowed there): the caller restricts itself to what the buffer already holds.
// release_workspaces() (knetcnn.clear_cache) synchronizes each device and frees every buffer;
// CUDA graphs captured earlier that used a knetcnn workspace must not be replayed afterwards.
// Caveat: buffers are keyed by the stream's handle value; a stream destroyed while its work is
// pending whose handle is reused at once by a new stream shares its buffer with that pending work.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>

#include <cuda_runtime_api.h>

namespace knetcnn {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kDefaultWorkspaceCap = 256 * kMiB;

// min(256 MiB, free / 8): large enough for tensor-core algorithms, small enough to leave memory
// to the caller. Pure, for tests.
std::size_t default_workspace_limit_for(std::size_t free_bytes);

// The limit a call uses: `limit` when given, else the default measured (cudaMemGetInfo) the first
// time `device` is used, and kept until release_workspaces(): a limit that moved with free memory
// would change the algorithm-cache key on every call. `device` must be current.
std::size_t resolve_workspace_limit(int device, std::optional<std::size_t> limit);

class WorkspaceLease {
 public:
  struct Entry;
  WorkspaceLease(std::shared_ptr<Entry> entry, std::unique_lock<std::mutex> lock, void* pointer, std::size_t size)
      : entry_(std::move(entry)), lock_(std::move(lock)), pointer_(pointer), size_(size) {}
  void* get() const { return pointer_; }
  std::size_t size() const { return size_; }

 private:
  std::shared_ptr<Entry> entry_;
  std::unique_lock<std::mutex> lock_;
  void* pointer_;
  std::size_t size_;
};

// The buffer for (device, stream) holding at least `bytes` (grown if `may_grow`; otherwise the
// lease may be smaller than asked: check size()). `device` must be current. A failed allocation
// throws CudaError (cudaErrorMemoryAllocation) and leaves no buffer.
WorkspaceLease acquire_workspace(int device, cudaStream_t stream, std::size_t bytes, bool may_grow);
// Bytes the buffer for (device, stream) holds now (0 if none).
std::size_t workspace_size(int device, cudaStream_t stream);

struct WorkspaceStats {
  std::size_t buffers = 0;
  std::size_t bytes = 0;
};
WorkspaceStats workspace_stats();
// Frees every buffer and forgets the measured default limits.
void release_workspaces();

}  // namespace knetcnn
