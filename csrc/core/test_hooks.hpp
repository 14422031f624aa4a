// Observation points and fault injection for the GPU-tier gtests: what a call actually allocated
// and ran, and failures a real device never produces on demand. Everything per thread is
// thread_local (concurrent tests do not see each other's); nothing here changes a call's result
// unless a test armed an injection. Not used by the Python module.
#pragma once

#include <cstddef>

#include <cudnn.h>

namespace knetcnn::test_hooks {

// What the calling thread's knetcnn calls did since reset_thread_record().
struct ThreadRecord {
  std::size_t largest_workspace = 0;  // the largest cuDNN workspace allocated (bytes)
  std::size_t largest_scratch = 0;    // the largest device buffer of any kind (workspaces, temporaries)
  std::size_t scratch_allocations = 0;
  int last_pooling_mode = -1;         // cudnnPoolingMode_t read back from the last pooling descriptor run
  int conv_launches = 0;              // cuDNN convolution executions attempted (injected failures included)
};
ThreadRecord& thread_record();
void reset_thread_record();

// The calling thread's next `count` convolution executions return `status` without running.
void inject_execution_failures(int count, cudnnStatus_t status);
bool take_injected_execution_failure(cudnnStatus_t* status);

// The calling thread's next `count` device-buffer allocations fail with cudaErrorMemoryAllocation.
void inject_allocation_failures(int count);
bool take_injected_allocation_failure();

// Process-wide: treat every device as lacking memory pools (cudaDevAttrMemoryPoolsSupported = 0),
// so that a GPU with pools can exercise the fallback path. Set only while no call runs.
void set_memory_pools_disabled(bool disabled);
bool memory_pools_disabled();

}  // namespace knetcnn::test_hooks
