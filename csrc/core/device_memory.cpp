#include "device_memory.hpp"

#include <cstdint>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "cudnn_check.hpp"
#include "errors.hpp"

namespace knetcnn {
namespace {

bool pools_supported(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, bool> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(device);
  if (it != known.end()) return it->second;
  int value = 0;
  if (cudaDeviceGetAttribute(&value, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess) {
    cudaGetLastError();
    value = 0;
  }
  return known[device] = (value != 0);
}

std::string hex(const void* p) {
  std::ostringstream out;
  out << "0x" << std::hex << reinterpret_cast<std::uintptr_t>(p);
  return out.str();
}

}  // namespace

DeviceGuard::DeviceGuard(int device) {
  check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice", "device " + std::to_string(device));
}

DeviceGuard::~DeviceGuard() {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  cudaGetLastError();
}

CaptureState stream_capture_state(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return CaptureState::Unknown;
  }
  switch (status) {
    case cudaStreamCaptureStatusNone: return CaptureState::None;
    case cudaStreamCaptureStatusActive: return CaptureState::Active;
    case cudaStreamCaptureStatusInvalidated: return CaptureState::Invalidated;
  }
  return CaptureState::Unknown;
}

bool capture_forbids_sync(CaptureState state) { return state != CaptureState::None; }

std::string search_refusal_reason(AlgoPolicy policy, CaptureState state) {
  if (policy != AlgoPolicy::Benchmark || state == CaptureState::None) return "";
  const char* what = state == CaptureState::Active        ? "is capturing a CUDA graph"
                     : state == CaptureState::Invalidated ? "is in an invalidated CUDA graph capture"
                                                          : "cannot be queried for CUDA graph capture";
  return std::string("algo='benchmark' must time cuDNN's algorithms, but the stream ") + what +
         " (cudaStreamIsCapturing), where running and synchronizing is not allowed. Run this call "
         "once before capturing (the choice is cached and reused during capture), or capture under "
         "knetcnn.options(algo='heuristic')";
}

void check_not_null(const char* role, const void* pointer) {
  if (pointer == nullptr)
    throw value_error(std::string(role) + " is a null device pointer: pass the address of a device array");
}

void check_device_pointer(const char* role, const void* pointer, int device) {
  cudaPointerAttributes attributes{};
  const cudaError_t status = cudaPointerGetAttributes(&attributes, pointer);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw value_error(std::string(role) + " = " + hex(pointer) +
                      " is not a pointer the CUDA runtime knows (" + cudaGetErrorName(status) +
                      "): pass the address of a device array");
  }
  if (attributes.type == cudaMemoryTypeUnregistered)
    throw value_error(std::string(role) + " = " + hex(pointer) +
                      " is ordinary host memory, which the GPU cannot read: pass a device array");
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != device)
    throw value_error(std::string(role) + " = " + hex(pointer) + " is on device " +
                      std::to_string(attributes.device) + ", but the call runs on device " +
                      std::to_string(device) + ": all arrays of one call must be on one device");
}

DeviceScratch::DeviceScratch(std::size_t bytes, int device, cudaStream_t stream, const char* what)
    : bytes_(bytes), stream_(stream) {
  if (bytes == 0) return;
  const std::string context = std::string(what) + ", " + std::to_string(bytes) + " bytes on device " +
                              std::to_string(device);
  stream_ordered_ = pools_supported(device);
  if (stream_ordered_)
    check_cuda(cudaMallocAsync(&pointer_, bytes, stream), "cudaMallocAsync", context);
  else
    check_cuda(cudaMalloc(&pointer_, bytes), "cudaMalloc", context);
}

DeviceScratch::~DeviceScratch() {
  if (!pointer_) return;
  if (stream_ordered_) {
    cudaFreeAsync(pointer_, stream_);
  } else {
    cudaStreamSynchronize(stream_);
    cudaFree(pointer_);
  }
  cudaGetLastError();
}

}  // namespace knetcnn
