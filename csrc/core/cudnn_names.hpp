// cuDNN's enum values by their header names, for read-backs a person can check.
#pragma once

#include <string>

#include <cudnn.h>

namespace knetcnn {

std::string data_type_name(cudnnDataType_t value);
std::string math_type_name(cudnnMathType_t value);
std::string convolution_mode_name(cudnnConvolutionMode_t value);
std::string pooling_mode_name(cudnnPoolingMode_t value);
std::string nan_propagation_name(cudnnNanPropagation_t value);
std::string tensor_format_name(cudnnTensorFormat_t value);

}  // namespace knetcnn
