#include "geometry.hpp"

#include <cmath>
#include <sstream>

#include "errors.hpp"

namespace knetcnn {
namespace {

std::string join(const std::vector<int64_t>& values) {
  std::ostringstream out;
  for (std::size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  return out.str();
}

[[noreturn]] void fail(const std::string& function, const std::string& what, const std::string& rule) {
  throw value_error(function + ": " + what + ": " + rule);
}

// cuDNN's descriptors count elements in 32-bit ints. Every backend applies the same limit, so a
// call is accepted or refused the same way wherever it runs.
void check_elements(const std::string& function, const std::string& what, const Shape& shape) {
  const int64_t count = element_count(shape);
  if (count < 0 || count > kMaxDescriptorInt)
    fail(function, what,
         std::string("a tensor holds at most 2147483647 elements (cuDNN's 32-bit limit, applied on every "
                     "backend); ") +
             (!shape.empty() && shape[0] > 1
                  ? "split the batch (axis 0)"
                  : "N is already 1, so reduce the other sizes or the keywords that set them"));
}

// Rank and sizes of an array argument: (N, C, *spatial) with 1..3 spatial axes, every size
// in 1..kMaxDescriptorInt. Returns the number of spatial axes.
int check_array(const std::string& function, const std::string& name, const Shape& shape) {
  const std::string what = name + " has shape " + shape_to_string(shape);
  if (shape.size() < 3 || shape.size() > 5)
    fail(function, what,
         name + " must have 3, 4 or 5 dimensions: (N, C, *spatial) with 1 to 3 spatial axes");
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] <= 0)
      fail(function, what, "every size must be > 0 (axis " + std::to_string(i) + " is " +
                               std::to_string(shape[i]) + ")");
    if (shape[i] > kMaxDescriptorInt)
      fail(function, what, "every size must be <= 2147483647 (axis " + std::to_string(i) + ")");
  }
  check_elements(function, what, shape);
  return static_cast<int>(shape.size()) - 2;
}

// Expands a per-axis keyword to `dims` values and checks lo <= v <= kMaxDescriptorInt.
std::vector<int64_t> expand(const std::string& function, const std::string& name, const AxisArg& arg,
                            int dims, int64_t lo) {
  const std::string what = name + "=" + arg.to_string();
  std::vector<int64_t> values;
  if (!arg.per_axis) {
    if (arg.values.size() != 1) fail(function, what, "internal: a scalar keyword holds one value");
    values.assign(dims, arg.values[0]);
  } else {
    if (static_cast<int>(arg.values.size()) != dims)
      fail(function, what,
           "give one int, or " + std::to_string(dims) + " ints (one per spatial axis), not " +
               std::to_string(arg.values.size()));
    values = arg.values;
  }
  for (int i = 0; i < dims; ++i) {
    if (values[i] < lo)
      fail(function, what,
           name + " must be >= " + std::to_string(lo) + " (spatial axis " + std::to_string(i) +
               " is " + std::to_string(values[i]) + ")");
    if (values[i] > kMaxDescriptorInt)
      fail(function, what,
           name + " must be <= 2147483647, the largest value a cuDNN descriptor holds (spatial axis " +
               std::to_string(i) + ")");
  }
  return values;
}

void check_conv_mode(const std::string& function, int64_t mode) {
  if (mode != 0 && mode != 1)
    fail(function, "mode=" + std::to_string(mode),
         "mode must be 0 (convolution, kernel flipped) or 1 (cross-correlation)");
}

// Shared by conv4 and deconv4: ranks, keywords and the group rules on (w, channels).
struct ConvCommon {
  int dims;
  std::vector<int64_t> padding, stride, dilation;
};

ConvCommon check_conv_common(const std::string& function, const Shape& w, const Shape& x,
                             const ConvOptions& o) {
  ConvCommon c;
  c.dims = check_array(function, "x", x);
  check_array(function, "w", w);
  if (w.size() != x.size())
    fail(function, "w has shape " + shape_to_string(w),
         "w must have as many dimensions as x (" + std::to_string(x.size()) + "), x has shape " +
             shape_to_string(x));
  c.padding = expand(function, "padding", o.padding, c.dims, 0);
  c.stride = expand(function, "stride", o.stride, c.dims, 1);
  c.dilation = expand(function, "dilation", o.dilation, c.dims, 1);
  check_conv_mode(function, o.mode);
  if (o.group < 1) fail(function, "group=" + std::to_string(o.group), "group must be >= 1");
  if (o.group > kMaxDescriptorInt)
    fail(function, "group=" + std::to_string(o.group), "group must be <= 2147483647");
  return c;
}

