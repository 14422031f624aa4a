#include "descriptors.hpp"

#include <climits>

#include "cudnn_check.hpp"
#include "errors.hpp"

namespace knetcnn {
namespace {

constexpr int kMaxDims = 8;  // more than the 5 we ever use: read-backs ask for this many

std::vector<int> to_ints(const Shape& values) { return std::vector<int>(values.begin(), values.end()); }

// cuDNN's legacy descriptors index with 32-bit ints: refuse anything they cannot address.
void check_int_range(const char* role, const Shape& shape, const Shape& strides) {
  const int64_t count = element_count(shape);
  if (count < 0 || count > INT_MAX)
    throw value_error(std::string(role) + " has shape " + shape_to_string(shape) +
                      ": cuDNN tensors hold at most 2147483647 elements; split the batch (axis 0)");
  int64_t last_offset = 0;
  bool overflow = false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1 || strides[i] < 0 || strides[i] > INT_MAX)
      throw value_error(std::string(role) + " has shape " + shape_to_string(shape) + " and strides " +
                        shape_to_string(strides) +
                        ": cuDNN needs sizes >= 1 and strides in 0..2147483647");
    int64_t term = 0;
    overflow = overflow || __builtin_mul_overflow(shape[i] - 1, strides[i], &term) ||
               __builtin_add_overflow(last_offset, term, &last_offset);
  }
  if (overflow || last_offset > INT_MAX)
    throw value_error(std::string(role) + " spans more than 2147483647 elements (strides " +
                      shape_to_string(strides) + "): cuDNN cannot address it");
}

}  // namespace

Shape lift_shape(const Shape& shape) {
  if (shape.size() != 3) return shape;
  return {shape[0], shape[1], 1, shape[2]};
}

std::vector<int> lift_axes(const std::vector<int64_t>& values, int fill) {
  std::vector<int> out;
  if (values.size() == 1) out.push_back(fill);
  for (int64_t v : values) out.push_back(static_cast<int>(v));
  return out;
}

Shape packed_strides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

Shape normalized_strides(const Shape& shape, const Shape& strides) {
  Shape out = strides;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i)
    if (shape[i] == 1) out[i] = (i + 1 < static_cast<int>(shape.size())) ? out[i + 1] * shape[i + 1] : 1;
  return out;
}

// ---- TensorDescriptor ----

TensorDescriptor::TensorDescriptor(const char* role, DType dtype, const Shape& shape, const Shape& strides) {
  if (shape.size() < 3 || shape.size() > 5)
    throw value_error(std::string(role) + " has shape " + shape_to_string(shape) +
                      ": tensors have 3 to 5 dimensions");
  if (!strides.empty() && strides.size() != shape.size())
    throw value_error(std::string(role) + ": strides " + shape_to_string(strides) +
                      " do not match shape " + shape_to_string(shape));
  Shape given = strides.empty() ? packed_strides(shape) : strides;
  Shape lifted = lift_shape(shape);
  Shape lifted_strides = given;
  if (shape.size() == 3) lifted_strides = {given[0], given[1], given[2] * shape[2], given[2]};
  lifted_strides = normalized_strides(lifted, lifted_strides);
  check_int_range(role, lifted, lifted_strides);
  KNETCNN_CUDNN(cudnnCreateTensorDescriptor(&desc_));
  const std::vector<int> dims = to_ints(lifted), stride_ints = to_ints(lifted_strides);
  try {
    KNETCNN_CUDNN_CTX(cudnnSetTensorNdDescriptor(desc_, cudnn_data_type(dtype), static_cast<int>(dims.size()),
                                                 dims.data(), stride_ints.data()),
                      std::string(role) + " " + shape_to_string(lifted) + " strides " +
                          shape_to_string(lifted_strides) + " " + dtype_name(dtype));
  } catch (...) {
    cudnnDestroyTensorDescriptor(desc_);
    throw;
  }
}

TensorDescriptor::~TensorDescriptor() {
  if (desc_) cudnnDestroyTensorDescriptor(desc_);
}

TensorDescriptor::TensorDescriptor(TensorDescriptor&& other) noexcept : desc_(other.desc_) { other.desc_ = nullptr; }

