// parallel_for and its pool of waiting workers: every index exactly once, whoever runs it;
// exceptions reach the caller and leave the pool usable; calls from inside a chunk and from
// several threads at once (the Python bindings release the GIL) neither deadlock nor mix up.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu_parallel.hpp"

namespace knetcnn {
namespace {

// Enough work per item that every thread is asked to help.
constexpr int64_t kHeavy = cpu::kMinWorkPerThread;

std::vector<int> visits(int64_t count, int64_t work_per_item) {
  std::vector<std::atomic<int>> seen(count);
  cpu::parallel_for(count, work_per_item, [&](int64_t begin, int64_t end) {
    ASSERT_LE(0, begin);
    ASSERT_LE(begin, end);
    ASSERT_LE(end, count);
    for (int64_t i = begin; i < end; ++i) seen[i].fetch_add(1);
  });
  std::vector<int> out;
  for (auto& s : seen) out.push_back(s.load());
  return out;
}

TEST(CpuParallel, EveryIndexRunsExactlyOnce) {
  for (int64_t count : {1, 2, 3, 7, 8, 9, 64, 1000, 4097}) {
    for (int64_t work : {int64_t(1), kHeavy}) {
      const std::vector<int> seen = visits(count, work);
      EXPECT_EQ(seen, std::vector<int>(count, 1)) << "count " << count << " work " << work;
    }
  }
  EXPECT_TRUE(visits(0, kHeavy).empty());
}

TEST(CpuParallel, WorkersTakeChunksOffTheCallingThread) {
  if (cpu::max_threads() < 2) GTEST_SKIP() << "one thread allowed here (affinity or KNETCNN_NUM_THREADS)";
  // A worker may find its CPU busy with another process (ctest runs tests side by side) and join
  // after the caller has done every chunk itself: a few calls give it the chance.
  std::mutex mutex;
  std::set<std::thread::id> runners;
  for (int call = 0; call < 50 && runners.size() < 2; ++call) {
    cpu::parallel_for(64, kHeavy, [&](int64_t, int64_t) {
      std::this_thread::sleep_for(std::chrono::microseconds(300));  // long enough for a worker to wake
      std::lock_guard<std::mutex> lock(mutex);
      runners.insert(std::this_thread::get_id());
    });
  }
  EXPECT_GE(runners.size(), 2u);
}

// The CPUs worker threads ran chunks on while the calling thread was held to `caller_cpu`.
std::set<int> worker_cpus_with_caller_on(int caller_cpu) {
  cpu_set_t before, only;
  EXPECT_EQ(sched_getaffinity(0, sizeof(before), &before), 0);
  CPU_ZERO(&only);
  CPU_SET(caller_cpu, &only);
  EXPECT_EQ(sched_setaffinity(0, sizeof(only), &only), 0);
  std::mutex mutex;
  std::set<int> cpus;
  const auto caller = std::this_thread::get_id();
  cpu::parallel_for(64, kHeavy, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::microseconds(300));  // long enough for a worker to join
    if (std::this_thread::get_id() == caller) return;
    std::lock_guard<std::mutex> lock(mutex);
    cpus.insert(sched_getcpu());
  });
  EXPECT_EQ(sched_setaffinity(0, sizeof(before), &before), 0);
  return cpus;
}

TEST(CpuParallel, WorkersKeepOffTheCallersCpu) {
  // Linux may wake a worker on its waker's CPU and leave the two sharing it while another CPU
  // idles; the pool's workers leave the caller's CPU out of their affinity, and follow it when
  // the caller moves.
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (cpus.size() < 2 || cpu::max_threads() < 2) GTEST_SKIP() << "needs two CPUs and two threads";
  visits(64, kHeavy);  // the pool exists (and took this process's affinity) before the caller is held
  for (int caller_cpu : {cpus[0], cpus[1], cpus[0]}) {
    std::set<int> used;
    // As above, a worker whose CPU is busy elsewhere may join late: a few calls.
    for (int call = 0; call < 50 && used.empty(); ++call) used = worker_cpus_with_caller_on(caller_cpu);
    EXPECT_FALSE(used.empty()) << "no worker joined; caller on CPU " << caller_cpu;
    EXPECT_EQ(used.count(caller_cpu), 0u) << "a worker ran on the caller's CPU " << caller_cpu;
  }
}

