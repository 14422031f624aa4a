// The CPU convolution's im2col / col2im against naive loops over the same definition, on small
// 1-, 2- and 3-D windows (lifted to three axes) with padding, stride, dilation, partial output
// boxes, volumes that hold only some input rows, and strided volumes; their adjointness; and the
// checks that refuse malformed windows and self-overlapping scatter targets.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "cpu_conv.hpp"
#include "errors.hpp"
#include "expect_errors.hpp"

using namespace knetcnn;
using cpu::ConvWindow;
using cpu::Volume;

namespace {

// A volume over `storage`: shape (items, channels, S0, S1, S2) with the given element strides.
struct Strided {
  std::array<int64_t, 5> shape, strides;
  int64_t span() const {  // elements from the first to one past the last
    int64_t last = 0;
    for (int a = 0; a < 5; ++a) last += (shape[a] - 1) * strides[a];
    return last + 1;
  }
};

// C-order strides; with spread > 1 the elements of a row lie `spread` apart and every row, plane,
// ... is followed by a gap of one row, plane, ... (a sliced NumPy view).
Strided strided(std::array<int64_t, 5> shape, int64_t spread = 1) {
  const int64_t gap = spread > 1 ? 1 : 0;
  Strided s{shape, {}};
  int64_t stride = spread;
  for (int a = 4; a >= 0; --a) {
    s.strides[a] = stride;
    stride *= shape[a] + (a < 4 ? gap : 0);
  }
  return s;
}

// Every (c, k, n, j) column entry in the kernels' order, with the volume index it reads, or -1.
template <typename F>
void for_each_tap(const Strided& v, const ConvWindow& w, F f) {
  std::array<int64_t, 3> box{};
  for (int a = 0; a < 3; ++a) box[a] = w.out_end[a] - w.out_begin[a];
  int64_t column = 0;
  for (int64_t c = 0; c < v.shape[1]; ++c)
    for (int64_t k0 = 0; k0 < w.kernel[0]; ++k0)
      for (int64_t k1 = 0; k1 < w.kernel[1]; ++k1)
        for (int64_t k2 = 0; k2 < w.kernel[2]; ++k2)
          for (int64_t n = 0; n < v.shape[0]; ++n)
            for (int64_t j0 = 0; j0 < box[0]; ++j0)
              for (int64_t j1 = 0; j1 < box[1]; ++j1)
                for (int64_t j2 = 0; j2 < box[2]; ++j2, ++column) {
                  const std::array<int64_t, 3> k{k0, k1, k2}, j{j0, j1, j2};
                  int64_t index = n * v.strides[0] + c * v.strides[1];
                  bool inside = true;
                  for (int a = 0; a < 3; ++a) {
                    int64_t i = (w.out_begin[a] + j[a]) * w.stride[a] + k[a] * w.dilation[a] - w.padding[a] - w.origin[a];
                    inside = inside && i >= 0 && i < v.shape[2 + a];
                    index += i * v.strides[2 + a];
                  }
                  f(column, inside ? index : -1);
                }
}

int64_t columns(const Strided& v, const ConvWindow& w) {
  return cpu::column_elements("test", w, v.shape[0], v.shape[1]);
}

template <typename T>
std::vector<T> random_values(size_t count, std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-8, 8);  // small integers: sums are exact in float too
  std::vector<T> out(count);
  for (auto& value : out) value = T(small(rng));
  return out;
}

// One kernel call against the loops: im2col, then col2im adding into a dx that holds values
// already (cells between a strided volume's elements must stay untouched).
template <typename T>
void check_once(const Strided& v, const ConvWindow& w, std::mt19937& rng, bool parallel) {
  const std::vector<T> x = random_values<T>(v.span(), rng);
  const int64_t count = columns(v, w);

  std::vector<T> col(count, T(-99)), expect(count);
  for_each_tap(v, w, [&](int64_t column, int64_t index) { expect[column] = index < 0 ? T(0) : x[index]; });
  cpu::im2col<T>(Volume<const T>{x.data(), v.shape, v.strides}, w, col.data(), parallel);
  ASSERT_EQ(col, expect);

  const std::vector<T> c = random_values<T>(count, rng);
  std::vector<T> dx = random_values<T>(v.span(), rng), dx_expect = dx;
  for_each_tap(v, w, [&](int64_t column, int64_t index) {
    if (index >= 0) dx_expect[index] += c[column];
  });
  cpu::col2im<T>(c.data(), w, Volume<T>{dx.data(), v.shape, v.strides}, parallel);
  ASSERT_EQ(dx, dx_expect);
}

