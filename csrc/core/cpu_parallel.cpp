#include "cpu_parallel.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
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

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// One parallel_for call: chunks [0, chunks) of [0, count), claimed one at a time by whoever is
// free (the caller first), so a worker that starts late takes fewer chunks instead of holding
// the caller up with a fixed share.
struct Job {
  const std::function<void(int64_t, int64_t)>* body;
  int64_t count, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int> workers_inside{0};
  std::mutex failure_mutex;
  std::exception_ptr failure;

  void run_chunks() {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      try {
        (*body)(count * c / chunks, count * (c + 1) / chunks);
      } catch (...) {  // must not escape a worker (std::terminate): rethrown by the caller
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    }
  }
};

// Workers that wait for jobs: they spin for kSpin after each job (so back-to-back calls find
// them running, as OpenMP's do; waking a sleeping thread costs 26-43 us here, more than a small
// kernel's whole run) and then sleep on a condition variable. Never destroyed: detached workers
// may still be waiting at exit, and a fork's child gets a fresh pool (see pool()).
class Pool {
 public:
  explicit Pool(int workers) : workers_(workers) {
    CPU_ZERO(&allowed_);
    if (sched_getaffinity(0, sizeof(allowed_), &allowed_) != 0) CPU_ZERO(&allowed_);  // keep_off then does nothing
  }

  // Whether every worker is spinning (none asleep): a job handed to them now starts at once.
  bool awake() const { return started_.load(std::memory_order_acquire) && sleeping_now_.load(std::memory_order_acquire) == 0; }

  // Wakes sleeping workers without a job, so that they spin for kSpin and find the next job at
  // once. Costs the caller one futex wake; nothing if no worker sleeps or a job is running.
  void nudge() {
    if (!started_.load(std::memory_order_acquire)) {
      std::unique_lock<std::mutex> running(run_mutex_, std::try_to_lock);
      if (!running.owns_lock()) return;
      if (!started_.load(std::memory_order_relaxed)) start_workers();
      return;  // fresh workers start out spinning
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (sleeping_ == 0 || job_) return;
    poster_cpu_ = sched_getcpu();  // the woken workers keep off it while they spin
    posted_.store(++generation_, std::memory_order_release);
    wake_.notify_all();
  }

  // Runs job's chunks on this thread and on the workers; false (nothing run) if the pool is
  // busy with another caller's job, or this is a call from inside a job.
  bool run(Job& job) {
    std::unique_lock<std::mutex> running(run_mutex_, std::try_to_lock);
    if (!running.owns_lock()) return false;
    if (!started_.load(std::memory_order_relaxed)) start_workers();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      poster_cpu_ = sched_getcpu();
      job_ = &job;
      posted_.store(++generation_, std::memory_order_release);
      if (sleeping_ > 0) wake_.notify_all();
    }
    job.run_chunks();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = nullptr;  // no worker joins from here on
    }
    // Their last chunks. Yield now and then rather than only spin: a worker the scheduler put on
    // this CPU needs it to finish.
    for (int i = 1; job.workers_inside.load(std::memory_order_acquire) != 0; ++i) {
      if (i % 64 == 0) sched_yield(); else cpu_relax();
    }
    return true;
  }

 private:
  static constexpr auto kSpin = std::chrono::microseconds(100);

  void start_workers() {  // on first use, by the caller holding run_mutex_
    started_.store(true, std::memory_order_release);
    for (int i = 0; i < workers_; ++i) {
      try {
        std::thread([this] { work(); }).detach();
      } catch (const std::system_error&) {
        return;  // no thread to be had (resource limits): the callers do the chunks
      }
    }
  }

  void work() {
    uint64_t seen = 0;
    int kept_off = -1;  // the CPU this worker's affinity leaves out, if any
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 0; posted_.load(std::memory_order_acquire) == seen; ++i) {
        cpu_relax();
        if (i % 64 == 0 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleeping_now_.store(++sleeping_, std::memory_order_release);
          wake_.wait(lock, [&] { return generation_ != seen; });
          sleeping_now_.store(--sleeping_, std::memory_order_release);
        }
      }
      Job* job;
      int poster_cpu;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        seen = generation_;
        job = job_;
        poster_cpu = poster_cpu_;
        if (job) job->workers_inside.fetch_add(1, std::memory_order_relaxed);
      }
      keep_off(poster_cpu, kept_off);
      if (!job) continue;  // woken without a job (nudge), or that job had ended
      job->run_chunks();
      job->workers_inside.fetch_sub(1, std::memory_order_release);  // job may be gone after this
    }
  }

  // Linux may wake a worker on the waking caller's CPU and leave it there while another CPU
  // idles (seen on this project's 2-vCPU machines: for tens of calls the two threads shared one
  // CPU, each call slower than on one thread). So a worker keeps off the CPU the caller posted
  // from: its affinity is the process's, less that CPU, changed only when the caller moves (the
  // kernel moves a worker that is on it at once, and wakes it elsewhere from then on).
  void keep_off(int caller_cpu, int& kept_off) {
    if (caller_cpu < 0 || caller_cpu == kept_off || CPU_COUNT(&allowed_) < 2) return;
    if (!CPU_ISSET(caller_cpu, &allowed_)) return;
    cpu_set_t others = allowed_;
    CPU_CLR(caller_cpu, &others);
    if (sched_setaffinity(0, sizeof(others), &others) == 0) kept_off = caller_cpu;
  }

  const int workers_;
  cpu_set_t allowed_;  // the process's affinity when the pool was made
  std::atomic<bool> started_{false};  // set by the caller holding run_mutex_
  std::mutex run_mutex_;  // held by the caller whose job runs
  std::mutex mutex_;      // guards job_, poster_cpu_, generation_, sleeping_
  std::condition_variable wake_;
  Job* job_ = nullptr;
  int poster_cpu_ = -1;  // where the thread that last posted (a job or a nudge) ran then
  uint64_t generation_ = 0;
  int sleeping_ = 0;
  std::atomic<uint64_t> posted_{0};  // generation_, readable without the mutex while spinning
  std::atomic<int> sleeping_now_{0};  // sleeping_, readable without the mutex (awake())
};