// The threads that ran chunks of one call of `work` elements in all, each chunk busy for a while
// (long enough for a worker to join, if it was asked).
std::set<std::thread::id> runners_of(int64_t work) {
  std::mutex mutex;
  std::set<std::thread::id> runners;
  cpu::parallel_for(64, work / 64, [&](int64_t, int64_t) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    while (std::chrono::steady_clock::now() < until) {
    }
    std::lock_guard<std::mutex> lock(mutex);
    runners.insert(std::this_thread::get_id());
  });
  return runners;
}

TEST(CpuParallel, SmallCallsShareOnlyWithWorkersAlreadyAwake) {
  if (cpu::max_threads() < 2) GTEST_SKIP() << "one thread allowed here (affinity or KNETCNN_NUM_THREADS)";
  // Too little work to wake a worker for, enough to share with one that is spinning: after a
  // pause the call runs alone (and wakes the workers); the calls right after it share, once the
  // woken worker runs (tens of microseconds). A few tries, as a worker's CPU may be busy with
  // another process (ctest runs tests side by side).
  const int64_t small = cpu::kMinWorkPerThread;  // one thread's worth by the sleeping workers' bound
  static_assert(cpu::kMinWorkPerThread >= 4 * cpu::kMinWorkPerAwakeThread);
  bool alone_after_pause = false, shared_right_after = false;
  for (int attempt = 0; attempt < 20 && !(alone_after_pause && shared_right_after); ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the workers' spin ends: they sleep
    const auto first = runners_of(small);
    alone_after_pause |= first.size() == 1 && *first.begin() == std::this_thread::get_id();
    for (int call = 0; call < 10 && !shared_right_after; ++call) shared_right_after = runners_of(small).size() >= 2;
  }
  EXPECT_TRUE(alone_after_pause) << "a small call after a pause woke a worker to share it";
  EXPECT_TRUE(shared_right_after) << "a small call right after another did not share with the awake workers";
}

TEST(CpuParallel, ManyCallsInARowReuseThePool) {
  // Back-to-back calls meet workers still spinning from the last one, and calls after a pause
  // wake sleeping ones: both must finish every chunk before parallel_for returns.
  for (int call = 0; call < 2000; ++call) {
    if (call % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::atomic<int64_t> sum{0};
    cpu::parallel_for(100, kHeavy, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
    });
    ASSERT_EQ(sum.load(), 4950) << "call " << call;
  }
}

TEST(CpuParallel, AnExceptionReachesTheCallerAndThePoolStaysUsable) {
  for (int64_t throwing_index : {int64_t(0), int64_t(63)}) {
    EXPECT_THROW(cpu::parallel_for(64, kHeavy,
                                   [&](int64_t begin, int64_t end) {
                                     if (begin <= throwing_index && throwing_index < end) throw std::runtime_error("chunk");
                                   }),
                 std::runtime_error);
  }
  EXPECT_EQ(visits(64, kHeavy), std::vector<int>(64, 1));
}

TEST(CpuParallel, CallsFromInsideAChunkRunAndDoNotDeadlock) {
  std::atomic<int64_t> inner{0};
  cpu::parallel_for(8, kHeavy, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      cpu::parallel_for(10, kHeavy, [&](int64_t b, int64_t e) { inner.fetch_add(e - b); });
  });
  EXPECT_EQ(inner.load(), 80);
}

TEST(CpuParallel, SeveralCallingThreadsEachGetTheirOwnResults) {
  constexpr int kCallers = 6;
  std::vector<int64_t> sums(kCallers, -1);
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&, t] {
      int64_t total = 0;
      for (int call = 0; call < 300; ++call) {
        std::atomic<int64_t> sum{0};
        cpu::parallel_for(50 + t, kHeavy, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
        });
        total += sum.load();
      }
      sums[t] = total;
    });
  }
  for (auto& c : callers) c.join();
  for (int t = 0; t < kCallers; ++t) {
    const int64_t n = 50 + t;
    EXPECT_EQ(sums[t], 300 * n * (n - 1) / 2) << "caller " << t;
  }
}

}  // namespace
}  // namespace knetcnn