TensorDescriptor::Readback TensorDescriptor::read() const {
  Readback r;
  int dims[kMaxDims], strides[kMaxDims], nb = 0;
  KNETCNN_CUDNN(cudnnGetTensorNdDescriptor(desc_, kMaxDims, &r.data_type, &nb, dims, strides));
  r.dims.assign(dims, dims + nb);
  r.strides.assign(strides, strides + nb);
  return r;
}

// ---- FilterDescriptor ----

FilterDescriptor::FilterDescriptor(DType dtype, const Shape& shape) {
  if (shape.size() < 3 || shape.size() > 5)
    throw value_error("w has shape " + shape_to_string(shape) + ": filters have 3 to 5 dimensions");
  Shape lifted = lift_shape(shape);
  check_int_range("w", lifted, packed_strides(lifted));
  KNETCNN_CUDNN(cudnnCreateFilterDescriptor(&desc_));
  const std::vector<int> dims = to_ints(lifted);
  try {
    KNETCNN_CUDNN_CTX(cudnnSetFilterNdDescriptor(desc_, cudnn_data_type(dtype), CUDNN_TENSOR_NCHW,
                                                 static_cast<int>(dims.size()), dims.data()),
                      "w " + shape_to_string(lifted) + " " + dtype_name(dtype));
  } catch (...) {
    cudnnDestroyFilterDescriptor(desc_);
    throw;
  }
}

FilterDescriptor::~FilterDescriptor() {
  if (desc_) cudnnDestroyFilterDescriptor(desc_);
}

FilterDescriptor::FilterDescriptor(FilterDescriptor&& other) noexcept : desc_(other.desc_) { other.desc_ = nullptr; }

FilterDescriptor::Readback FilterDescriptor::read() const {
  Readback r;
  int dims[kMaxDims], nb = 0;
  KNETCNN_CUDNN(cudnnGetFilterNdDescriptor(desc_, kMaxDims, &r.data_type, &r.format, &nb, dims));
  r.dims.assign(dims, dims + nb);
  return r;
}

// ---- ConvolutionDescriptor ----

ConvolutionDescriptor::ConvolutionDescriptor(const ConvGeometry& g, DType dtype, bool allow_tf32) {
  const std::vector<int> pad = lift_axes(g.padding, 0), stride = lift_axes(g.stride, 1),
                         dilation = lift_axes(g.dilation, 1);
  KNETCNN_CUDNN(cudnnCreateConvolutionDescriptor(&desc_));
  try {
    KNETCNN_CUDNN(cudnnSetConvolutionNdDescriptor(desc_, static_cast<int>(pad.size()), pad.data(), stride.data(),
                                                  dilation.data(),
                                                  g.mode == 0 ? CUDNN_CONVOLUTION : CUDNN_CROSS_CORRELATION,
                                                  cudnn_compute_type(dtype)));
    KNETCNN_CUDNN(cudnnSetConvolutionGroupCount(desc_, g.group));
    KNETCNN_CUDNN(cudnnSetConvolutionMathType(desc_, cudnn_math_type(dtype, allow_tf32)));
  } catch (...) {
    cudnnDestroyConvolutionDescriptor(desc_);
    throw;
  }
}

ConvolutionDescriptor::~ConvolutionDescriptor() {
  if (desc_) cudnnDestroyConvolutionDescriptor(desc_);
}

ConvolutionDescriptor::ConvolutionDescriptor(ConvolutionDescriptor&& other) noexcept : desc_(other.desc_) {
  other.desc_ = nullptr;
}

void ConvolutionDescriptor::set_math_type(cudnnMathType_t math_type) {
  KNETCNN_CUDNN(cudnnSetConvolutionMathType(desc_, math_type));
}

ConvolutionDescriptor::Readback ConvolutionDescriptor::read() const {
  Readback r;
  int pad[kMaxDims], stride[kMaxDims], dilation[kMaxDims], n = 0;
  KNETCNN_CUDNN(cudnnGetConvolutionNdDescriptor(desc_, kMaxDims - 2, &n, pad, stride, dilation, &r.mode,
                                                &r.compute_type));
  r.padding.assign(pad, pad + n);
  r.stride.assign(stride, stride + n);
  r.dilation.assign(dilation, dilation + n);
  KNETCNN_CUDNN(cudnnGetConvolutionGroupCount(desc_, &r.group_count));
  KNETCNN_CUDNN(cudnnGetConvolutionMathType(desc_, &r.math_type));
  return r;
}

