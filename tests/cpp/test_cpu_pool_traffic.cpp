// The 2x2 max-pool backward's ways of moving memory (cached, prefetch, streamed stores): each
// gives every window's cells the reference's values and writes nothing else, on aligned rows
// (which stream) and unaligned ones (which fall back); which way a call takes, by size; and
// the sysfs cache sizes that choice reads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cpu_cache.hpp"
#include "cpu_pool_rows.hpp"

namespace knetcnn::cpu {
namespace {

using rows::Traffic;

constexpr Traffic kAllTraffic[] = {Traffic::cached, Traffic::prefetch, Traffic::stream};

// A buffer whose first element sits `offset` elements past a 64-byte boundary.
template <typename T>
struct Placed {
  std::vector<T> storage;
  T* data;
  Placed(int64_t count, int64_t offset, T fill) : storage(count + 64 / sizeof(T) + offset, fill) {
    const auto address = reinterpret_cast<std::uintptr_t>(storage.data());
    const std::uintptr_t aligned = (address + 63) / 64 * 64;
    data = reinterpret_cast<T*>(aligned) + offset;
  }
};

template <typename T>
bool nan_window(const T* top, int64_t in_x) {
  return std::isnan(top[0]) || std::isnan(top[1]) || std::isnan(top[in_x]) || std::isnan(top[in_x + 1]);
}

// Runs one Traffic over a block of `rows` rows of n windows, rows in_x apart, dx placed `offset`
// elements past alignment, and checks every cell against the first-maximum rule.
template <typename T>
void check_block(int64_t n, int64_t in_x, int64_t offset, Traffic traffic, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "n=" << n << " in_x=" << in_x << " offset=" << offset
                                  << " traffic=" << int(traffic) << " bytes=" << sizeof(T));
  const int64_t rows = 3, cells = 2 * rows * in_x;
  const T sentinel = T(-7.25), alpha = T(1.5);
  std::uniform_int_distribution<int> small(0, 3);  // few values: many ties
  std::vector<T> x(cells), grad(rows * n);
  for (T& v : x) v = small(rng) == 0 && rng() % 16 == 0 ? std::numeric_limits<T>::quiet_NaN() : T(small(rng));
  for (T& g : grad) g = T(1 + small(rng));
  Placed<T> dx(cells, offset, sentinel);
  const rows::Block block{rows, n, 2 * in_x, n, n};
  const bool any_nan = rows::max_2x2_backward(x.data(), in_x, block, grad.data(), alpha, dx.data, traffic);

  bool saw_nan = false;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 2 * n; c < in_x; ++c) {  // past the windows: untouched
      ASSERT_EQ(dx.data[2 * r * in_x + c], sentinel);
      ASSERT_EQ(dx.data[(2 * r + 1) * in_x + c], sentinel);
    }
    for (int64_t i = 0; i < n; ++i) {
      const T* top = x.data() + 2 * r * in_x + 2 * i;
      const T* out = dx.data + 2 * r * in_x + 2 * i;
      if (nan_window(top, in_x)) {  // arbitrary here; the caller redoes it
        saw_nan = true;
        continue;
      }
      const int64_t offsets[4] = {0, 1, in_x, in_x + 1};
      int64_t first = 0;
      for (int k = 1; k < 4; ++k)
        if (top[offsets[k]] > top[offsets[first]]) first = k;
      for (int k = 0; k < 4; ++k)
        ASSERT_EQ(out[offsets[k]], k == first ? grad[r * n + i] * alpha : T(0)) << "row " << r << " window " << i;
    }
  }
  EXPECT_EQ(any_nan, saw_nan);
}

template <typename T>
void check_all_traffic() {
  std::mt19937 rng(11);
  constexpr int64_t per_32_bytes = 32 / sizeof(T);
  for (int64_t n = 1; n <= 21; ++n) {
    const int64_t aligned_x = (2 * n + per_32_bytes - 1) / per_32_bytes * per_32_bytes;
    for (Traffic traffic : kAllTraffic) {
      check_block<T>(n, aligned_x, 0, traffic, rng);      // streams (AVX2) where a row has a whole step
      check_block<T>(n, aligned_x, 1, traffic, rng);      // dx unaligned: falls back
      check_block<T>(n, 2 * n + 1, 0, traffic, rng);      // rows an unaligned distance apart: falls back
      check_block<T>(n, aligned_x + per_32_bytes, 0, traffic, rng);  // a spare aligned stretch after each row
    }
  }
}

TEST(CpuPoolTraffic, EveryTrafficGivesTheFirstMaximumItsShareAndWritesNothingElse) { check_all_traffic<double>(); }

TEST(CpuPoolTraffic, FloatEveryTrafficGivesTheFirstMaximumItsShareAndWritesNothingElse) {
  check_all_traffic<float>();
}

TEST(CpuPoolTraffic, LargerArraysPrefetchAndThoseOutgrowingHalfTheCacheStream) {
  const int64_t MiB = int64_t(1) << 20, cache = 32 * MiB;
  EXPECT_EQ(rows::traffic_for_2x2_backward(0, cache), Traffic::cached);
  EXPECT_EQ(rows::traffic_for_2x2_backward(4 * MiB - 1, cache), Traffic::cached);
  EXPECT_EQ(rows::traffic_for_2x2_backward(4 * MiB, cache), Traffic::prefetch);
  // x + dx + dy = 2.25 x: streams once that passes 16 MiB.
  EXPECT_EQ(rows::traffic_for_2x2_backward(7 * MiB, cache), Traffic::prefetch);  // 15.75 MiB
  EXPECT_EQ(rows::traffic_for_2x2_backward(8 * MiB, cache), Traffic::stream);    // 18 MiB
  EXPECT_EQ(rows::traffic_for_2x2_backward(8 * MiB, 4 * cache), Traffic::prefetch);
  EXPECT_EQ(rows::traffic_for_2x2_backward(int64_t(1) << 40, cache), Traffic::stream);
}

TEST(CpuCache, SysfsSizesParseAndOthersGiveZero) {
  EXPECT_EQ(parse_cache_size("32768K"), int64_t(32) << 20);
  EXPECT_EQ(parse_cache_size("32768K\n"), int64_t(32) << 20);
  EXPECT_EQ(parse_cache_size("1M"), int64_t(1) << 20);
  EXPECT_EQ(parse_cache_size("2G"), int64_t(2) << 30);
  EXPECT_EQ(parse_cache_size("512"), 512);
  EXPECT_EQ(parse_cache_size(""), 0);
  EXPECT_EQ(parse_cache_size("K"), 0);
  EXPECT_EQ(parse_cache_size("12Q"), 0);
  EXPECT_EQ(parse_cache_size("12KB"), 0);
  EXPECT_EQ(parse_cache_size("99999999999999999999K"), 0);
  EXPECT_EQ(parse_cache_size("1099511627776G"), 0);  // 2^70 bytes: past int64
  EXPECT_EQ(parse_cache_size("1099511627776"), int64_t(1) << 40);
}

TEST(CpuCache, TheLastLevelCacheIsAPlausibleSize) {
  // Read from sysfs where there is one, else assumed; either way a size the choice can use.
  const int64_t bytes = last_level_cache_bytes();
  EXPECT_GE(bytes, int64_t(64) << 10);
  EXPECT_LE(bytes, int64_t(1) << 40);
  EXPECT_EQ(bytes, last_level_cache_bytes());  // read once
}

}  // namespace
}  // namespace knetcnn::cpu
