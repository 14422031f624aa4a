#include "handle_pool.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <vector>

#include "cudnn_check.hpp"
#include "errors.hpp"

namespace knetcnn {
namespace {

std::atomic<int> g_created{0};

// Free handles per device. Heap-allocated and never deleted (see the header), so that it outlives
// every thread_local owner, including the main thread's, whose destructor runs at exit.
struct Pool {
  std::mutex mutex;
  std::map<int, std::vector<cudnnHandle_t>> free;
};

Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

// The handles this thread holds; returned to the pool when the thread exits.
struct ThreadHandles {
  std::map<int, cudnnHandle_t> by_device;
  ~ThreadHandles() {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    for (auto& [device, handle] : by_device) p.free[device].push_back(handle);
  }
};

thread_local ThreadHandles t_handles;

}  // namespace

cudnnHandle_t cudnn_handle(int device, cudaStream_t stream, CaptureState capture) {
  cudnnHandle_t handle = nullptr;
  auto it = t_handles.by_device.find(device);
  if (it != t_handles.by_device.end()) {
    handle = it->second;
  } else {
    {
      Pool& p = pool();
      std::lock_guard<std::mutex> lock(p.mutex);
      auto& free = p.free[device];
      if (!free.empty()) {
        handle = free.back();
        free.pop_back();
      }
    }
    if (!handle) {
      if (capture != CaptureState::None)
        throw CudaError(static_cast<int>(cudaErrorStreamCaptureUnsupported), "cudaErrorStreamCaptureUnsupported",
                        "knetcnn needs a cuDNN handle for device " + std::to_string(device) +
                            " on this thread, but the stream is capturing a CUDA graph, where cudnnCreate (which "
                            "allocates and synchronizes) may not run: make one knetcnn call on this thread "
                            "before capturing");
      // The current device is `device` (DeviceGuard): cudnnCreate binds the handle to it.
      RelaxedCaptureMode relaxed;
      KNETCNN_CUDNN_CTX(cudnnCreate(&handle), "device " + std::to_string(device));
      ++g_created;
    }
    t_handles.by_device[device] = handle;
  }
  KNETCNN_CUDNN(cudnnSetStream(handle, stream));
  return handle;
}

int cudnn_handles_created() { return g_created.load(); }

namespace test_hooks {

std::vector<cudnnHandle_t> take_pooled_handles(int device) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  std::vector<cudnnHandle_t> out;
  out.swap(p.free[device]);
  return out;
}

void restore_pooled_handles(int device, const std::vector<cudnnHandle_t>& handles) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  auto& free = p.free[device];
  free.insert(free.end(), handles.begin(), handles.end());
}

}  // namespace test_hooks

}  // namespace knetcnn
