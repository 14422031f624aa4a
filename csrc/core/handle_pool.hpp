// cuDNN handles: one per (device, thread), created lazily.
//
// A cuDNN handle is bound to the device that was current when cudnnCreate ran and must not be
// used by two threads at once. Each thread therefore keeps its own handle per device. When a
// thread exits its handles go back to a process-wide pool and a later thread reuses them, so a
// program that starts many short-lived threads creates only as many handles as ran at once.
// Handles are never destroyed: the pool lives for the process, because cudnnDestroy during
// process teardown can run after the CUDA runtime has unloaded (PyTorch keeps its pool for the
// same reason). The memory is reclaimed by the driver at exit.
#pragma once

#include <vector>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "device_memory.hpp"

namespace knetcnn {

// The calling thread's handle for `device` (the caller has made `device` current, see
// DeviceGuard), with cudnnSetStream(stream) applied: set on every call, never assumed.
// cudnnCreate allocates device memory and synchronizes, which a stream capturing a CUDA graph does
// not allow: when this thread has no handle for `device` yet (and none is pooled) and `capture`
// is not None, it throws CudaError(cudaErrorStreamCaptureUnsupported) saying to make one call
// before capturing. Outside capture, cudnnCreate runs in relaxed capture mode, so that another
// thread's global-mode capture neither rejects it nor is invalidated by it.
cudnnHandle_t cudnn_handle(int device, cudaStream_t stream, CaptureState capture = CaptureState::None);

// Handles created so far (in use or pooled), for tests and diagnostics.
int cudnn_handles_created();

namespace test_hooks {
// Moves `device`'s pooled (free) handles out, so that a thread with no handle yet must create one
// (the capture refusal above); restore_pooled_handles gives them back.
std::vector<cudnnHandle_t> take_pooled_handles(int device);
void restore_pooled_handles(int device, const std::vector<cudnnHandle_t>& handles);
}  // namespace test_hooks

}  // namespace knetcnn
