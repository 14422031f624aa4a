#include "test_hooks.hpp"

#include <atomic>

namespace knetcnn::test_hooks {
namespace {

thread_local ThreadRecord t_record;
thread_local int t_execution_failures = 0;
thread_local cudnnStatus_t t_execution_status = CUDNN_STATUS_EXECUTION_FAILED;
thread_local int t_allocation_failures = 0;
std::atomic<bool> g_pools_disabled{false};

}  // namespace

ThreadRecord& thread_record() { return t_record; }
void reset_thread_record() { t_record = ThreadRecord{}; }

void inject_execution_failures(int count, cudnnStatus_t status) {
  t_execution_failures = count;
  t_execution_status = status;
}

bool take_injected_execution_failure(cudnnStatus_t* status) {
  if (t_execution_failures <= 0) return false;
  --t_execution_failures;
  *status = t_execution_status;
  return true;
}

void inject_allocation_failures(int count) { t_allocation_failures = count; }

bool take_injected_allocation_failure() {
  if (t_allocation_failures <= 0) return false;
  --t_allocation_failures;
  return true;
}

void set_memory_pools_disabled(bool disabled) { g_pools_disabled = disabled; }
bool memory_pools_disabled() { return g_pools_disabled.load(); }

}  // namespace knetcnn::test_hooks