// ---- PoolingDescriptor ----

cudnnPoolingMode_t cudnn_pooling_mode(int mode) {
  switch (mode) {
    case 0: return CUDNN_POOLING_MAX;
    case 1: return CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING;
    case 2: return CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
    case 3: return CUDNN_POOLING_MAX_DETERMINISTIC;
  }
  throw value_error("pooling mode " + std::to_string(mode) + " is not 0, 1, 2 or 3");
}

PoolingDescriptor::PoolingDescriptor(const PoolGeometry& g) {
  const std::vector<int> window = lift_axes(g.window, 1), pad = lift_axes(g.padding, 0),
                         stride = lift_axes(g.stride, 1);
  const cudnnPoolingMode_t mode = cudnn_pooling_mode(g.cudnn_mode);
  KNETCNN_CUDNN(cudnnCreatePoolingDescriptor(&desc_));
  try {
    KNETCNN_CUDNN(cudnnSetPoolingNdDescriptor(desc_, mode, g.nan_opt ? CUDNN_PROPAGATE_NAN : CUDNN_NOT_PROPAGATE_NAN,
                                              static_cast<int>(window.size()), window.data(), pad.data(),
                                              stride.data()));
  } catch (...) {
    cudnnDestroyPoolingDescriptor(desc_);
    throw;
  }
}

PoolingDescriptor::~PoolingDescriptor() {
  if (desc_) cudnnDestroyPoolingDescriptor(desc_);
}

PoolingDescriptor::PoolingDescriptor(PoolingDescriptor&& other) noexcept : desc_(other.desc_) { other.desc_ = nullptr; }

PoolingDescriptor::Readback PoolingDescriptor::read() const {
  Readback r;
  int window[kMaxDims], pad[kMaxDims], stride[kMaxDims], n = 0;
  KNETCNN_CUDNN(cudnnGetPoolingNdDescriptor(desc_, kMaxDims - 2, &r.mode, &r.nan_propagation, &n, window, pad,
                                            stride));
  r.window.assign(window, window + n);
  r.padding.assign(pad, pad + n);
  r.stride.assign(stride, stride + n);
  return r;
}

// ---- bundles ----

ConvDescriptors make_conv_descriptors(const ConvGeometry& g, DType dtype, bool allow_tf32) {
  const char* input_role = g.transposed ? "y (deconv4's result)" : "x";
  const char* output_role = g.transposed ? "x" : "y (conv4's result)";
  return ConvDescriptors{TensorDescriptor(input_role, dtype, g.input), FilterDescriptor(dtype, g.filter),
                         ConvolutionDescriptor(g, dtype, allow_tf32), TensorDescriptor(output_role, dtype, g.output)};
}

Shape cudnn_conv_output_dims(const ConvDescriptors& d) {
  int dims[kMaxDims];
  const int nb = static_cast<int>(d.input.read().dims.size());
  KNETCNN_CUDNN(cudnnGetConvolutionNdForwardOutputDim(d.convolution.get(), d.input.get(), d.filter.get(), nb, dims));
  return Shape(dims, dims + nb);
}

PoolDescriptors make_pool_descriptors(const PoolGeometry& g, DType dtype) {
  const char* input_role = g.transposed ? "y (unpool's result)" : "x";
  const char* output_role = g.transposed ? "x" : "y (pool's result)";
  return PoolDescriptors{TensorDescriptor(input_role, dtype, g.input), PoolingDescriptor(g),
                         TensorDescriptor(output_role, dtype, g.output)};
}

Shape cudnn_pool_output_dims(const PoolDescriptors& d) {
  int dims[kMaxDims];
  const int nb = static_cast<int>(d.input.read().dims.size());
  KNETCNN_CUDNN(cudnnGetPoolingNdForwardOutputDim(d.pooling.get(), d.input.get(), nb, dims));
  return Shape(dims, dims + nb);
}

}  // namespace knetcnn
