// Knet geometry in the core: output sizes, keyword normalisation and the rules of semantics.md §2.
#include <gtest/gtest.h>

#include "errors.hpp"
#include "expect_errors.hpp"
#include "geometry.hpp"

using namespace knetcnn;

namespace {

ConvOptions conv_opts(AxisArg padding, AxisArg stride, AxisArg dilation, int mode = 0, int group = 1) {
  ConvOptions o;
  o.padding = padding;
  o.stride = stride;
  o.dilation = dilation;
  o.mode = mode;
  o.group = group;
  return o;
}

}  // namespace

TEST(ConvGeometry, KnetManualOneD) {
  // Knet: conv4([1,2,3], [1..7]; padding=1, stride=3) has 3 outputs.
  auto g = conv4_geometry("conv4", {1, 1, 3}, {1, 1, 7}, conv_opts(AxisArg::all(1), AxisArg::all(3), AxisArg::all(1)));
  EXPECT_EQ(g.output, (Shape{1, 1, 3}));
  EXPECT_EQ(g.spatial_dims, 1);
  EXPECT_FALSE(g.transposed);
}

TEST(ConvGeometry, PerAxisValuesFollowSpatialAxes) {
  // H: 1 + (10 + 2*1 - 3) / 1 = 10; W: 1 + (20 + 2*0 - ((5-1)*2+1)) / 3 = 4
  auto g = conv4_geometry("conv4", {4, 3, 3, 5}, {2, 3, 10, 20},
                          conv_opts(AxisArg::each({1, 0}), AxisArg::each({1, 3}), AxisArg::each({1, 2})));
  EXPECT_EQ(g.output, (Shape{2, 4, 10, 4}));
  EXPECT_EQ(g.padding, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(g.dilation, (std::vector<int64_t>{1, 2}));
}

TEST(ConvGeometry, GroupsCheckChannels) {
  auto g = conv4_geometry("conv4", {6, 2, 3, 3}, {1, 4, 8, 8}, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(1), 0, 2));
  EXPECT_EQ(g.output, (Shape{1, 6, 6, 6}));
  expect_value_error([] { conv4_geometry("conv4", {6, 2, 3, 3}, {1, 4, 8, 8}, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(1), 0, 3)); },
                     {"conv4", "group=3", "divisible"});
  expect_value_error([] { conv4_geometry("conv4", {5, 2, 3, 3}, {1, 4, 8, 8}, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(1), 0, 2)); },
                     {"group=2", "w.shape[0]"});
  expect_value_error([] { conv4_geometry("conv4", {6, 3, 3, 3}, {1, 4, 8, 8}, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(1), 0, 2)); },
                     {"w.shape[1]", "x.shape[1] // group"});
}

TEST(ConvGeometry, RefusesBadKeywords) {
  const Shape w{1, 1, 3, 3}, x{1, 1, 8, 8};
  expect_value_error([&] { conv4_geometry("conv4x", w, x, conv_opts(AxisArg::each({1, -1}), AxisArg::all(1), AxisArg::all(1))); },
                     {"conv4x", "padding=(1, -1)", ">= 0"});
  expect_value_error([&] { conv4_geometry("conv4", w, x, conv_opts(AxisArg::all(0), AxisArg::all(0), AxisArg::all(1))); },
                     {"stride=0", ">= 1"});
  expect_value_error([&] { conv4_geometry("conv4", w, x, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(0))); },
                     {"dilation=0", ">= 1"});
  expect_value_error([&] { conv4_geometry("conv4", w, x, conv_opts(AxisArg::each({1, 1, 1}), AxisArg::all(1), AxisArg::all(1))); },
                     {"padding=(1, 1, 1)", "2 ints"});
  expect_value_error([&] { conv4_geometry("conv4", w, x, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(1), 2)); },
                     {"mode=2"});
  expect_value_error([&] { conv4_geometry("conv4", w, x, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(1), 0, 0)); },
                     {"group=0"});
  expect_value_error([&] { conv4_geometry("conv4", w, x, conv_opts(AxisArg::all(int64_t{1} << 40), AxisArg::all(1), AxisArg::all(1))); },
                     {"padding", "2147483647"});
}

