// Descriptors built for real through libcudnn (host-only calls: no GPU needed) for thousands of
// keyword/shape combinations, read back field by field, and cuDNN's own output-size functions
// compared with the core's geometry.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "cudnn_check.hpp"
#include "cudnn_names.hpp"
#include "descriptors.hpp"
#include "errors.hpp"

using namespace knetcnn;

namespace {

constexpr DType kDtypes[] = {DType::Float16, DType::BFloat16, DType::Float32, DType::Float64};

std::vector<int> ints(const Shape& s) { return std::vector<int>(s.begin(), s.end()); }

struct Rng {
  std::mt19937 gen;
  explicit Rng(unsigned seed) : gen(seed) {}
  int64_t operator()(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); }
  std::vector<int64_t> axes(int n, int64_t lo, int64_t hi) {
    std::vector<int64_t> v(n);
    for (auto& e : v) e = (*this)(lo, hi);
    return v;
  }
  // Sometimes one int for every axis (as a user would write), sometimes one per axis.
  AxisArg arg(const std::vector<int64_t>& v) {
    if (std::all_of(v.begin(), v.end(), [&](int64_t e) { return e == v[0]; }) && (*this)(0, 1)) return AxisArg::all(v[0]);
    return AxisArg::each(v);
  }
};

// A random valid conv4 problem; returns false when the drawn combination is invalid.
bool draw_conv(Rng& r, int nd, Shape& w, Shape& x, ConvOptions& o) {
  const int64_t group = r(1, 3);
  const auto kernel = r.axes(nd, 1, 5), dil = r.axes(nd, 1, 3), pad = r.axes(nd, 0, 3), stride = r.axes(nd, 1, 4),
             size = r.axes(nd, 1, 16);
  for (int i = 0; i < nd; ++i)
    if (size[i] + 2 * pad[i] < (kernel[i] - 1) * dil[i] + 1) return false;
  x = {r(1, 3), group * r(1, 3)};
  w = {group * r(1, 3), x[1] / group};
  x.insert(x.end(), size.begin(), size.end());
  w.insert(w.end(), kernel.begin(), kernel.end());
  o.padding = r.arg(pad);
  o.stride = r.arg(stride);
  o.dilation = r.arg(dil);
  o.mode = r(0, 1);
  o.group = group;
  return true;
}

void expect_conv_readback(const ConvGeometry& g, const ConvDescriptors& d, DType dtype, bool tf32) {
  const auto in = d.input.read(), out = d.output.read();
  const auto f = d.filter.read();
  const auto c = d.convolution.read();
  EXPECT_EQ(in.dims, ints(lift_shape(g.input)));
  EXPECT_EQ(in.strides, ints(packed_strides(lift_shape(g.input))));
  EXPECT_EQ(out.dims, ints(lift_shape(g.output)));
  EXPECT_EQ(in.data_type, cudnn_data_type(dtype));
  EXPECT_EQ(f.dims, ints(lift_shape(g.filter)));
  EXPECT_EQ(f.format, CUDNN_TENSOR_NCHW);
  EXPECT_EQ(f.data_type, cudnn_data_type(dtype));
  EXPECT_EQ(c.padding, lift_axes(g.padding, 0));
  EXPECT_EQ(c.stride, lift_axes(g.stride, 1));
  EXPECT_EQ(c.dilation, lift_axes(g.dilation, 1));
  EXPECT_EQ(c.mode, g.mode == 0 ? CUDNN_CONVOLUTION : CUDNN_CROSS_CORRELATION);
  EXPECT_EQ(c.compute_type, dtype == DType::Float64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT);
  EXPECT_EQ(c.group_count, g.group);
  EXPECT_EQ(c.math_type, cudnn_math_type(dtype, tf32));
}

}  // namespace

TEST(DescriptorSweep, ConvolutionMatchesCoreAndCudnn) {
  Rng r(20261121);
  int built = 0;
  while (built < 1500) {
    const int nd = static_cast<int>(r(1, 3));
    Shape w, x;
    ConvOptions o;
    if (!draw_conv(r, nd, w, x, o)) continue;
    const ConvGeometry g = conv4_geometry("conv4", w, x, o);
    const DType dtype = kDtypes[r(0, 3)];
    const bool tf32 = r(0, 1);
    const ConvDescriptors d = make_conv_descriptors(g, dtype, tf32);
    ASSERT_EQ(cudnn_conv_output_dims(d), lift_shape(g.output))
        << "w " << shape_to_string(w) << " x " << shape_to_string(x) << " padding " << o.padding.to_string()
        << " stride " << o.stride.to_string() << " dilation " << o.dilation.to_string();
    expect_conv_readback(g, d, dtype, tf32);
    ++built;
  }
  EXPECT_EQ(built, 1500);
}

