#include "cudnn_names.hpp"

namespace knetcnn {
namespace {
std::string unknown(const char* kind, int value) { return std::string(kind) + "(" + std::to_string(value) + ")"; }
}  // namespace

#define KNETCNN_NAME(x) \
  case x:               \
    return #x

std::string data_type_name(cudnnDataType_t value) {
  switch (value) {
    KNETCNN_NAME(CUDNN_DATA_FLOAT);
    KNETCNN_NAME(CUDNN_DATA_DOUBLE);
    KNETCNN_NAME(CUDNN_DATA_HALF);
    KNETCNN_NAME(CUDNN_DATA_BFLOAT16);
    default: return unknown("cudnnDataType_t", value);
  }
}

std::string math_type_name(cudnnMathType_t value) {
  switch (value) {
    KNETCNN_NAME(CUDNN_DEFAULT_MATH);
    KNETCNN_NAME(CUDNN_TENSOR_OP_MATH);
    KNETCNN_NAME(CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
    KNETCNN_NAME(CUDNN_FMA_MATH);
    default: return unknown("cudnnMathType_t", value);
  }
}

std::string convolution_mode_name(cudnnConvolutionMode_t value) {
  switch (value) {
    KNETCNN_NAME(CUDNN_CONVOLUTION);
    KNETCNN_NAME(CUDNN_CROSS_CORRELATION);
    default: return unknown("cudnnConvolutionMode_t", value);
  }
}

std::string pooling_mode_name(cudnnPoolingMode_t value) {
  switch (value) {
    KNETCNN_NAME(CUDNN_POOLING_MAX);
    KNETCNN_NAME(CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING);
    KNETCNN_NAME(CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING);
    KNETCNN_NAME(CUDNN_POOLING_MAX_DETERMINISTIC);
    default: return unknown("cudnnPoolingMode_t", value);
  }
}

std::string nan_propagation_name(cudnnNanPropagation_t value) {
  switch (value) {
    KNETCNN_NAME(CUDNN_NOT_PROPAGATE_NAN);
    KNETCNN_NAME(CUDNN_PROPAGATE_NAN);
    default: return unknown("cudnnNanPropagation_t", value);
  }
}

std::string tensor_format_name(cudnnTensorFormat_t value) {
  switch (value) {
    KNETCNN_NAME(CUDNN_TENSOR_NCHW);
    KNETCNN_NAME(CUDNN_TENSOR_NHWC);
    KNETCNN_NAME(CUDNN_TENSOR_NCHW_VECT_C);
    default: return unknown("cudnnTensorFormat_t", value);
  }
}

#undef KNETCNN_NAME

}  // namespace knetcnn
