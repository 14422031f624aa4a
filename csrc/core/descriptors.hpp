// RAII owners of cuDNN's legacy descriptors, made from the core's geometry.
//
// cuDNN wants at least 4 tensor dimensions, so 1-D problems are lifted to 2-D with a singleton
// axis before the spatial one: (N, C, W) -> (N, C, 1, W), keywords (k,) -> (1 or 0, k).
// cuDNN does not null-check or range-check much, so every value is validated here first.
#pragma once

#include <vector>

#include <cudnn.h>

#include "dtype.hpp"
#include "geometry.hpp"

namespace knetcnn {

// (N, C, W) -> (N, C, 1, W); 4-D and 5-D shapes are returned unchanged.
Shape lift_shape(const Shape& shape);
// Per-axis values of a 1-D problem get `fill` in front; 2-D and 3-D are unchanged.
std::vector<int> lift_axes(const std::vector<int64_t>& values, int fill);
// C-order element strides of `shape`.
Shape packed_strides(const Shape& shape);
// Size-1 axes get the stride a packed layout would give them: their stride is never used to
// address memory, but some cuDNN kernels reject unusual values there.
Shape normalized_strides(const Shape& shape, const Shape& strides);

class TensorDescriptor {
 public:
  struct Readback {
    cudnnDataType_t data_type;
    std::vector<int> dims, strides;
  };
  // `role` names the tensor in error messages ("x", "dy", ...). Strides are in elements; an empty
  // `strides` means C-contiguous.
  TensorDescriptor(const char* role, DType dtype, const Shape& shape, const Shape& strides = {});
  ~TensorDescriptor();
  TensorDescriptor(TensorDescriptor&& other) noexcept;
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(TensorDescriptor&&) = delete;

  cudnnTensorDescriptor_t get() const { return desc_; }
  Readback read() const;

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

class FilterDescriptor {
 public:
  struct Readback {
    cudnnDataType_t data_type;
    cudnnTensorFormat_t format;
    std::vector<int> dims;
  };
  FilterDescriptor(DType dtype, const Shape& shape);
  ~FilterDescriptor();
  FilterDescriptor(FilterDescriptor&& other) noexcept;
  FilterDescriptor(const FilterDescriptor&) = delete;
  FilterDescriptor& operator=(const FilterDescriptor&) = delete;
  FilterDescriptor& operator=(FilterDescriptor&&) = delete;

  cudnnFilterDescriptor_t get() const { return desc_; }
  Readback read() const;

 private:
  cudnnFilterDescriptor_t desc_ = nullptr;
};

class ConvolutionDescriptor {
 public:
  struct Readback {
    std::vector<int> padding, stride, dilation;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute_type;
    int group_count;
    cudnnMathType_t math_type;
  };
  ConvolutionDescriptor(const ConvGeometry& geometry, DType dtype, bool allow_tf32);
  ~ConvolutionDescriptor();
  ConvolutionDescriptor(ConvolutionDescriptor&& other) noexcept;
  ConvolutionDescriptor(const ConvolutionDescriptor&) = delete;
  ConvolutionDescriptor& operator=(const ConvolutionDescriptor&) = delete;
  ConvolutionDescriptor& operator=(ConvolutionDescriptor&&) = delete;

  // The algorithm search returns the math type each algorithm ran with; it must be applied.
  void set_math_type(cudnnMathType_t math_type);
  cudnnConvolutionDescriptor_t get() const { return desc_; }
  Readback read() const;

 private:
  cudnnConvolutionDescriptor_t desc_ = nullptr;
};

class PoolingDescriptor {
 public:
  struct Readback {
    cudnnPoolingMode_t mode;
    cudnnNanPropagation_t nan_propagation;
    std::vector<int> window, padding, stride;
  };
  explicit PoolingDescriptor(const PoolGeometry& geometry);
  ~PoolingDescriptor();
  PoolingDescriptor(PoolingDescriptor&& other) noexcept;
  PoolingDescriptor(const PoolingDescriptor&) = delete;
  PoolingDescriptor& operator=(const PoolingDescriptor&) = delete;
  PoolingDescriptor& operator=(PoolingDescriptor&&) = delete;

  cudnnPoolingDescriptor_t get() const { return desc_; }
  Readback read() const;

 private:
  cudnnPoolingDescriptor_t desc_ = nullptr;
};

cudnnPoolingMode_t cudnn_pooling_mode(int mode);

// Everything one convolution call hands cuDNN, in forward terms (see ConvGeometry).
struct ConvDescriptors {
  TensorDescriptor input;
  FilterDescriptor filter;
  ConvolutionDescriptor convolution;
  TensorDescriptor output;
};
ConvDescriptors make_conv_descriptors(const ConvGeometry& geometry, DType dtype, bool allow_tf32);
// cudnnGetConvolutionNdForwardOutputDim for these descriptors (lifted rank).
Shape cudnn_conv_output_dims(const ConvDescriptors& descriptors);

struct PoolDescriptors {
  TensorDescriptor input;
  PoolingDescriptor pooling;
  TensorDescriptor output;
};
PoolDescriptors make_pool_descriptors(const PoolGeometry& geometry, DType dtype);
// cudnnGetPoolingNdForwardOutputDim for these descriptors (lifted rank).
Shape cudnn_pool_output_dims(const PoolDescriptors& descriptors);

}  // namespace knetcnn