// On this thread alone, and split across parallel_for's threads.
template <typename T>
void check_case(const Strided& v, const ConvWindow& w, std::mt19937& rng, const std::string& what) {
  for (bool parallel : {false, true}) {
    SCOPED_TRACE(what + (parallel ? " (parallel)" : " (serial)"));
    check_once<T>(v, w, rng, parallel);
  }
}

ConvWindow window(std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride, std::array<int64_t, 3> dilation,
                  std::array<int64_t, 3> padding, std::array<int64_t, 3> out_end,
                  std::array<int64_t, 3> out_begin = {0, 0, 0}, std::array<int64_t, 3> origin = {0, 0, 0}) {
  return ConvWindow{kernel, stride, dilation, padding, origin, out_begin, out_end};
}

}  // namespace

TEST(CpuConv, OneDTwoDThreeDWithPaddingStrideDilation) {
  std::mt19937 rng(1);
  // 1-D: x of 9, kernel 3, padding 2, stride 2, dilation 2 -> 1 + (9 + 4 - 5) / 2 = 5 outputs.
  check_case<double>(strided({2, 3, 1, 1, 9}), window({1, 1, 3}, {1, 1, 2}, {1, 1, 2}, {0, 0, 2}, {1, 1, 5}), rng, "1-D");
  // 2-D: 7 x 6, kernel 3 x 2, padding (1, 0), stride (1, 2), dilation (2, 1).
  check_case<float>(strided({2, 2, 1, 7, 6}), window({1, 3, 2}, {1, 1, 2}, {1, 2, 1}, {0, 1, 0}, {1, 7, 3}), rng, "2-D");
  // 3-D: 4 x 5 x 6, kernel 2 x 3 x 2, padding 1, strides (2, 1, 3).
  check_case<double>(strided({1, 2, 4, 5, 6}), window({2, 3, 2}, {2, 1, 3}, {1, 1, 2}, {1, 1, 1}, {3, 5, 2}), rng, "3-D");
}

TEST(CpuConv, PaddingWiderThanTheKernelGivesAllZeroPlanes) {
  std::mt19937 rng(2);
  // Padding 3 with a 2-cell kernel: the first and last outputs read padding only.
  check_case<float>(strided({1, 1, 1, 4, 4}), window({1, 2, 2}, {1, 1, 1}, {1, 1, 1}, {0, 3, 3}, {1, 9, 9}), rng, "pad 3");
}

TEST(CpuConv, BlocksOfOutputRowsOverAVolumeOfSomeInputRows) {
  std::mt19937 rng(3);
  // Output rows [2, 5) of a 2-D conv (kernel 3, padding 1, stride 1) over input rows [1, 6) only,
  // as conv.py passes a converted copy of just the rows a block reads.
  check_case<double>(strided({1, 2, 1, 5, 8}), window({1, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 1, 1}, {1, 5, 8}, {0, 2, 0}, {0, 1, 0}),
                     rng, "row block");
  // The same along the first of three axes, with stride 2.
  check_case<float>(strided({2, 1, 3, 4, 5}), window({3, 2, 2}, {2, 1, 1}, {1, 1, 1}, {1, 0, 1}, {4, 3, 6}, {2, 0, 0}, {2, 0, 0}),
                    rng, "3-D row block");
}

TEST(CpuConv, StridedVolumes) {
  std::mt19937 rng(4);
  // Gaps between elements, rows and planes (a sliced NumPy view): both kernels step over them.
  check_case<double>(strided({2, 2, 1, 6, 7}, 2), window({1, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 1, 1}, {1, 6, 7}), rng, "gaps");
  check_case<float>(strided({1, 3, 2, 5, 5}, 3), window({2, 2, 3}, {1, 2, 2}, {1, 1, 1}, {0, 0, 1}, {1, 2, 3}), rng, "gaps 3-D");
}

TEST(CpuConv, RowsLongerThanTheFixedLengths) {
  std::mt19937 rng(5);
  // Rows of 40 and 21 cells take the run-time length path (copies and adds), with and without
  // padding cut from them and with stride.
  check_case<double>(strided({2, 2, 1, 3, 42}), window({1, 2, 3}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 2, 40}), rng, "40");
  check_case<float>(strided({1, 2, 1, 3, 42}), window({1, 2, 3}, {1, 1, 2}, {1, 1, 1}, {0, 0, 1}, {1, 2, 21}), rng, "21");
}

