// The CUDA runtime pieces the execution core needs around cuDNN: the current-device guard,
// stream-capture queries, device pointer checks and stream-ordered scratch buffers.
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime_api.h>

#include "exec_options.hpp"

namespace knetcnn {

// Makes `device` current for the scope and restores the caller's device afterwards, so that a
// knetcnn call never changes which device the caller's library (CuPy, PyTorch) thinks is current.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

enum class CaptureState { None, Active, Invalidated, Unknown };

// cudaStreamIsCapturing. An error (e.g. the legacy stream queried while another stream captures
// in global mode) is reported as Unknown: the caller must then assume capture.
CaptureState stream_capture_state(cudaStream_t stream);
bool capture_forbids_sync(CaptureState state);

// Why an algorithm search under `policy` may not run now, or "" if it may. Benchmark search runs
// and times kernels and synchronizes: that is illegal while the stream captures a CUDA graph.
std::string search_refusal_reason(AlgoPolicy policy, CaptureState state);

// A user pointer cuDNN will dereference: refuses null (ValueError, no CUDA call) ...
void check_not_null(const char* role, const void* pointer);
// ... and, with a device present, host memory the GPU cannot address or memory on another
// device (ValueError). Runtime queries only: nothing is read through the pointer.
void check_device_pointer(const char* role, const void* pointer, int device);

// A temporary device buffer freed when the scope ends. Where the device supports the
// stream-ordered allocator it is cudaMallocAsync/cudaFreeAsync on `stream`: the free is ordered
// after the work that uses the buffer, so no synchronization is needed, and it is legal during
// graph capture (it becomes a graph memory node). Otherwise cudaMalloc, and the destructor
// synchronizes the stream before cudaFree.
class DeviceScratch {
 public:
  DeviceScratch(std::size_t bytes, int device, cudaStream_t stream, const char* what);
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

}  // namespace knetcnn