TEST(DescriptorSweep, DeconvolutionIsTheTransposeCudnnExpects) {
  Rng r(462);
  int built = 0;
  while (built < 800) {
    const int nd = static_cast<int>(r(1, 3));
    Shape w, x;
    ConvOptions o;
    if (!draw_conv(r, nd, w, x, o)) continue;
    // deconv4 weights are (C_in, C_out/group, *k) and C_in == x.shape[1]
    x[1] = w[0];
    std::vector<int64_t> extra(nd);
    for (int i = 0; i < nd; ++i) {
      const int64_t s = o.stride.per_axis ? o.stride.values[i] : o.stride.values[0];
      const int64_t dl = o.dilation.per_axis ? o.dilation.values[i] : o.dilation.values[0];
      extra[i] = r(0, std::max(s, dl) - 1);
    }
    o.output_padding = AxisArg::each(extra);
    ConvGeometry g;
    try {
      g = deconv4_geometry("deconv4", w, x, o);
    } catch (const ArgumentError&) {
      continue;  // output size < 1 for this draw
    }
    const DType dtype = kDtypes[r(0, 3)];
    const ConvDescriptors d = make_conv_descriptors(g, dtype, false);
    expect_conv_readback(g, d, dtype, false);
    // conv4 of deconv4's result maps back onto x's size, plus output_padding // stride.
    Shape expected = lift_shape(g.output);
    for (int i = 0; i < nd; ++i) expected[expected.size() - nd + i] += g.output_padding[i] / g.stride[i];
    ASSERT_EQ(cudnn_conv_output_dims(d), expected) << "w " << shape_to_string(w) << " x " << shape_to_string(x);
    ++built;
  }
  EXPECT_EQ(built, 800);
}

TEST(DescriptorSweep, PoolingMatchesCoreAndCudnn) {
  Rng r(218);
  int built = 0;
  while (built < 1200) {
    const int nd = static_cast<int>(r(1, 3));
    const auto window = r.axes(nd, 1, 5), stride = r.axes(nd, 1, 4), size = r.axes(nd, 1, 16);
    std::vector<int64_t> pad(nd);
    bool ok = true;
    for (int i = 0; i < nd; ++i) {
      pad[i] = r(0, window[i] - 1);
      ok = ok && window[i] <= size[i] + 2 * pad[i];
    }
    if (!ok) continue;
    Shape x{r(1, 3), r(1, 4)};
    x.insert(x.end(), size.begin(), size.end());
    PoolOptions o;
    o.window = r.arg(window);
    o.padding = r.arg(pad);
    if (r(0, 3)) o.stride = r.arg(stride);  // else stride defaults to window
    o.mode = r(0, 3);
    o.nan_opt = r(0, 1);
    const PoolGeometry g = pool_geometry("pool", x, o);
    const DType dtype = kDtypes[r(0, 3)];
    const PoolDescriptors d = make_pool_descriptors(g, dtype);
    ASSERT_EQ(cudnn_pool_output_dims(d), lift_shape(g.output)) << "x " << shape_to_string(x);
    const auto p = d.pooling.read();
    EXPECT_EQ(p.window, lift_axes(g.window, 1));
    EXPECT_EQ(p.padding, lift_axes(g.padding, 0));
    EXPECT_EQ(p.stride, lift_axes(g.stride, 1));
    EXPECT_EQ(p.mode, cudnn_pooling_mode(static_cast<int>(o.mode)));
    EXPECT_EQ(p.nan_propagation, o.nan_opt ? CUDNN_PROPAGATE_NAN : CUDNN_NOT_PROPAGATE_NAN);
    EXPECT_EQ(d.input.read().dims, ints(lift_shape(x)));
    EXPECT_EQ(d.output.read().data_type, cudnn_data_type(dtype));
    ++built;
  }
  EXPECT_EQ(built, 1200);
}

TEST(DescriptorSweep, UnpoolIsTheAveragePoolTranspose) {
  Rng r(1);
  int built = 0;
  while (built < 500) {
    const int nd = static_cast<int>(r(1, 3));
    const auto window = r.axes(nd, 1, 4), stride = r.axes(nd, 1, 4), size = r.axes(nd, 1, 8);
    std::vector<int64_t> pad(nd);
    for (int i = 0; i < nd; ++i) pad[i] = r(0, window[i] - 1);
    Shape x{r(1, 3), r(1, 3)};
    x.insert(x.end(), size.begin(), size.end());
    PoolOptions o;
    o.window = r.arg(window);
    o.padding = r.arg(pad);
    o.stride = r.arg(stride);
    o.mode = r(0, 3);
    PoolGeometry g;
    try {
      g = unpool_geometry("unpool", x, o);
    } catch (const ArgumentError&) {
      continue;
    }
    const PoolDescriptors d = make_pool_descriptors(g, kDtypes[r(0, 3)]);
    ASSERT_EQ(cudnn_pool_output_dims(d), lift_shape(x));
    EXPECT_EQ(d.pooling.read().mode, cudnn_pooling_mode(o.mode == 1 ? 2 : 1));
    ++built;
  }
  EXPECT_EQ(built, 500);
}

