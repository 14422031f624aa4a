// A minimal parallel-for for the CPU kernels: [0, count) in contiguous chunks (a few per
// thread) that the calling thread and a pool of waiting worker threads claim one at a time.
// Workers spin briefly after each call, so back-to-back calls find them running, then sleep;
// calls too small to be worth waking a sleeping worker for run on the caller alone, but share
// with workers already awake, and wake sleeping ones for the calls that follow;
// one caller at a time uses the pool, others (and calls from inside a chunk) run serially.
// Workers keep off the CPU of the thread that posted the last job (their affinity leaves it out),
// so the kernel cannot stack them onto the caller's CPU while another CPU idles.
#pragma once

#include <cstdint>
#include <functional>

namespace knetcnn::cpu {

// Threads the kernels may use: KNETCNN_NUM_THREADS if set (>= 1), else the CPUs this process
// may run on (its affinity mask, not the machine's CPU count). Read once.
int max_threads();

// Calls body(begin, end) over disjoint ranges covering [0, count). `work_per_item` is a rough
// cost of one item in elements touched; fewer than kMinWorkPerThread elements per thread runs
// serially. If body throws, the first exception is rethrown here after every range has finished.
void parallel_for(int64_t count, int64_t work_per_item, const std::function<void(int64_t, int64_t)>& body);

// Below this many elements of work per thread, a second thread is not worth it on shared
// virtual CPUs (waking it costs tens of microseconds). Measured as bench/cpu.py measures, right
// after a pause, once workers kept off the caller's CPU: LeNet-2's float64 poolx (414 Ki
// elements) 101-114 us on two threads, 134-141 on one; LeNet-1's (113 Ki) 48-50 vs 55, within
// noise, so it stays on one thread.
constexpr int64_t kMinWorkPerThread = 1 << 16;

// The same bound for workers already awake (spinning after a recent call), which start a job at
// once: below it, a thread's share is shorter than handing it over.
constexpr int64_t kMinWorkPerAwakeThread = 1 << 13;

}  // namespace knetcnn::cpu