TEST(CpuConv, WideStridedKernelsOverLongRows) {
  std::mt19937 rng(8);
  // Strided taps over rows longer than the fixed lengths (the run-time strided copy and add), with
  // padding putting the first taps before the plane.
  check_case<double>(strided({2, 2, 1, 3, 70}), window({1, 2, 9}, {1, 1, 4}, {1, 1, 1}, {0, 1, 3}, {1, 4, 17}), rng, "k9 s4");
  check_case<float>(strided({1, 2, 1, 4, 80}), window({1, 3, 8}, {1, 2, 3}, {1, 1, 2}, {0, 1, 2}, {1, 2, 24}), rng,
                    "k8 s3 dilation 2");
  check_case<double>(strided({2, 1, 3, 3, 90}, 2), window({2, 2, 7}, {1, 1, 2}, {1, 1, 1}, {1, 0, 3}, {4, 2, 45}), rng,
                     "3-D, strided volume");
  // A block of output rows [1, 3) over a volume holding input rows [2, 6) only.
  check_case<float>(strided({1, 2, 1, 4, 100}), window({1, 3, 11}, {1, 2, 4}, {1, 1, 1}, {0, 1, 0}, {1, 3, 23}, {0, 1, 0}, {0, 2, 0}),
                    rng, "row block");
}

// Windows strided along the last axis whose cells land in many columns: im2col splits each
// plane's rows into phases first. The cases cover phases of unequal length (widths that the stride
// does not divide), taps before the plane (padding) and past it, dilation, a block of output rows
// over a volume of some input rows, three axes, gaps between elements, and float32 / float64.
TEST(CpuConv, StridedRowsSplitIntoPhases) {
  std::mt19937 rng(9);
  struct Case {
    Strided v;
    ConvWindow w;
    const char* what;
  };
  const Case cases[] = {
      {strided({2, 3, 1, 27, 43}), window({1, 11, 11}, {1, 4, 4}, {1, 1, 1}, {0, 0, 0}, {1, 5, 9}), "AlexNet-like, 43 = 4 * 10 + 3"},
      {strided({1, 2, 1, 9, 30}), window({1, 5, 5}, {1, 2, 2}, {1, 1, 1}, {0, 2, 2}, {1, 5, 15}), "5 x 5, stride 2, padding 2"},
      {strided({1, 2, 1, 7, 31}), window({1, 3, 7}, {1, 1, 3}, {1, 1, 2}, {0, 1, 4}, {1, 7, 9}), "dilation 2, stride 3"},
      {strided({2, 1, 1, 12, 40}), window({1, 7, 7}, {1, 2, 2}, {1, 1, 1}, {0, 3, 3}, {1, 6, 20}, {0, 2, 0}, {0, 1, 0}),
       "rows [2, 6) over input rows [1, 13)"},
      {strided({1, 2, 5, 6, 19}), window({3, 3, 6}, {2, 1, 2}, {1, 1, 1}, {1, 1, 2}, {3, 6, 9}), "3-D"},
      {strided({1, 2, 1, 8, 25}, 2), window({1, 5, 9}, {1, 2, 3}, {1, 1, 1}, {0, 2, 4}, {1, 4, 9}), "gaps between elements"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_TRUE(cpu::splits_into_phases<float>(Volume<const float>{nullptr, c.v.shape, c.v.strides}, c.w));
    check_case<float>(c.v, c.w, rng, c.what);
    check_case<double>(c.v, c.w, rng, c.what);
  }
  // 3 x 3 at stride 2 copies each cell about twice: splitting costs more than it saves.
  const Strided v = strided({1, 2, 1, 16, 16});
  const ConvWindow w = window({1, 3, 3}, {1, 2, 2}, {1, 1, 1}, {0, 1, 1}, {1, 8, 8});
  EXPECT_FALSE(cpu::splits_into_phases<float>(Volume<const float>{nullptr, v.shape, v.strides}, w));
  check_case<float>(v, w, rng, "3 x 3, stride 2");
}

TEST(CpuConv, ThreadedBlocksMatchTheLoops) {
  std::mt19937 rng(6);
  // Enough work for parallel_for to use every thread: channels and kernel taps split the gather,
  // channels and (with one channel) item ranges split the scatter.
  check_case<float>(strided({16, 3, 1, 24, 24}), window({1, 5, 5}, {1, 1, 1}, {1, 1, 1}, {0, 2, 2}, {1, 24, 24}), rng, "C=3");
  check_case<double>(strided({32, 1, 1, 28, 28}), window({1, 5, 5}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 24, 24}), rng, "C=1");
}

