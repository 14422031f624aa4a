// A minimal parallel-for for the CPU kernels: split [0, count) into contiguous ranges, one per
// thread, the calling thread taking the first. Threads are started per call (no pool to keep
// alive, nothing to clean up at exit), so a call whose work is too small to repay ~20 us of
// thread start-up runs on the calling thread alone.
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

// Below this many elements of work per thread, starting a thread costs more than it saves
// (measured here: starting and joining a thread costs ~45 us, a pool of waiting threads 26-43 us
// to wake, so work below ~100 us of one thread is better left on it: LeNet-2-sized pooling ran
// 2x slower on two threads).
constexpr int64_t kMinWorkPerThread = 1 << 18;

}  // namespace knetcnn::cpu
