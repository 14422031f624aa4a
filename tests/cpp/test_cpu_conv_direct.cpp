// The direct convolution against naive loops over its definition, in every version this CPU
// runs (baseline, AVX2, AVX-512VL): random 2-D problems whose widths cover every tile shape (1 to
// 41 columns: scalar, 16- and 32-byte vectors, tiles moved back at a row's end), 1 to 9 outputs
// per group (tiles of 4, 2 and 1), 1 to 7 rows (pairs of rows, one left over; groups of three
// shared rows and the rows left over), negative and positive padding, dilation, groups and output
// sizes the taps do not all reach; large enough problems to take several threads; and the checks
// that refuse malformed sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu_conv_columns.hpp"
#include "cpu_conv_direct.hpp"
#include "expect_errors.hpp"

using namespace knetcnn;
using cpu::DirectConv;

namespace {

// y by the definition, in long double: every tap of every channel, zero outside x.
template <typename T>
std::vector<long double> naive(const DirectConv& d, const std::vector<T>& x, const std::vector<T>& w) {
  const int64_t cg = d.channels / d.groups, og = d.outputs / d.groups;
  std::vector<long double> y(d.items * d.outputs * d.out_h * d.out_w, 0.0L);
  for (int64_t n = 0; n < d.items; ++n)
    for (int64_t o = 0; o < d.outputs; ++o)
      for (int64_t r = 0; r < d.out_h; ++r)
        for (int64_t j = 0; j < d.out_w; ++j) {
          long double sum = 0;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t a = 0; a < d.kh; ++a)
              for (int64_t b = 0; b < d.kw; ++b) {
                const int64_t row = r - d.pad_h + a * d.dil_h, col = j - d.pad_w + b * d.dil_w;
                if (row < 0 || row >= d.height || col < 0 || col >= d.width) continue;
                const int64_t channel = (o / og) * cg + c;
                sum += static_cast<long double>(w[((o * cg + c) * d.kh + a) * d.kw + b]) *
                       x[((n * d.channels + channel) * d.height + row) * d.width + col];
              }
          y[((n * d.outputs + o) * d.out_h + r) * d.out_w + j] = sum;
        }
  return y;
}

template <typename T>
void expect_matches_naive(const DirectConv& d, std::mt19937& rng, const char* what) {
  std::normal_distribution<double> normal;
  std::vector<T> x(d.items * d.channels * d.height * d.width), w(d.outputs * (d.channels / d.groups) * d.kh * d.kw);
  for (T& v : x) v = static_cast<T>(normal(rng));
  for (T& v : w) v = static_cast<T>(normal(rng));
  // y starts as NaN: every output must be written.
  std::vector<T> y(d.items * d.outputs * d.out_h * d.out_w, std::numeric_limits<T>::quiet_NaN());
  cpu::check_direct_conv("test", d);
  cpu::direct_conv2d<T>(d, x.data(), w.data(), y.data());
  const std::vector<long double> expect = naive(d, x, w);
  const int64_t terms = (d.channels / d.groups) * d.kh * d.kw;
  const double tolerance = (sizeof(T) == 4 ? 1e-5 : 1e-13) * std::sqrt(double(terms) + 1) * 8;
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_NEAR(static_cast<double>(y[i]), static_cast<double>(expect[i]), tolerance)
        << what << " at " << i << ": items " << d.items << " channels " << d.channels << " x " << d.height << "x"
        << d.width << " outputs " << d.outputs << " groups " << d.groups << " kernel " << d.kh << "x" << d.kw
        << " pad " << d.pad_h << "," << d.pad_w << " dil " << d.dil_h << "," << d.dil_w << " out " << d.out_h
        << "x" << d.out_w;
  }
}

// Runs body() once under each version of the kernel this CPU has, widest last, and restores the
// default (the widest) afterwards.
template <typename Body>
void for_each_isa(Body body) {
  const cpu::DirectIsa widest = cpu::widest_direct_isa();
  for (int isa = 0; isa <= static_cast<int>(widest); ++isa) {
    cpu::cap_direct_isa(static_cast<cpu::DirectIsa>(isa));
    SCOPED_TRACE("instruction set " + std::to_string(isa));
    body();
  }
  cpu::cap_direct_isa(cpu::DirectIsa::Avx512);
}

DirectConv random_problem(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  DirectConv d;
  d.groups = pick(1, 2);
  d.items = pick(1, 2);
  d.channels = d.groups * pick(1, 3);
  d.outputs = d.groups * pick(1, 9);
  d.kh = pick(1, 4), d.kw = pick(1, 4);
  d.dil_h = pick(1, 2), d.dil_w = pick(1, 3);
  d.pad_h = pick(-2, 3), d.pad_w = pick(-2, 3);
  d.height = pick(1, 7), d.width = pick(1, 41);
  d.out_h = pick(1, 7), d.out_w = pick(1, 41);
  return d;
}

}  // namespace

