// The Winograd F(2x2, 3x3) transforms composed into whole convolutions, against naive loops over
// the definitions: the forward convolution (input transform, pointwise sums over channels written
// out here, output transform) with different padding on each side and odd output sizes, the
// filter gradient (input and gradient transforms), on one thread and on several; that the output
// transform writes nothing past y; and the checks that refuse malformed tiles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cpu_winograd.hpp"
#include "expect_errors.hpp"

using namespace knetcnn;
using cpu::kWinogradPoints;
using cpu::WinogradTiles;

namespace {

constexpr double kG[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

std::vector<double> random_values(int64_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(n);
  for (auto& e : v) e = dist(gen);
  return v;
}

// x (N, C, H, W) with the given padding, cross-correlated with w (O, C, 3, 3) into (N, O, out_h, out_w).
std::vector<double> naive_conv(const std::vector<double>& x, const std::vector<double>& w, int64_t n_items,
                               int64_t channels, int64_t h, int64_t wd, int64_t outputs, int64_t top, int64_t left,
                               int64_t out_h, int64_t out_w) {
  std::vector<double> y(n_items * outputs * out_h * out_w, 0.0);
  for (int64_t n = 0; n < n_items; ++n)
    for (int64_t o = 0; o < outputs; ++o)
      for (int64_t r = 0; r < out_h; ++r)
        for (int64_t j = 0; j < out_w; ++j) {
          double sum = 0;
          for (int64_t c = 0; c < channels; ++c)
            for (int a = 0; a < 3; ++a)
              for (int b = 0; b < 3; ++b) {
                const int64_t row = r - top + a, col = j - left + b;
                if (row < 0 || row >= h || col < 0 || col >= wd) continue;
                sum += w[((o * channels + c) * 3 + a) * 3 + b] * x[((n * channels + c) * h + row) * wd + col];
              }
          y[((n * outputs + o) * out_h + r) * out_w + j] = sum;
        }
  return y;
}

// G w G^T of filter (o, c), point p.
double transformed_filter(const std::vector<double>& w, int64_t channels, int64_t o, int64_t c, int p) {
  double sum = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) sum += kG[p / 4][i] * w[((o * channels + c) * 3 + i) * 3 + j] * kG[p % 4][j];
  return sum;
}

class WinogradThreads : public ::testing::TestWithParam<bool> {};

TEST_P(WinogradThreads, InputAndOutputTransformsComposeIntoTheConvolution) {
  const bool parallel = GetParam();
  const int64_t n_items = 2, channels = 3, h = 5, wd = 7, outputs = 2, top = 1, left = 2;
  const int64_t out_h = h + 2 * top - 2, out_w = wd + 2 * left - 2;  // 5 x 9: odd on both axes
  const auto x = random_values(n_items * channels * h * wd, 1);
  const auto w = random_values(outputs * channels * 9, 2);
  WinogradTiles in{n_items, channels, h, wd, (out_h + 1) / 2, (out_w + 1) / 2, top, left};
  const int64_t tiles = cpu::winograd_tile_count("test", in, false);
  std::vector<double> v(kWinogradPoints * channels * tiles);
  cpu::winograd_input(x.data(), in, v.data(), parallel);
  std::vector<double> m(kWinogradPoints * outputs * tiles, 0.0);
  for (int p = 0; p < kWinogradPoints; ++p)
    for (int64_t o = 0; o < outputs; ++o)
      for (int64_t c = 0; c < channels; ++c) {
        const double u = transformed_filter(w, channels, o, c, p);
        for (int64_t t = 0; t < tiles; ++t)
          m[(p * outputs + o) * tiles + t] += u * v[(p * channels + c) * tiles + t];
      }
  WinogradTiles out{n_items, outputs, out_h, out_w, in.tiles_h, in.tiles_w, 0, 0};
  ASSERT_EQ(cpu::winograd_tile_count("test", out, true), tiles);
  std::vector<double> y(n_items * outputs * out_h * out_w + 1, -7.0);  // one sentinel past y
  cpu::winograd_output(m.data(), out, y.data(), parallel);
  const auto expect = naive_conv(x, w, n_items, channels, h, wd, outputs, top, left, out_h, out_w);
  for (size_t i = 0; i < expect.size(); ++i) EXPECT_NEAR(y[i], expect[i], 1e-12) << "at " << i;
  EXPECT_EQ(y.back(), -7.0) << "the output transform wrote past y";
}

TEST_P(WinogradThreads, InputAndGradientTransformsComposeIntoTheFilterGradient) {
  const bool parallel = GetParam();
  const int64_t n_items = 3, channels = 2, h = 6, wd = 5, outputs = 3, pad = 1;
  const int64_t out_h = h + 2 * pad - 2, out_w = wd + 2 * pad - 2;  // 6 x 5
  const auto x = random_values(n_items * channels * h * wd, 3);
  const auto dy = random_values(n_items * outputs * out_h * out_w, 4);
  WinogradTiles over_dy{n_items, outputs, out_h, out_w, (out_h + 1) / 2, (out_w + 1) / 2, 0, 0};
  const int64_t tiles = cpu::winograd_tile_count("test", over_dy, true);
  WinogradTiles over_x{n_items, channels, h, wd, over_dy.tiles_h, over_dy.tiles_w, pad, pad};
  std::vector<double> v(kWinogradPoints * channels * tiles), g(kWinogradPoints * outputs * tiles);
  cpu::winograd_input(x.data(), over_x, v.data(), parallel);
  cpu::winograd_gradient(dy.data(), over_dy, g.data(), parallel);
  for (int64_t o = 0; o < outputs; ++o)
    for (int64_t c = 0; c < channels; ++c) {
      double m[16] = {};
      for (int p = 0; p < kWinogradPoints; ++p)
        for (int64_t t = 0; t < tiles; ++t)
          m[p] += g[(p * outputs + o) * tiles + t] * v[(p * channels + c) * tiles + t];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) {
          double got = 0, expect = 0;  // G^T m G, and the definition: sum of dy * x at offset (a, b)
          for (int p = 0; p < 4; ++p)
            for (int q = 0; q < 4; ++q) got += kG[p][a] * m[p * 4 + q] * kG[q][b];
          for (int64_t n = 0; n < n_items; ++n)
            for (int64_t r = 0; r < out_h; ++r)
              for (int64_t j = 0; j < out_w; ++j) {
                const int64_t row = r - pad + a, col = j - pad + b;
                if (row < 0 || row >= h || col < 0 || col >= wd) continue;
                expect += dy[((n * outputs + o) * out_h + r) * out_w + j] *
                          x[((n * channels + c) * h + row) * wd + col];
              }
          EXPECT_NEAR(got, expect, 1e-12) << "dw[" << o << ", " << c << ", " << a << ", " << b << "]";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Cpu, WinogradThreads, ::testing::Values(false, true));

TEST(CpuWinograd, TransformsOfFloatsMatchDoubles) {
  const WinogradTiles t{1, 2, 3, 4, 2, 2, 0, 0};
  const int64_t tiles = cpu::winograd_tile_count("test", t, true);
  const auto xd = random_values(2 * 3 * 4, 5);
  const std::vector<float> xf(xd.begin(), xd.end());
  std::vector<double> vd(kWinogradPoints * 2 * tiles), gd(vd.size());
  std::vector<float> vf(vd.size()), gf(vd.size());
  cpu::winograd_input(xd.data(), t, vd.data(), false);
  cpu::winograd_input(xf.data(), t, vf.data(), false);
  cpu::winograd_gradient(xd.data(), t, gd.data(), false);
  cpu::winograd_gradient(xf.data(), t, gf.data(), false);
  for (size_t i = 0; i < vd.size(); ++i) {
    EXPECT_NEAR(vf[i], vd[i], 1e-6);
    EXPECT_NEAR(gf[i], gd[i], 1e-6);
  }
}

TEST(CpuWinograd, RefusesMalformedTiles) {
  WinogradTiles t{1, 2, 4, 4, 2, 2, 0, 0};
  EXPECT_EQ(cpu::winograd_tile_count("f", t, true), 4);
  WinogradTiles bad = t;
  bad.top = 3;
  expect_value_error([&] { cpu::winograd_tile_count("winograd_input", bad, false); },
                     {"winograd_input", "top and left must be in [0, 2]"});
  bad = t;
  bad.left = -1;
  expect_value_error([&] { cpu::winograd_tile_count("f", bad, false); }, {"top and left"});
  bad = t;
  bad.tiles_h = -1;
  expect_value_error([&] { cpu::winograd_tile_count("f", bad, false); }, {"sizes must be >= 0"});
  bad = t;
  bad.tiles_w = 3;  // more tiles than cover a 4-wide array: the output transform would write past it
  EXPECT_EQ(cpu::winograd_tile_count("f", bad, false), 6);
  expect_value_error([&] { cpu::winograd_tile_count("winograd_output", bad, true); },
                     {"winograd_output", "must cover the array exactly: 2 x 2 tiles from (0, 0), got 2 x 3"});
  bad = t;
  bad.top = 1;
  expect_value_error([&] { cpu::winograd_tile_count("f", bad, true); }, {"from (1, 0)"});
  bad = t;
  bad.items = std::numeric_limits<int64_t>::max() / 2;
  expect_value_error([&] { cpu::winograd_tile_count("f", bad, false); }, {"overflow"});
}

}  // namespace