// The sweep has teeth: descriptors built with the per-axis keywords in the wrong order (the
// classic Julia-to-C mistake) disagree with the core on a large share of the same cases.
TEST(DescriptorSweep, ReversedAxisMappingWouldBeCaught) {
  Rng r(20261121);
  int cases = 0, caught = 0;
  while (cases < 500) {
    const int nd = static_cast<int>(r(2, 3));
    Shape w, x;
    ConvOptions o;
    if (!draw_conv(r, nd, w, x, o)) continue;
    ConvGeometry g = conv4_geometry("conv4", w, x, o);
    ConvGeometry wrong = g;
    std::reverse(wrong.padding.begin(), wrong.padding.end());
    std::reverse(wrong.stride.begin(), wrong.stride.end());
    std::reverse(wrong.dilation.begin(), wrong.dilation.end());
    ++cases;
    try {
      if (cudnn_conv_output_dims(make_conv_descriptors(wrong, DType::Float32, false)) != lift_shape(g.output)) ++caught;
    } catch (const CudnnError&) {
      ++caught;  // cuDNN refused the wrong mapping outright
    }
  }
  EXPECT_GT(caught, cases / 3) << caught << " of " << cases;
}

TEST(TensorDescriptor, StridedAndNormalised) {
  // A transposed-in-memory (N, C, H, W) view: strides read back as given.
  TensorDescriptor t("x", DType::Float32, {2, 3, 4, 5}, {60, 1, 15, 3});
  EXPECT_EQ(t.read().strides, (std::vector<int>{60, 1, 15, 3}));
  // Size-1 axes get their packed stride whatever the caller passed.
  TensorDescriptor s("x", DType::Float32, {1, 3, 1, 5}, {7, 5, 123, 1});
  EXPECT_EQ(s.read().strides, (std::vector<int>{15, 5, 5, 1}));
  // 1-D with strides: (N, C, W) -> (N, C, 1, W).
  TensorDescriptor l("x", DType::Float64, {2, 3, 7}, {42, 14, 2});
  EXPECT_EQ(l.read().dims, (std::vector<int>{2, 3, 1, 7}));
  EXPECT_EQ(l.read().strides, (std::vector<int>{42, 14, 14, 2}));
}

TEST(TensorDescriptor, RefusesWhatInt32CannotHold) {
  EXPECT_THROW(TensorDescriptor("x", DType::Float32, {1 << 16, 1 << 16, 1, 1}), ArgumentError);
  EXPECT_THROW(TensorDescriptor("x", DType::Float32, {2, 2, 2, 2}, {int64_t{1} << 31, 1, 1, 1}), ArgumentError);
  EXPECT_THROW(TensorDescriptor("x", DType::Float32, {2, 2}), ArgumentError);
  EXPECT_THROW(TensorDescriptor("x", DType::Float32, {2, 2, 2}, {1, 1}), ArgumentError);
  try {
    TensorDescriptor("dy", DType::Float32, {1 << 16, 1 << 16, 1, 1});
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("dy has shape (65536, 65536, 1, 1)"), std::string::npos) << e.what();
  }
}

TEST(CudnnErrors, StatusNameFunctionAndLastErrorString) {
  cudnnTensorDescriptor_t desc = nullptr;
  ASSERT_EQ(cudnnCreateTensorDescriptor(&desc), CUDNN_STATUS_SUCCESS);
  const int dims[4] = {1, 1, 1, -5}, strides[4] = {1, 1, 1, 1};
  try {
    KNETCNN_CUDNN(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 4, dims, strides));
    FAIL() << "cuDNN accepted a negative dimension";
  } catch (const CudnnError& e) {
    EXPECT_EQ(e.status_name().rfind("CUDNN_STATUS_BAD_PARAM", 0), 0u) << e.status_name();
    EXPECT_EQ(e.function(), "cudnnSetTensorNdDescriptor");
    EXPECT_NE(std::string(e.what()).find("cudnnSetTensorNdDescriptor failed with CUDNN_STATUS_BAD_PARAM"),
              std::string::npos);
  }
  cudnnDestroyTensorDescriptor(desc);
}

TEST(CudnnNames, ReadableEnums) {
  EXPECT_EQ(data_type_name(CUDNN_DATA_BFLOAT16), "CUDNN_DATA_BFLOAT16");
  EXPECT_EQ(math_type_name(CUDNN_FMA_MATH), "CUDNN_FMA_MATH");
  EXPECT_EQ(pooling_mode_name(CUDNN_POOLING_MAX_DETERMINISTIC), "CUDNN_POOLING_MAX_DETERMINISTIC");
  EXPECT_EQ(nan_propagation_name(CUDNN_NOT_PROPAGATE_NAN), "CUDNN_NOT_PROPAGATE_NAN");
}
