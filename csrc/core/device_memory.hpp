// The CUDA runtime pieces the execution core needs around cuDNN: the current-device guard,
// stream-capture queries, stream and device-pointer checks, and stream-ordered device buffers.
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime_api.h>

#include "exec_options.hpp"

namespace knetcnn {

// Whether `device`'s primary context is active: 1 yes, 0 no, -1 unknown (no driver, or the
// query is unavailable). The CUDA runtime has no query of its own for this: it is
// cuDevicePrimaryCtxGetState, reached through the runtime's cudaGetDriverEntryPoint (no libcuda
// link and no dlopen of our own: the runtime has already loaded the driver).
int primary_context_active(int device);

// Makes `device` current for the scope and restores the caller's device afterwards, so that a
// knetcnn call never changes which device the caller's library (CuPy, PyTorch) thinks is current.
// Exception, as PyTorch's MaybeSetDevice: when the caller's device has no active primary context
// (a thread that never used CUDA reports device 0 without having a context there), restoring it
// would create that context (cudaSetDevice initializes it since CUDA 12: hundreds of MiB on a GPU
// the program may never use), so the thread is left on `device`.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

  // For tests: whether the destructor will (1), will not (0) restore, or has not switched (-1).
  int restores() const;

 private:
  int previous_ = -1;
  bool switched_ = false;
};

enum class CaptureState { None, Active, Invalidated, Unknown };

// cudaStreamIsCapturing. An error is reported as Unknown (and in `error`, if given): for the
// legacy stream queried while a blocking stream of the device captures, the runtime answers
// cudaErrorStreamCaptureImplicit (the query itself does not invalidate that capture,
// cuda_runtime_api.h at cudaStreamIsCapturing). The caller must then assume capture.
CaptureState stream_capture_state(cudaStream_t stream, cudaError_t* error = nullptr);
bool capture_forbids_sync(CaptureState state);

// Throws CudaError where a call must not touch `stream` at all (pure: no CUDA call):
//   Invalidated: cudaErrorStreamCaptureInvalidated. Every launch would fail (and be taken for a
//     bad algorithm); the capture must be ended first.
//   Unknown: the query's error (`query_error`). cudaErrorStreamCaptureImplicit: the legacy stream
//     while a blocking stream of the device captures; using it would join and invalidate that
//     capture.
// `what` names the caller ("conv4", "clear_cache").
void check_capture_usable(CaptureState state, cudaError_t query_error, cudaStream_t stream, int device,
                          const std::string& what);

// Whether a blocking stream of the current device is capturing a CUDA graph, as far as the
// runtime can tell: cudaStreamIsCapturing(cudaStreamLegacy) answers
// cudaErrorStreamCaptureImplicit then. A capture on a non-blocking stream of another thread is
// invisible to every runtime query; nothing here can see it.
bool blocking_capture_on_current_device();

// Why an algorithm search under `policy` may not run now, or "" if it may. Benchmark search runs
// and times kernels and synchronizes: that is illegal while the stream captures a CUDA graph.
std::string search_refusal_reason(AlgoPolicy policy, CaptureState state);

// For the scope, this thread may make "potentially unsafe" calls (cudaMalloc, cudaFree,
// cudaMallocFromPoolAsync, cudaFreeAsync, synchronization, cudnnCreate) even while another thread
// captures a CUDA graph in global mode, which would otherwise reject them and invalidate that
// capture (cuda_runtime_api.h at cudaThreadExchangeStreamCaptureMode; PyTorch's allocator does the
// same, MLX hit the cudaFreeAsync case, ml-explore/mlx#2850). Only for calls made while OUR stream
// is not capturing. Relaxed mode does not make a device-wide synchronization legal while any
// stream of the device captures: nothing here synchronizes a device.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode();
  ~RelaxedCaptureMode();
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode previous_ = cudaStreamCaptureModeRelaxed;
  bool exchanged_ = false;
};

// The legacy default stream (0 or cudaStreamLegacy) or the per-thread default stream: handles
// that name "the current device's" stream rather than one stream object.
bool is_special_stream(cudaStream_t stream);
// `stream` must belong to `device` (cudaStreamGetDevice, CUDA runtime >= 12.8; older runtimes
// lack it and the check is skipped). ValueError naming the stream and both devices otherwise.
// The special streams always belong to the current device, which the caller has made `device`.
void check_stream_device(cudaStream_t stream, int device);

// A user pointer cuDNN will dereference: refuses null (ValueError, no CUDA call) ...
void check_not_null(const char* role, const void* pointer);
// ... and, with a device present, host memory the GPU cannot address or memory on another
// device (ValueError). Runtime queries only: nothing is read through the pointer. Only the base
// address is checked: the runtime cannot tell how far an allocation extends (cudaPointerGetAttributes
// has no range; the driver's cuMemGetAddressRange would reject valid tensors spanning several
// cuMemMap'ed chunks, as PyTorch's expandable segments make), so an array shorter than its
// shape and strides say is the caller's mistake that no check here can see.
void check_device_pointer(const char* role, const void* pointer, int device);

// cudaDevAttrMemoryPoolsSupported, cached per device (test_hooks can turn it off).
bool memory_pools_supported(int device);

// A CudaError for an allocation failure (cudaErrorMemoryAllocation).
bool is_out_of_memory(int cuda_error_code);