int64_t dilated_kernel(int64_t k, int64_t dilation) { return (k - 1) * dilation + 1; }

// cuDNN computes output sizes in 32-bit ints: the padded input X + 2*padding and the dilated
// kernel (K-1)*dilation + 1 must fit, or its arithmetic overflows before any range check of ours
// could see it. (The operands are <= 2147483647 each, so int64 holds these sums exactly.)
void check_int_arithmetic(const std::string& function, int axis, const std::string& padding_arg, int64_t size,
                          int64_t padding, const std::string& kernel_arg = "", int64_t span = 1) {
  if (span > kMaxDescriptorInt)
    fail(function, kernel_arg,
         "the dilated kernel (K-1)*dilation + 1 must be <= 2147483647: cuDNN computes it in 32-bit ints "
         "(spatial axis " + std::to_string(axis) + " gives " + std::to_string(span) + ")");
  if (size + 2 * padding > kMaxDescriptorInt)
    fail(function, padding_arg,
         "the padded size X + 2*padding must be <= 2147483647: cuDNN computes it in 32-bit ints (spatial axis " +
             std::to_string(axis) + ": " + std::to_string(size) + " + 2*" + std::to_string(padding) + " = " +
             std::to_string(size + 2 * padding) + ")");
}

}  // namespace

std::string AxisArg::to_string() const {
  if (!per_axis && values.size() == 1) return std::to_string(values[0]);
  return "(" + join(values) + (values.size() == 1 ? ",)" : ")");
}

std::string shape_to_string(const Shape& shape) {
  return "(" + join(shape) + (shape.size() == 1 ? ",)" : ")");
}

int64_t element_count(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    if (s < 0) return -1;
    if (__builtin_mul_overflow(n, s, &n)) return -1;
  }
  return n;
}

ConvGeometry conv4_geometry(const std::string& function, const Shape& w, const Shape& x,
                            const ConvOptions& o) {
  ConvCommon c = check_conv_common(function, w, x, o);
  const int64_t channels = x[1], outputs = w[0];
  if (channels % o.group != 0)
    fail(function, "group=" + std::to_string(o.group),
         "x's channels (x.shape[1] = " + std::to_string(channels) + ") must be divisible by group");
  if (outputs % o.group != 0)
    fail(function, "group=" + std::to_string(o.group),
         "w's output channels (w.shape[0] = " + std::to_string(outputs) + ") must be divisible by group");
  if (w[1] != channels / o.group)
    fail(function, "w has shape " + shape_to_string(w),
         "w.shape[1] must be x.shape[1] // group = " + std::to_string(channels) + " // " +
             std::to_string(o.group) + " = " + std::to_string(channels / o.group));
  ConvGeometry g;
  g.spatial_dims = c.dims;
  g.input = x;
  g.filter = w;
  g.output = {x[0], outputs};
  for (int i = 0; i < c.dims; ++i) {
    const int64_t size = x[2 + i], span = dilated_kernel(w[2 + i], c.dilation[i]);
    check_int_arithmetic(function, i, "padding=" + o.padding.to_string(), size, c.padding[i],
                         "dilation=" + o.dilation.to_string(), span);
    const int64_t padded = size + 2 * c.padding[i];
    if (padded < span)
      fail(function, "x has shape " + shape_to_string(x),
           "the padded input must hold the dilated kernel, X + 2*padding >= (K-1)*dilation + 1 "
           "(spatial axis " + std::to_string(i) + ": " + std::to_string(size) + " + 2*" +
               std::to_string(c.padding[i]) + " < (" + std::to_string(w[2 + i]) + "-1)*" +
               std::to_string(c.dilation[i]) + " + 1)");
    g.output.push_back(1 + (padded - span) / c.stride[i]);
  }
  g.padding = c.padding;
  g.stride = c.stride;
  g.dilation = c.dilation;
  g.output_padding.assign(c.dims, 0);
  g.mode = static_cast<int>(o.mode);
  g.group = static_cast<int>(o.group);
  g.transposed = false;
  check_elements(function, "the result would have shape " + shape_to_string(g.output), g.output);
  return g;
}

