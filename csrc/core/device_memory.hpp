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

// cudaStreamIsCapturing. An error (e.g. the legacy stream queried while another thread captures
// in global mode) is reported as Unknown: the caller must then assume capture.
CaptureState stream_capture_state(cudaStream_t stream);
bool capture_forbids_sync(CaptureState state);

// Why an algorithm search under `policy` may not run now, or "" if it may. Benchmark search runs
// and times kernels and synchronizes: that is illegal while the stream captures a CUDA graph.
std::string search_refusal_reason(AlgoPolicy policy, CaptureState state);

// For the scope, this thread may make "potentially unsafe" calls (cudaMalloc, cudaFree,
// synchronization, cudnnCreate) even while another thread captures a CUDA graph in global mode,
// which would otherwise reject them and invalidate that capture (PyTorch's allocator does the
// same). Only for calls made while OUR stream is not capturing.
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

// cudaDevAttrMemoryPoolsSupported, cached per device.
bool memory_pools_supported(int device);

// A CudaError for an allocation failure (cudaErrorMemoryAllocation).
bool is_out_of_memory(int cuda_error_code);

// A temporary device buffer freed when the scope ends, without synchronizing where possible:
//   - stream not capturing, device with memory pools: cudaMallocFromPoolAsync from knetcnn's own
//     pool for the device and cudaFreeAsync on `stream`. The free is ordered after the work that
//     used the buffer; the pool reuses memory across streams only once that is safe (its default
//     reuse policies), so threads and streams never share a live buffer.
//   - stream capturing, device with memory pools: cudaMallocAsync / cudaFreeAsync on the
//     capturing stream: graph memory nodes, so the graph owns its buffer (no eager call can free
//     or reuse it under a replay).
//   - device without memory pools: cudaMalloc, and the destructor synchronizes the stream before
//     cudaFree; while capturing that is impossible, and the constructor throws CudaError
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
  void* pointer_ = nullptr;
  std::size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
  bool stream_ordered_ = false;
};

// knetcnn's stream-ordered pools (one per device, created on first eager use). Memory freed into
// a pool stays reserved across synchronizations up to a retention bound (twice the largest
// workspace limit used on the device, at least 64 MiB); beyond it the driver releases it at the
// next synchronization, so reserved memory follows the peak of concurrent use, not the number
// of streams ever seen.
void retain_pool_bytes(int device, std::size_t bytes);
struct PoolStats {
  std::size_t pools = 0;     // pools holding reserved memory
  std::size_t reserved = 0;  // bytes they hold (cudaMemPoolAttrReservedMemCurrent)
};
PoolStats stream_pool_stats();
// Synchronizes each device that has a pool and releases all of its unused memory.
void trim_stream_pools();

}  // namespace knetcnn