TEST(CpuConvDirect, RandomProblemsMatchTheDefinitionInDouble) {
  for_each_isa([] {
    std::mt19937 rng(2024);
    for (int i = 0; i < 400; ++i) expect_matches_naive<double>(random_problem(rng), rng, "double");
  });
}

TEST(CpuConvDirect, RandomProblemsMatchTheDefinitionInFloat) {
  for_each_isa([] {
    std::mt19937 rng(2025);
    for (int i = 0; i < 400; ++i) expect_matches_naive<float>(random_problem(rng), rng, "float");
  });
}

TEST(CpuConvDirect, OneOutputTilesThatShareRows) {
  // One output per group at row dilation 1 (AVX-512VL's shared-rows tiles): 3 to 11 rows (whole
  // groups of three and one or two rows left over), kernels of 2 to 6 rows, padding that leaves
  // the first and last groups with few input rows inside x or none (out_h beyond what the taps
  // reach), and 5 outputs (a tile of 4 and one of 1). 16 items, so that each task holds all of
  // an item's rows (with fewer items, tasks split items into blocks of rows, down to one).
  for_each_isa([] {
    std::mt19937 rng(31);
    for (int64_t out_h = 3; out_h <= 11; ++out_h)
      for (int64_t kh = 2; kh <= 6; ++kh)
        for (int64_t pad : {int64_t(-1), int64_t(0), kh - 1, kh + 2}) {
          DirectConv d;
          d.items = 16, d.channels = 2, d.height = 6, d.width = 30;
          d.outputs = (kh % 2) ? 5 : 2, d.groups = (kh % 2) ? 1 : 2;
          d.kh = kh, d.kw = 3, d.pad_h = pad, d.pad_w = 1, d.out_h = out_h, d.out_w = 28;
          expect_matches_naive<double>(d, rng, "one output, double");
          expect_matches_naive<float>(d, rng, "one output, float");
        }
  });
}

// One output per group with many channels x row taps (cpu_conv_columns: input columns in
// registers, scattered into the output rows), under AVX-512VL; other CPUs run the output tiles,
// and the results must be the same. Rows of one tile and of two (the second moved back, its
// lanes the first covered left out), padding beyond the kernel and negative, dilation, outputs
// beyond what the taps reach (zeros), two groups, and one item (tasks of a few rows each).
TEST(CpuConvDirect, OneOutputPerGroupScatteredByColumns) {
  struct Case {
    int64_t items, channels, height, width, groups, kh, kw, pad_h, pad_w, dil_h, dil_w, out_h, out_w;
    bool is_float;
  };
  const Case cases[] = {
      {3, 20, 24, 24, 1, 5, 5, 4, 4, 1, 1, 28, 28, false},    // LeNet's conv4x
      {2, 16, 9, 60, 1, 3, 3, 1, 1, 1, 1, 9, 60, false},       // two tiles of 32 columns
      {2, 24, 8, 32, 2, 4, 3, 5, -1, 1, 2, 14, 35, false},     // two groups, out_h beyond the taps
      {1, 20, 12, 24, 1, 5, 5, 2, 6, 2, 1, 10, 33, false},     // one item, row dilation
      {2, 16, 7, 48, 1, 3, 5, 1, 2, 1, 1, 7, 48, true},        // float: a tile of 48 columns
      {2, 16, 7, 90, 1, 3, 5, 1, 2, 1, 2, 7, 86, true},        // float, two tiles, dilation
  };
  std::mt19937 rng(41);
  for (const Case& c : cases) {
    DirectConv d;
    d.items = c.items, d.channels = c.channels, d.height = c.height, d.width = c.width;
    d.outputs = c.groups, d.groups = c.groups, d.kh = c.kh, d.kw = c.kw;
    d.pad_h = c.pad_h, d.pad_w = c.pad_w, d.dil_h = c.dil_h, d.dil_w = c.dil_w, d.out_h = c.out_h, d.out_w = c.out_w;
    const bool fits = c.is_float ? cpu::column_scatter_fits<float>(d) : cpu::column_scatter_fits<double>(d);
    EXPECT_EQ(fits, cpu::direct_isa() == cpu::DirectIsa::Avx512) << "width " << c.width;
    for_each_isa([&] {
      if (c.is_float) {
        expect_matches_naive<float>(d, rng, "scattered by columns, float");
      } else {
        expect_matches_naive<double>(d, rng, "scattered by columns, double");
      }
    });
  }
}