ConvGeometry deconv4_geometry(const std::string& function, const Shape& w, const Shape& x,
                              const ConvOptions& o) {
  ConvCommon c = check_conv_common(function, w, x, o);
  if (x[1] != w[0])
    fail(function, "w has shape " + shape_to_string(w),
         "x.shape[1] must equal w.shape[0] (deconv4 weights are (C_in, C_out // group, *kernel)), "
         "x has shape " + shape_to_string(x));
  if (w[0] % o.group != 0)
    fail(function, "group=" + std::to_string(o.group),
         "x's channels (x.shape[1] = " + std::to_string(x[1]) + ") must be divisible by group");
  std::vector<int64_t> extra = expand(function, "output_padding", o.output_padding, c.dims, 0);
  ConvGeometry g;
  g.spatial_dims = c.dims;
  g.output = x;
  g.filter = w;
  int64_t out_channels = 0;
  if (__builtin_mul_overflow(w[1], o.group, &out_channels) || out_channels > kMaxDescriptorInt)
    fail(function, "group=" + std::to_string(o.group),
         "the output channels w.shape[1] * group must be <= 2147483647");
  g.input = {x[0], out_channels};
  for (int i = 0; i < c.dims; ++i) {
    const int64_t limit = std::max(c.stride[i], c.dilation[i]);
    if (extra[i] >= limit)
      fail(function, "output_padding=" + o.output_padding.to_string(),
           "output_padding must be < max(stride, dilation) (spatial axis " + std::to_string(i) +
               ": " + std::to_string(extra[i]) + " >= " + std::to_string(limit) + ")");
    const int64_t span = dilated_kernel(w[2 + i], c.dilation[i]);
    if (span > kMaxDescriptorInt) check_int_arithmetic(function, i, "", 0, 0, "dilation=" + o.dilation.to_string(), span);
    const int64_t size = c.stride[i] * (x[2 + i] - 1) + dilated_kernel(w[2 + i], c.dilation[i]) -
                         2 * c.padding[i] + extra[i];
    if (size < 1)
      fail(function, "padding=" + o.padding.to_string(),
           "the output size s*(X-1) + (K-1)*dilation + 1 - 2*padding + output_padding must be >= 1 "
           "(spatial axis " + std::to_string(i) + " gives " + std::to_string(size) + ")");
    if (size > kMaxDescriptorInt)
      fail(function, "x has shape " + shape_to_string(x),
           "the output size must be <= 2147483647 (spatial axis " + std::to_string(i) + ")");
    // The result is cuDNN's input: cuDNN pads it.
    check_int_arithmetic(function, i, "padding=" + o.padding.to_string(), size, c.padding[i]);
    g.input.push_back(size);
  }
  g.padding = c.padding;
  g.stride = c.stride;
  g.dilation = c.dilation;
  g.output_padding = extra;
  g.mode = static_cast<int>(o.mode);
  g.group = static_cast<int>(o.group);
  g.transposed = true;
  check_elements(function, "the result would have shape " + shape_to_string(g.input), g.input);
  return g;
}

namespace {

struct PoolCommon {
  int dims;
  std::vector<int64_t> window, padding, stride;
};

PoolCommon check_pool_common(const std::string& function, const Shape& x, const PoolOptions& o,
                             bool allow_nan_opt) {
  PoolCommon c;
  c.dims = check_array(function, "x", x);
  c.window = expand(function, "window", o.window, c.dims, 1);
  c.padding = expand(function, "padding", o.padding, c.dims, 0);
  c.stride = expand(function, "stride", o.stride ? *o.stride : o.window, c.dims, 1);
  if (o.mode < 0 || o.mode > 3)
    fail(function, "mode=" + std::to_string(o.mode),
         "mode must be 0 (max), 1 (average, padding counted), 2 (average, padding excluded) "
         "or 3 (deterministic max)");
  if (allow_nan_opt && o.nan_opt != 0 && o.nan_opt != 1)
    fail(function, "maxpoolingNanOpt=" + std::to_string(o.nan_opt),
         "maxpoolingNanOpt must be 0 (skip NaN) or 1 (propagate NaN)");
  for (int i = 0; i < c.dims; ++i)
    if (c.padding[i] >= c.window[i])
      fail(function, "padding=" + o.padding.to_string(),
           "padding must be < window (spatial axis " + std::to_string(i) + ": " +
               std::to_string(c.padding[i]) + " >= " + std::to_string(c.window[i]) + ")");
  return c;
}

}  // namespace