TEST(CpuConv, Col2imIsTheAdjointOfIm2col) {
  // <col2im(c), x> == <c, im2col(x)> for random c and x: a check independent of the loops above.
  std::mt19937 rng(7);
  const Strided v = strided({2, 3, 3, 5, 6});
  const ConvWindow w = window({2, 3, 2}, {1, 2, 1}, {2, 1, 2}, {1, 1, 2}, {3, 3, 6});
  const auto x = random_values<double>(v.span(), rng);
  const auto c = random_values<double>(columns(v, w), rng);
  std::vector<double> gathered(c.size()), scattered(x.size(), 0.0);
  cpu::im2col<double>(Volume<const double>{x.data(), v.shape, v.strides}, w, gathered.data(), false);
  cpu::col2im<double>(c.data(), w, Volume<double>{scattered.data(), v.shape, v.strides}, false);
  double left = 0, right = 0;
  for (size_t i = 0; i < x.size(); ++i) left += scattered[i] * x[i];
  for (size_t i = 0; i < c.size(); ++i) right += c[i] * gathered[i];
  EXPECT_EQ(left, right);
  EXPECT_NE(left, 0.0);
}

TEST(CpuConv, EmptyBoxesAndVolumesTouchNothing) {
  std::vector<float> x(10, 1.0f), col;
  const ConvWindow w = window({1, 1, 3}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 0});  // no outputs
  EXPECT_EQ(cpu::column_elements("im2col", w, 1, 1), 0);
  cpu::im2col<float>(Volume<const float>{x.data(), {1, 1, 1, 1, 10}, {10, 10, 10, 10, 1}}, w, col.data(), true);
  cpu::col2im<float>(col.data(), w, Volume<float>{x.data(), {1, 1, 1, 1, 10}, {10, 10, 10, 10, 1}}, true);
  EXPECT_EQ(x, std::vector<float>(10, 1.0f));
}

TEST(CpuConv, RefusesMalformedWindows) {
  auto elements = [](ConvWindow w) { return cpu::column_elements("im2col", w, 2, 3); };
  ConvWindow good = window({1, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 1, 1}, {1, 4, 4});
  EXPECT_EQ(elements(good), 3 * 9 * 2 * 16);
  ConvWindow w = good;
  w.stride[2] = 0;
  expect_value_error([&] { elements(w); }, {"im2col", "stride", ">= 1", "axis 2"});
  w = good;
  w.padding[1] = -1;
  expect_value_error([&] { elements(w); }, {"padding", ">= 0"});
  w = good;
  w.out_begin[1] = 5;
  expect_value_error([&] { elements(w); }, {"out_begin <= out_end"});
  w = good;
  w.out_end[2] = int64_t{1} << 62;
  w.stride[2] = 4;
  expect_value_error([&] { elements(w); }, {"overflow"});
  w = good;
  w.kernel = {1 << 20, 1 << 20, 1 << 20};
  w.out_end = {1 << 20, 1 << 20, 1 << 20};
  expect_value_error([&] { elements(w); }, {"overflow"});
}

TEST(CpuConv, RefusesSelfOverlappingScatterTargets) {
  cpu::check_no_self_overlap("col2im", "dx", {2, 3, 1, 4, 5}, {60, 20, 20, 5, 1});  // C-contiguous
  cpu::check_no_self_overlap("col2im", "dx", {2, 3, 1, 4, 5}, {-120, 40, 0, -10, 2});  // reversed, gaps
  cpu::check_no_self_overlap("col2im", "dx", {0, 3, 1, 4, 5}, {0, 0, 0, 0, 0});     // empty
  expect_value_error([] { cpu::check_no_self_overlap("col2im", "dx", {2, 3, 1, 4, 5}, {0, 20, 20, 5, 1}); },
                     {"col2im", "dx", "overlap"});  // broadcast items
  expect_value_error([] { cpu::check_no_self_overlap("col2im", "dx", {1, 1, 1, 4, 5}, {20, 20, 20, 3, 1}); },
                     {"overlap"});  // rows overlapping rows
}