TEST(CpuConvDirect, TheVersionCapIsObeyed) {
  const cpu::DirectIsa widest = cpu::widest_direct_isa();
  EXPECT_EQ(cpu::direct_isa(), widest);
  cpu::cap_direct_isa(cpu::DirectIsa::Baseline);
  EXPECT_EQ(cpu::direct_isa(), cpu::DirectIsa::Baseline);
  cpu::cap_direct_isa(cpu::DirectIsa::Avx512);
  EXPECT_EQ(cpu::direct_isa(), widest);
}

TEST(CpuConvDirect, EveryWidthAndOutputCountOfOneRow) {
  // One row (and three, for shared-rows tiles), every width to 41 and 1 to 9 outputs: each tile
  // width and the moved-back last tile.
  for_each_isa([] {
    std::mt19937 rng(7);
    for (int64_t rows : {1, 3})
      for (int64_t width = 1; width <= 41; ++width)
        for (int64_t outputs = 1; outputs <= 9; ++outputs) {
          DirectConv d;
          d.items = 1, d.channels = 2, d.height = rows + 2, d.width = width + 2;
          d.outputs = outputs, d.kh = 3, d.kw = 3, d.out_h = rows, d.out_w = width;
          expect_matches_naive<double>(d, rng, "rows of every width, double");
          expect_matches_naive<float>(d, rng, "rows of every width, float");
        }
  });
}

TEST(CpuConvDirect, LeNetSizedProblemsOnSeveralThreads) {
  // LeNet's first layer (y written by several threads' tasks), and its conv4x as this kernel runs
  // it: 20 channels of 24 x 24 with padding 4 into one 28 x 28 channel.
  std::mt19937 rng(11);
  DirectConv forward;
  forward.items = 16, forward.channels = 1, forward.height = 28, forward.width = 28;
  forward.outputs = 20, forward.kh = forward.kw = 5, forward.out_h = forward.out_w = 24;
  DirectConv backward;
  backward.items = 16, backward.channels = 20, backward.height = 24, backward.width = 24;
  backward.outputs = 1, backward.kh = backward.kw = 5, backward.pad_h = backward.pad_w = 4;
  backward.out_h = backward.out_w = 28;
  for_each_isa([&] {
    expect_matches_naive<double>(forward, rng, "LeNet conv4");
    expect_matches_naive<float>(backward, rng, "LeNet conv4x");
    expect_matches_naive<double>(backward, rng, "LeNet conv4x");
  });
}

TEST(CpuConvDirect, EmptyProblemsWriteNothingOrZeros) {
  DirectConv d;
  d.items = 2, d.channels = 0, d.height = 3, d.width = 3, d.outputs = 2, d.out_h = 2, d.out_w = 2;
  std::vector<double> y(2 * 2 * 2 * 2, 7.0);
  cpu::check_direct_conv("test", d);
  cpu::direct_conv2d<double>(d, nullptr, nullptr, y.data());
  for (double v : y) EXPECT_EQ(v, 0.0);  // a sum over no channels
  d.channels = 1, d.items = 0;
  cpu::check_direct_conv("test", d);
  cpu::direct_conv2d<double>(d, nullptr, nullptr, nullptr);  // nothing to read or write
}

TEST(CpuConvDirect, MalformedSizesAreRefused) {
  auto check = [](DirectConv d) { cpu::check_direct_conv("conv_direct", d); };
  DirectConv good;
  good.items = 1, good.channels = 4, good.height = 5, good.width = 5, good.outputs = 6, good.groups = 2;
  good.kh = good.kw = 3, good.out_h = good.out_w = 3;
  check(good);
  DirectConv d = good;
  d.groups = 3;
  expect_value_error([&] { check(d); }, {"conv_direct", "divisible by groups"});
  d = good, d.kh = 0;
  expect_value_error([&] { check(d); }, {"conv_direct", ">= 1"});
  d = good, d.dil_w = 0;
  expect_value_error([&] { check(d); }, {"conv_direct", ">= 1"});
  d = good, d.width = -1;
  expect_value_error([&] { check(d); }, {"conv_direct", ">= 0"});
  d = good, d.items = int64_t(1) << 40, d.height = d.width = int64_t(1) << 20;
  expect_value_error([&] { check(d); }, {"conv_direct", "overflow"});
  d = good, d.dil_h = int64_t(1) << 62, d.kh = 3;
  expect_value_error([&] { check(d); }, {"conv_direct", "overflow"});
  d = good, d.pad_w = std::numeric_limits<int64_t>::min();
  expect_value_error([&] { check(d); }, {"conv_direct", "overflow"});
}
