// What this process can see of cuDNN, the CUDA runtime, the driver and the GPUs. Every query
// here works on a machine without a GPU or driver and reports the reason instead of failing.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace knetcnn {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  std::size_t total_memory = 0;
};

struct RuntimeInfo {
  std::size_t cudnn_runtime_version = 0;  // cudnnGetVersion(), e.g. 92800
  std::size_t cudnn_build_version = 0;    // CUDNN_VERSION of the headers we compiled against
  std::size_t cudnn_cudart_version = 0;   // the CUDA runtime cuDNN itself was built for
  int cuda_runtime_version = 0;           // cudaRuntimeGetVersion(), e.g. 12090
  int cuda_build_version = 0;             // CUDART_VERSION of the headers
  int driver_version = 0;                 // cudaDriverGetVersion(); 0 means no driver is loaded
  std::vector<DeviceInfo> devices;
  std::string no_device_reason;  // empty when at least one device is usable
};

RuntimeInfo query_runtime();

// "" when device `index` can run cuDNN work; otherwise why not and how to fix it.
std::string device_unavailable_reason(int index = 0);
// Throws DeviceUnavailable with that reason.
void require_device(int index = 0);

}  // namespace knetcnn