TEST(ConvGeometry, KernelMustFitPaddedInput) {
  // X + 2p >= (K-1)*dil + 1: 5 + 0 < (3-1)*3 + 1 = 7
  expect_value_error([] { conv4_geometry("conv4", {1, 1, 3}, {1, 1, 5}, conv_opts(AxisArg::all(0), AxisArg::all(1), AxisArg::all(3))); },
                     {"conv4", "dilated kernel"});
  auto g = conv4_geometry("conv4", {1, 1, 3}, {1, 1, 5}, conv_opts(AxisArg::all(1), AxisArg::all(1), AxisArg::all(3)));
  EXPECT_EQ(g.output, (Shape{1, 1, 1}));
}

TEST(ConvGeometry, RefusesBadArrays) {
  expect_value_error([] { conv4_geometry("conv4", {1, 1, 3}, {1, 7}, ConvOptions{}); }, {"x has shape (1, 7)", "3, 4 or 5"});
  expect_value_error([] { conv4_geometry("conv4", {1, 1, 3, 3}, {1, 1, 7}, ConvOptions{}); }, {"w has shape", "as many dimensions"});
  expect_value_error([] { conv4_geometry("conv4", {1, 1, 3}, {0, 1, 7}, ConvOptions{}); }, {"x has shape (0, 1, 7)", "> 0"});
}

TEST(DeconvGeometry, InvertsConv) {
  // deconv4's size is the smallest input size that conv4 maps back onto x's size.
  for (int64_t s = 1; s <= 3; ++s)
    for (int64_t p = 0; p <= 2; ++p)
      for (int64_t k = 1; k <= 4; ++k)
        for (int64_t d = 1; d <= 2; ++d)
          for (int64_t x = 1; x <= 5; ++x) {
            ConvOptions o = conv_opts(AxisArg::all(p), AxisArg::all(s), AxisArg::all(d));
            const int64_t y = s * (x - 1) + (k - 1) * d + 1 - 2 * p;
            if (y < 1) {
              EXPECT_THROW(deconv4_geometry("deconv4", {2, 3, k}, {1, 2, x}, o), ArgumentError);
              continue;
            }
            auto g = deconv4_geometry("deconv4", {2, 3, k}, {1, 2, x}, o);
            ASSERT_EQ(g.input, (Shape{1, 3, y}));
            EXPECT_TRUE(g.transposed);
            if (y + 2 * p >= (k - 1) * d + 1) {
              auto back = conv4_geometry("conv4", {2, 3, k}, g.input, o);
              EXPECT_EQ(back.output, (Shape{1, 2, x}));
            }
          }
}

TEST(DeconvGeometry, OutputPaddingAndChannels) {
  ConvOptions o = conv_opts(AxisArg::all(0), AxisArg::all(2), AxisArg::all(1), 0, 2);
  o.output_padding = AxisArg::all(1);
  auto g = deconv4_geometry("deconv4", {4, 3, 3, 3}, {1, 4, 5, 5}, o);
  EXPECT_EQ(g.input, (Shape{1, 6, 12, 12}));  // 2*4 + 3 + 1; channels 3 * group
  o.output_padding = AxisArg::all(2);
  expect_value_error([&] { deconv4_geometry("deconv4", {4, 3, 3, 3}, {1, 4, 5, 5}, o); }, {"output_padding=2", "max(stride, dilation)"});
  expect_value_error([] { deconv4_geometry("deconv4", {3, 3, 3, 3}, {1, 4, 5, 5}, ConvOptions{}); }, {"x.shape[1] must equal w.shape[0]"});
}

TEST(PoolGeometry, KnetManualSizes) {
  PoolOptions o;
  EXPECT_EQ(pool_geometry("pool", {1, 1, 6}, o).output, (Shape{1, 1, 3}));
  o.window = AxisArg::all(3);
  EXPECT_EQ(pool_geometry("pool", {1, 1, 6}, o).output, (Shape{1, 1, 2}));
  o = PoolOptions{};
  o.padding = AxisArg::all(1);
  EXPECT_EQ(pool_geometry("pool", {1, 1, 6}, o).output, (Shape{1, 1, 4}));
  o = PoolOptions{};
  o.stride = AxisArg::all(4);
  EXPECT_EQ(pool_geometry("pool", {1, 1, 10}, o).output, (Shape{1, 1, 3}));
}

