#include "runtime_info.hpp"

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "cudnn_check.hpp"
#include "errors.hpp"

namespace knetcnn {
namespace {

std::string explain_device_count_error(cudaError_t status) {
  const std::string detail = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
  switch (status) {
    case cudaErrorNoDevice:
      return "the NVIDIA driver is loaded but reports no CUDA device (" + detail +
             "); check CUDA_VISIBLE_DEVICES and `nvidia-smi`";
    case cudaErrorInsufficientDriver:
      return "no usable NVIDIA driver: none is installed, or it is older than this CUDA 12 runtime "
             "needs (" + detail + "); install an NVIDIA driver >= 525, or pass NumPy arrays to use "
             "the CPU backend";
    default:
      return "the CUDA runtime could not list devices (" + detail + ")";
  }
}

}  // namespace

RuntimeInfo query_runtime() {
  RuntimeInfo info;
  info.cudnn_runtime_version = cudnnGetVersion();
  info.cudnn_build_version = CUDNN_VERSION;
  info.cudnn_cudart_version = cudnnGetCudartVersion();
  info.cuda_build_version = CUDART_VERSION;
  if (cudaRuntimeGetVersion(&info.cuda_runtime_version) != cudaSuccess) info.cuda_runtime_version = 0;
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  int count = 0;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaGetDeviceCount(&count);
  // On failure the count is left unset (architecture.md): trust the status, never the count.
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    info.no_device_reason = explain_device_count_error(status);
    return info;
  }
  if (count <= 0) {
    info.no_device_reason = "the CUDA runtime reports 0 devices";
    return info;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    const cudaError_t before = cudaPeekAtLastError();
    const cudaError_t read = cudaGetDeviceProperties(&prop, i);
    if (read != cudaSuccess) {
      clear_own_cuda_error(read, before);
      continue;
    }
    info.devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  if (info.devices.empty()) info.no_device_reason = "no device's properties could be read";
  return info;
}

std::string device_unavailable_reason(int index) {
  int count = 0;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    return explain_device_count_error(status);
  }
  if (index < 0 || index >= count)
    return "device " + std::to_string(index) + " does not exist (" + std::to_string(count) + " visible)";
  return "";
}

void require_device(int index) {
  const std::string reason = device_unavailable_reason(index);
  if (!reason.empty()) throw DeviceUnavailable("no GPU is usable: " + reason);
}

}  // namespace knetcnn