constexpr int64_t kChunksPerThread = 4;

std::atomic<Pool*> the_pool{nullptr};
std::once_flag fork_handler_installed;

Pool& pool() {
  // A fork's child has only the forking thread: it forgets the parent's pool (left allocated:
  // its mutexes may be held) and makes another on first use.
  std::call_once(fork_handler_installed, [] {
    pthread_atfork(nullptr, nullptr, [] { the_pool.store(nullptr, std::memory_order_relaxed); });
  });
  Pool* current = the_pool.load(std::memory_order_acquire);
  if (current) return *current;
  auto* fresh = new Pool(max_threads() - 1);  // no threads yet: a loser of the race below is simply deleted
  if (the_pool.compare_exchange_strong(current, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *current;
}

}  // namespace

int max_threads() {
  static const int threads = count_threads();
  return threads;
}

void parallel_for(int64_t count, int64_t work_per_item, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  const int64_t total_work = count * std::max<int64_t>(work_per_item, 1);
  int64_t threads = std::min<int64_t>({max_threads(), count, total_work / kMinWorkPerThread});
  if (threads <= 1 && max_threads() > 1 && count > 1 && total_work >= 2 * kMinWorkPerAwakeThread) {
    // Too small to be worth waking a worker, but worth sharing with workers already awake. When
    // they sleep, this call runs here and wakes them for the next: small calls back to back (a
    // training loop's) then share the work, while a lone call costs only the wake-up signal.
    Pool& workers = pool();
    if (workers.awake()) {
      threads = std::min<int64_t>({max_threads(), count, total_work / kMinWorkPerAwakeThread});
    } else {
      workers.nudge();
    }
  }
  if (threads <= 1) {
    body(0, count);
    return;
  }
  Job job;
  job.body = &body;
  job.count = count;
  job.chunks = std::min<int64_t>(count, kChunksPerThread * threads);
  if (!pool().run(job)) {
    body(0, count);  // the pool is busy with another thread's call: this one runs here
    return;
  }
  if (job.failure) std::rethrow_exception(job.failure);
}

}  // namespace knetcnn::cpu