// A temporary device buffer given back when the scope ends; nothing here synchronizes a device.
//   - stream not capturing, device with memory pools: cudaMallocFromPoolAsync from knetcnn's own
//     pool for the device and cudaFreeAsync on `stream`, both in relaxed capture mode (another
//     thread's global-mode capture must neither reject them nor be invalidated by them). The free
//     is ordered after the work that used the buffer; the pool reuses memory across streams only
//     once that is known safe (cudaMemPoolReuseAllowInternalDependencies is off, see
//     device_memory.cpp), so threads and streams never share a live buffer. A free the runtime
//     refuses is counted (PoolStats::failed_frees) and retried at the next allocation on the same
//     stream (cudaStreamGetId), where stream order makes it safe again.
//   - stream capturing, device with memory pools: cudaMallocAsync / cudaFreeAsync on the
//     capturing stream: graph memory nodes, so the graph owns its buffer (no eager call can free
//     or reuse it under a replay).
//   - device without memory pools: a buffer from knetcnn's small set of idle buffers for the
//     device (cudaMalloc when none fits), given back with an event recorded on `stream` after its
//     last use. A buffer is reused on the stream it was last used on at once (stream order), on
//     another stream only once its event has completed (or, when memory is short, with
//     cudaStreamWaitEvent). Idle buffers beyond kMaxIdleBuffers are freed once their event has
//     completed and no blocking-stream capture is seen on the device; release_device_memory()
//     frees the rest. While capturing nothing can be allocated: the constructor throws CudaError
//     (cudaErrorStreamCaptureUnsupported) saying so.
// A failed allocation throws CudaError (cudaErrorMemoryAllocation).
class DeviceScratch {
 public:
  DeviceScratch(std::size_t bytes, int device, cudaStream_t stream, CaptureState capture, const char* what);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  void* get() const { return pointer_; }
  std::size_t size() const { return bytes_; }

 private:
  enum class Kind { None, Pool, Graph, Held };
  void* pointer_ = nullptr;
  std::size_t bytes_ = 0;
  std::size_t held_bytes_ = 0;  // Held: the buffer's real size (>= bytes_)
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  Kind kind_ = Kind::None;
  cudaEvent_t event_ = nullptr;          // Held: marks the buffer's last use
  unsigned long long stream_id_ = 0;     // Held: cudaStreamGetId(stream_)
};

constexpr std::size_t kMaxIdleBuffers = 8;

// knetcnn's stream-ordered pools (one per device, created on first eager use). Memory freed into
// a pool stays reserved across synchronizations up to a release threshold; beyond it the driver
// releases it at the next synchronization. The threshold is pool_retention_for(the largest
// workspace limit used on the device since the last release, the device's memory), and
// release_device_memory() puts it back to the floor.
constexpr std::size_t kMinPoolRetention = std::size_t{64} << 20;
// max(64 MiB, min(2 * limit, total / 4)): one workspace in use while the next call's is taken, but
// never more than a quarter of the device, whatever limit a call names. Pure, for tests.
std::size_t pool_retention_for(std::size_t limit, std::size_t total_memory);
// Raises the device's wanted threshold to pool_retention_for(bytes, its memory). `device` current.
void retain_pool_bytes(int device, std::size_t bytes);
// The release threshold set on the device's pool (0 if it has none yet), for tests.
std::size_t pool_release_threshold(int device);

struct PoolStats {
  std::size_t pools = 0;          // pools holding reserved memory
  std::size_t reserved = 0;       // bytes they hold (cudaMemPoolAttrReservedMemCurrent)
  std::size_t idle_buffers = 0;   // devices without pools: idle buffers held
  std::size_t idle_bytes = 0;     // and their bytes
  std::size_t failed_frees = 0;   // frees the runtime refused since the start (retried later)
  std::size_t pending_frees = 0;  // of those, still waiting for their retry
};
PoolStats stream_pool_stats();

// Refuses (CudaError) while the calling thread's default streams, or a blocking stream, of a
// device knetcnn holds memory on capture a CUDA graph: cudaErrorStreamCaptureImplicit or
// cudaErrorStreamCaptureUnsupported, naming `what`. Checked before release_device_memory().
void check_release_allowed(const std::string& what);
// Releases what knetcnn holds and is no longer in use, without synchronizing a device: idle
// buffers (each after cudaEventSynchronize on its last use: events, unlike devices, may be waited
// for during another stream's capture), the pools' unused memory (cudaMemPoolTrimTo; memory whose
// asynchronous free the host has not yet seen complete is released at a later trim or
// synchronization) and the pools' raised release thresholds. Never throws; a buffer that cannot be
// freed now is kept for the next release. Must not run while a capture is active on the device
// (check_release_allowed refuses what it can see).
void release_device_memory();

namespace test_hooks {
// Adds a buffer to the idle set of a device without memory pools, as if a call had given it back
// (no event: its last use counts as complete). For tests of the release path only.
void adopt_idle_buffer(int device, void* pointer, std::size_t bytes);
// Forgets every idle buffer without freeing it (after adopt_idle_buffer with a fake pointer).
void forget_idle_buffers();
// The calling thread's next `count` frees of pool memory are refused as the runtime may refuse
// them (they are counted and kept for a retry, PoolStats).
void inject_free_failures(int count);
}  // namespace test_hooks

}  // namespace knetcnn