TEST(PoolGeometry, StrideDefaultsToWindow) {
  PoolOptions o;
  o.window = AxisArg::each({2, 3});
  auto g = pool_geometry("pool", {1, 1, 8, 9}, o);
  EXPECT_EQ(g.stride, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(g.output, (Shape{1, 1, 4, 3}));
}

TEST(PoolGeometry, RefusesBadKeywords) {
  PoolOptions o;
  o.padding = AxisArg::all(2);
  expect_value_error([&] { pool_geometry("pool", {1, 1, 6}, o); }, {"pool", "padding=2", "< window"});
  o = PoolOptions{};
  o.window = AxisArg::all(7);
  expect_value_error([&] { pool_geometry("poolx", {1, 1, 6}, o); }, {"poolx", "window=7", "X + 2*padding"});
  o = PoolOptions{};
  o.mode = 4;
  expect_value_error([&] { pool_geometry("pool", {1, 1, 6}, o); }, {"mode=4"});
  o = PoolOptions{};
  o.nan_opt = 2;
  expect_value_error([&] { pool_geometry("pool", {1, 1, 6}, o); }, {"maxpoolingNanOpt=2"});
  o = PoolOptions{};
  o.window = AxisArg::all(0);
  expect_value_error([&] { pool_geometry("pool", {1, 1, 6}, o); }, {"window=0", ">= 1"});
}

TEST(UnpoolGeometry, SizesModesAndRoundTrip) {
  for (int mode = 0; mode < 4; ++mode)
    for (int64_t win = 1; win <= 4; ++win)
      for (int64_t s = 1; s <= 4; ++s)
        for (int64_t p = 0; p < win; ++p)
          for (int64_t x = 1; x <= 4; ++x) {
            PoolOptions o;
            o.window = AxisArg::all(win);
            o.padding = AxisArg::all(p);
            o.stride = AxisArg::all(s);
            o.mode = mode;
            const int64_t y = s * (x - 1) + win - 2 * p;
            if (y < 1) {
              EXPECT_THROW(unpool_geometry("unpool", {1, 2, x}, o), ArgumentError);
              continue;
            }
            auto g = unpool_geometry("unpool", {1, 2, x}, o);
            ASSERT_EQ(g.input, (Shape{1, 2, y}));
            EXPECT_EQ(g.cudnn_mode, mode == 1 ? 2 : 1);
            // pool(unpool(x)) has x's shape
            EXPECT_EQ(pool_geometry("pool", g.input, o).output, (Shape{1, 2, x}));
          }
}

TEST(Checks, ShapeAndAlpha) {
  expect_value_error([] { check_shape("poolx", "dy", {1, 1, 2}, {1, 1, 3}, "the shape of pool(x)"); },
                     {"poolx", "dy has shape (1, 1, 2)", "(1, 1, 3)"});
  EXPECT_NO_THROW(check_shape("poolx", "dy", {1, 1, 3}, {1, 1, 3}, ""));
  expect_value_error([] { check_alpha("unpool", 0.0, true); }, {"unpool", "alpha=0", "non-zero"});
  expect_value_error([] { check_alpha("conv4", 1.0 / 0.0, false); }, {"alpha", "finite"});
  EXPECT_NO_THROW(check_alpha("conv4", 0.0, false));
}

TEST(Checks, ElementCountOverflow) {
  EXPECT_EQ(element_count({2, 3, 4}), 24);
  EXPECT_EQ(element_count({int64_t{1} << 32, int64_t{1} << 32}), -1);
}

TEST(Checks, TensorsOverInt32ElementsAreRefusedEverywhere) {
  // Inputs: 2**16 * 2**16 * 1 elements.
  // The advice fits the batch: splitting it helps only where N > 1.
  expect_value_error([] { pool_geometry("pool", {1 << 16, 1 << 16, 1}, PoolOptions{}); },
                     {"pool", "x has shape (65536, 65536, 1)", "at most 2147483647 elements", "split the batch"});
  // Results: a deconv4 whose input fits but whose result does not (2**15 -> 2**16 per axis, 2 axes, 2**0 ... )
  ConvOptions o = conv_opts(AxisArg::all(0), AxisArg::all(2), AxisArg::all(1));
  expect_value_error([&] { deconv4_geometry("deconv4", {1, 1, 2, 2}, {1, 1, 1 << 15, 1 << 15}, o); },
                     {"deconv4", "the result would have shape (1, 1, 65536, 65536)", "2147483647 elements",
                      "N is already 1, so reduce the other sizes"});
  PoolOptions u;
  u.stride = AxisArg::all(1 << 15);
  u.window = AxisArg::all(1 << 15);
  expect_value_error([&] { unpool_geometry("unpool", {1, 1, 2, 2}, u); }, {"unpool", "the result would have shape"});
}
