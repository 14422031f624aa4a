// Knet's convolution and pooling geometry: keyword normalisation, the validation rules of
// semantics.md §2, and output shapes. The one source of truth for both backends: the CPU
// backend and the cuDNN descriptors are both built from these structs.
//
// Shapes are C-order (N, C, *spatial) with 1 to 3 spatial axes; per-axis keywords follow the
// spatial axes' order. Nothing here touches cuDNN.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace knetcnn {

using Shape = std::vector<int64_t>;

// Largest size or keyword value accepted: cuDNN descriptors hold 32-bit ints.
constexpr int64_t kMaxDescriptorInt = 2147483647;

// A per-axis keyword as the user gave it: one int for every spatial axis, or one int per axis.
struct AxisArg {
  std::vector<int64_t> values;
  bool per_axis = false;

  static AxisArg all(int64_t value) { return AxisArg{{value}, false}; }
  static AxisArg each(std::vector<int64_t> values) { return AxisArg{std::move(values), true}; }
  // "1" or "(1, 2)", as the user wrote it, for error messages.
  std::string to_string() const;
};

struct ConvOptions {
  AxisArg padding = AxisArg::all(0);
  AxisArg stride = AxisArg::all(1);
  AxisArg dilation = AxisArg::all(1);
  AxisArg output_padding = AxisArg::all(0);  // deconv4 only
  int64_t mode = 0;                          // 0 convolution (kernel flipped), 1 cross-correlation
  int64_t group = 1;
};

// Convolution geometry in cuDNN's forward terms. For conv4 `input` is x and `output` is y.
// For deconv4 (the transpose of conv4) `input` is deconv4's result and `output` is its x:
// deconv4 runs as cuDNN backward-data.
struct ConvGeometry {
  int spatial_dims = 0;
  Shape input, filter, output;
  std::vector<int64_t> padding, stride, dilation, output_padding;
  int mode = 0;
  int group = 1;
  bool transposed = false;
};

// w: (O, C/group, *kernel), x: (N, C, *spatial). `function` names the caller in messages.
ConvGeometry conv4_geometry(const std::string& function, const Shape& w, const Shape& x,
                            const ConvOptions& options);
// w: (C_in, C_out/group, *kernel), x: (N, C_in, *spatial).
ConvGeometry deconv4_geometry(const std::string& function, const Shape& w, const Shape& x,
                              const ConvOptions& options);

struct PoolOptions {
  AxisArg window = AxisArg::all(2);
  AxisArg padding = AxisArg::all(0);
  std::optional<AxisArg> stride;  // defaults to window
  int64_t mode = 0;               // 0 max, 1 avg incl. padding, 2 avg excl. padding, 3 deterministic max
  int64_t nan_opt = 1;            // maxpoolingNanOpt: 1 propagate NaN, 0 skip NaN
};

// Pooling geometry in cuDNN's forward terms. For pool `input` is x and `output` is y. For unpool
// `input` is unpool's result and `output` is its x: unpool runs as an average-pool backward.
struct PoolGeometry {
  int spatial_dims = 0;
  Shape input, output;
  std::vector<int64_t> window, padding, stride;
  int mode = 0;        // the mode the caller gave
  int cudnn_mode = 0;  // the pooling mode that runs: `mode` for pool, Knet's mapping for unpool
  int nan_opt = 1;
  bool transposed = false;
};

PoolGeometry pool_geometry(const std::string& function, const Shape& x, const PoolOptions& options);
PoolGeometry unpool_geometry(const std::string& function, const Shape& x, const PoolOptions& options);

// Knet's unpool mode mapping: pool mode 0->1, 1->2, 2->1, 3->1 (an average mode always).
int unpool_average_mode(int mode);

// Gradient calls take arrays whose shape is fixed by the forward call: refuse any other.
void check_shape(const std::string& function, const std::string& argument, const Shape& actual,
                 const Shape& expected, const std::string& why);
// alpha must be finite; unpool divides by it, so there it must also be non-zero.
void check_alpha(const std::string& function, double alpha, bool must_be_nonzero);

// Number of elements, or -1 if it does not fit in int64.
int64_t element_count(const Shape& shape);
std::string shape_to_string(const Shape& shape);

}  // namespace knetcnn
