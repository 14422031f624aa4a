// The CPU pooling kernels against a plain per-window reference written here: every mode, both
// maxpoolingNanOpt values, 1-3 spatial axes, padding and strides (overlapping, tiling and
// gapped windows), ties, NaN and -inf, and the 2x2 fast loops next to the general ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "cpu_pool.hpp"
#include "geometry.hpp"

using namespace knetcnn;

namespace {

constexpr double kAllNan = -1e300;  // stands for -finfo(dtype).max
const double kNan = std::numeric_limits<double>::quiet_NaN();

struct Config {
  PoolGeometry g;
  std::vector<double> x, dy;
};

// The windows' in-bounds cells of output position `o` (flat), as flat input offsets in row-major order.
std::vector<int64_t> window_cells(const PoolGeometry& g, int64_t o) {
  const int d = g.spatial_dims;
  std::vector<int64_t> out_index(d);
  for (int a = d - 1; a >= 0; --a) {
    out_index[a] = o % g.output[2 + a];
    o /= g.output[2 + a];
  }
  std::vector<int64_t> cells = {0};
  for (int a = 0; a < d; ++a) {
    std::vector<int64_t> next;
    for (int64_t c : cells) {
      for (int64_t k = 0; k < g.window[a]; ++k) {
        const int64_t i = out_index[a] * g.stride[a] - g.padding[a] + k;
        if (i >= 0 && i < g.input[2 + a]) next.push_back(c * g.input[2 + a] + i);
      }
    }
    cells = next;
  }
  return cells;
}

int64_t spatial(const Shape& s) {
  int64_t n = 1;
  for (size_t i = 2; i < s.size(); ++i) n *= s[i];
  return n;
}

// Reference: the cell a max window's value comes from (-1: none), per semantics.md.
int64_t reference_source(const std::vector<double>& x, const std::vector<int64_t>& cells, int nan_opt) {
  int64_t best = -1;
  for (int64_t c : cells) {
    if (std::isnan(x[c])) {
      if (nan_opt == 1) return c;
      continue;
    }
    if (best < 0 || x[c] > x[best]) best = c;
  }
  return best;
}

// x: small integers (ties), one cell in `rarity` NaN and one -inf; dy: k + 0.5.
Config config_with_values(std::mt19937& rng, const Shape& x_shape, const PoolOptions& o, int rarity) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Config c{pool_geometry("pool", x_shape, o), {}, {}};
  const int64_t n = x_shape[0] * x_shape[1] * spatial(x_shape);
  for (int64_t i = 0; i < n; ++i) {
    const int kind = pick(0, rarity - 1);
    c.x.push_back(kind == 0 ? kNan : kind == 1 ? -INFINITY : static_cast<double>(pick(-3, 3)));  // ties
  }
  for (int64_t i = 0; i < c.g.output[0] * c.g.output[1] * spatial(c.g.output); ++i) c.dy.push_back(pick(-5, 5) + 0.5);
  return c;
}

Config random_config(std::mt19937& rng, int mode) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int d = pick(1, 3);
  Shape x_shape = {pick(1, 2), pick(0, 4) == 0 ? pick(20, 40) : pick(1, 3)};  // many planes: stacked groups
  PoolOptions o;
  std::vector<int64_t> window, padding, stride;
  for (int a = 0; a < d; ++a) {
    window.push_back(pick(1, 3));
    padding.push_back(pick(0, static_cast<int>(window.back()) - 1));
    stride.push_back(pick(0, 2) == 0 ? window.back() : pick(1, 3));  // tiling windows often
    x_shape.push_back(pick(static_cast<int>(window.back()), 9));
    if (pick(0, 9) == 0) stride.back() = pick(4, 10);  // gaps between windows
  }
  if (pick(0, 3) == 0) {  // the usual 2x2 pooling, the fast loops' case
    std::fill(window.begin(), window.end(), 2);
    std::fill(stride.begin(), stride.end(), 2);
    std::fill(padding.begin(), padding.end(), 0);
    for (int a = 0; a < d; ++a) x_shape[2 + a] = std::max<int64_t>(x_shape[2 + a], 2);
  }
  o.window = AxisArg::each(window);
  o.padding = AxisArg::each(padding);
  o.stride = AxisArg::each(stride);
  o.mode = mode;
  o.nan_opt = pick(0, 1);
  return config_with_values(rng, x_shape, o, 20);
}

// The usual 2x2 pooling on rows of 1 to 20 windows (odd widths and heights too): the fused
// backward's vector steps (2 to 8 windows, the last one overlapping), its 16-byte step and its
// scalar rows. NaN rarer than above, so that most rows run without redone windows.
Config long_rows_2x2_config(std::mt19937& rng, int mode) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  PoolOptions o;
  o.window = AxisArg::each({2, 2});
  o.stride = AxisArg::each({2, 2});
  o.padding = AxisArg::each({0, 0});
  o.mode = mode;
  o.nan_opt = pick(0, 1);
  return config_with_values(rng, {pick(1, 2), pick(1, 3), pick(2, 7), pick(2, 41)}, o, 60);
}

bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// Values are small integers, +-inf and NaN, shares k + 0.5: exact in float too, so float and
// double kernels must both equal the double reference exactly.
template <typename T>
void check_max_pooling(unsigned seed, int trials, Config (*make_config)(std::mt19937&, int) = random_config) {
  std::mt19937 rng(seed);
  for (int trial = 0; trial < trials; ++trial) {
    const int mode = trial % 2 == 0 ? 0 : 3;
    Config c = make_config(rng, mode);
    const int64_t planes = c.g.input[0] * c.g.input[1], in = spatial(c.g.input), out = spatial(c.g.output);
    const std::vector<T> x(c.x.begin(), c.x.end()), dy(c.dy.begin(), c.dy.end());
    std::vector<T> y(planes * out), dx(planes * in, T(9999));  // every cell must be written
    cpu::pool_forward<T>(c.g, planes, mode, x.data(), y.data(), 2, static_cast<T>(-1e30));
    cpu::max_pool_backward<T>(c.g, planes, x.data(), dy.data(), dx.data(), 2);
    std::vector<double> expect_dx(planes * in, 0.0);
    for (int64_t p = 0; p < planes; ++p) {
      std::vector<double> plane(c.x.begin() + p * in, c.x.begin() + (p + 1) * in);
      for (int64_t o = 0; o < out; ++o) {
        const int64_t from = reference_source(plane, window_cells(c.g, o), c.g.nan_opt);
        const double expect = (from < 0 ? static_cast<double>(static_cast<T>(-1e30)) : plane[from]) * 2.0;
        ASSERT_TRUE(same(y[p * out + o], expect)) << "trial " << trial << " plane " << p << " window " << o;
        if (from >= 0) expect_dx[p * in + from] += c.dy[p * out + o] * 2.0;
      }
    }
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_EQ(dx[i], expect_dx[i]) << "trial " << trial << " cell " << i;
  }
}

}  // namespace

TEST(CpuPool, MaxForwardAndBackwardMatchThePerWindowReference) { check_max_pooling<double>(7, 400); }

TEST(CpuPool, FloatMaxForwardAndBackwardMatchThePerWindowReference) { check_max_pooling<float>(9, 400); }

TEST(CpuPool, Usual2x2OnRowsOfOneToTwentyWindowsMatchesThePerWindowReference) {
  check_max_pooling<double>(11, 300, long_rows_2x2_config);
  check_max_pooling<float>(13, 300, long_rows_2x2_config);
}

TEST(CpuPool, AverageForwardAndBackwardMatchThePerWindowReference) {
  std::mt19937 rng(8);
  for (int trial = 0; trial < 400; ++trial) {
    const int mode = trial % 2 == 0 ? 1 : 2;
    Config c = random_config(rng, mode);
    for (double& v : c.x) v = std::isfinite(v) ? v : 1.25;
    const int64_t planes = c.g.input[0] * c.g.input[1], in = spatial(c.g.input), out = spatial(c.g.output);
    std::vector<double> y(planes * out), dx(planes * in);
    cpu::pool_forward<double>(c.g, planes, mode, c.x.data(), y.data(), 3.0, kAllNan);
    cpu::average_pool_backward<double>(c.g, planes, mode, c.dy.data(), dx.data(), 3.0);
    std::vector<double> expect_dx(planes * in, 0.0);
    int64_t full = 1;
    for (int64_t w : c.g.window) full *= w;
    for (int64_t p = 0; p < planes; ++p) {
      for (int64_t o = 0; o < out; ++o) {
        const auto cells = window_cells(c.g, o);
        const double divisor = mode == 1 ? full : static_cast<double>(cells.size());
        double sum = 0;
        for (int64_t cell : cells) sum += c.x[p * in + cell];
        ASSERT_NEAR(y[p * out + o], sum / divisor * 3.0, 1e-12) << "trial " << trial;
        for (int64_t cell : cells) expect_dx[p * in + cell] += c.dy[p * out + o] * 3.0 / divisor;
      }
    }
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], expect_dx[i], 1e-12) << "trial " << trial;
  }
}

TEST(CpuPool, InfiniteGradientsReachOnlyTheirCell) {
  PoolOptions o;  // 2x2 windows: the fast loops, where routing masks shares instead of multiplying
  PoolGeometry g = pool_geometry("poolx", {1, 1, 2, 4}, o);
  const std::vector<double> x = {1, 5, 2, 2, 3, 4, 2, 2};
  const std::vector<double> dy = {INFINITY, -INFINITY};
  std::vector<double> dx(8);
  cpu::max_pool_backward<double>(g, 1, x.data(), dy.data(), dx.data(), 1.0);
  EXPECT_EQ(dx, (std::vector<double>{0, INFINITY, -INFINITY, 0, 0, 0, 0, 0}));
}
