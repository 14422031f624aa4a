#include "cpu_parallel.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace knetcnn::cpu {
namespace {

int count_threads() {
  if (const char* env = std::getenv("KNETCNN_NUM_THREADS")) {
    int requested = std::atoi(env);
    if (requested >= 1) return requested;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

int max_threads() {
  static const int threads = count_threads();
  return threads;
}

void parallel_for(int64_t count, int64_t work_per_item, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  int64_t total_work = count * std::max<int64_t>(work_per_item, 1);
  int64_t threads = std::min<int64_t>({max_threads(), count, total_work / kMinWorkPerThread});
  if (threads <= 1) {
    body(0, count);
    return;
  }
  // An exception (bad_alloc, say) must not escape a thread (std::terminate): the first one is
  // kept and rethrown on the calling thread once every range has finished.
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto guarded = [&](int64_t begin, int64_t end) {
    try {
      body(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(threads - 1);
  auto range = [&](int64_t t) { return std::pair{count * t / threads, count * (t + 1) / threads}; };
  for (int64_t t = 1; t < threads; ++t) {
    auto [begin, end] = range(t);
    try {
      workers.emplace_back([&guarded, begin = begin, end = end] { guarded(begin, end); });
    } catch (const std::system_error&) {
      guarded(begin, end);  // no thread to be had (resource limits): do this range here
    }
  }
  auto [begin, end] = range(0);
  guarded(begin, end);
  for (auto& worker : workers) worker.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace knetcnn::cpu