PoolGeometry pool_geometry(const std::string& function, const Shape& x, const PoolOptions& o) {
  PoolCommon c = check_pool_common(function, x, o, true);
  PoolGeometry g;
  g.spatial_dims = c.dims;
  g.input = x;
  g.output = {x[0], x[1]};
  for (int i = 0; i < c.dims; ++i) {
    check_int_arithmetic(function, i, "padding=" + o.padding.to_string(), x[2 + i], c.padding[i]);
    const int64_t padded = x[2 + i] + 2 * c.padding[i];
    if (c.window[i] > padded)
      fail(function, "window=" + o.window.to_string(),
           "window must be <= X + 2*padding (spatial axis " + std::to_string(i) + ": " +
               std::to_string(c.window[i]) + " > " + std::to_string(x[2 + i]) + " + 2*" +
               std::to_string(c.padding[i]) + ")");
    g.output.push_back(1 + (padded - c.window[i]) / c.stride[i]);
  }
  g.window = c.window;
  g.padding = c.padding;
  g.stride = c.stride;
  g.mode = g.cudnn_mode = static_cast<int>(o.mode);
  g.nan_opt = static_cast<int>(o.nan_opt);
  g.transposed = false;
  check_elements(function, "the result would have shape " + shape_to_string(g.output), g.output);
  return g;
}

int unpool_average_mode(int mode) { return mode == 1 ? 2 : 1; }

PoolGeometry unpool_geometry(const std::string& function, const Shape& x, const PoolOptions& o) {
  PoolCommon c = check_pool_common(function, x, o, false);
  PoolGeometry g;
  g.spatial_dims = c.dims;
  g.output = x;
  g.input = {x[0], x[1]};
  for (int i = 0; i < c.dims; ++i) {
    const int64_t size = c.stride[i] * (x[2 + i] - 1) + c.window[i] - 2 * c.padding[i];
    if (size < 1)
      fail(function, "padding=" + o.padding.to_string(),
           "the output size stride*(X-1) + window - 2*padding must be >= 1 (spatial axis " +
               std::to_string(i) + " gives " + std::to_string(size) + ")");
    if (size > kMaxDescriptorInt)
      fail(function, "x has shape " + shape_to_string(x),
           "the output size must be <= 2147483647 (spatial axis " + std::to_string(i) + ")");
    // The result is cuDNN's pooling input: cuDNN pads it.
    check_int_arithmetic(function, i, "padding=" + o.padding.to_string(), size, c.padding[i]);
    g.input.push_back(size);
  }
  g.window = c.window;
  g.padding = c.padding;
  g.stride = c.stride;
  g.mode = static_cast<int>(o.mode);
  g.cudnn_mode = unpool_average_mode(g.mode);
  g.nan_opt = 1;
  g.transposed = true;
  check_elements(function, "the result would have shape " + shape_to_string(g.input), g.input);
  return g;
}

void check_shape(const std::string& function, const std::string& argument, const Shape& actual,
                 const Shape& expected, const std::string& why) {
  if (actual != expected)
    fail(function, argument + " has shape " + shape_to_string(actual),
         argument + " must have shape " + shape_to_string(expected) + ", " + why);
}

void check_alpha(const std::string& function, double alpha, bool must_be_nonzero) {
  std::ostringstream what;
  what << "alpha=" << alpha;
  if (!std::isfinite(alpha)) fail(function, what.str(), "alpha must be a finite number");
  if (must_be_nonzero && alpha == 0)
    fail(function, what.str(), "alpha must be non-zero (unpool scales by 1/alpha)");
}

}  // namespace knetcnn
