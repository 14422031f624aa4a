#include "dtype.hpp"

#include "errors.hpp"

namespace knetcnn {

DType dtype_from_name(const std::string& name) {
  if (name == "float16") return DType::Float16;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  throw ArgumentError(ArgumentError::Kind::Type,
                      "dtype '" + name + "' is not supported: use float16, bfloat16, float32 or float64");
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float16:
    case DType::BFloat16: return 2;
    case DType::Float32: return 4;
    case DType::Float64: return 8;
  }
  return 0;
}

cudnnDataType_t cudnn_data_type(DType dtype) {
  switch (dtype) {
    case DType::Float16: return CUDNN_DATA_HALF;
    case DType::BFloat16: return CUDNN_DATA_BFLOAT16;
    case DType::Float32: return CUDNN_DATA_FLOAT;
    case DType::Float64: return CUDNN_DATA_DOUBLE;
  }
  return CUDNN_DATA_FLOAT;
}

cudnnDataType_t cudnn_compute_type(DType dtype) {
  return dtype == DType::Float64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
}

cudnnMathType_t cudnn_math_type(DType dtype, bool allow_tf32) {
  switch (dtype) {
    case DType::Float16:
    case DType::BFloat16: return CUDNN_TENSOR_OP_MATH;
    case DType::Float32: return allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    case DType::Float64: return CUDNN_DEFAULT_MATH;
  }
  return CUDNN_DEFAULT_MATH;
}

bool scaling_is_double(DType dtype) { return dtype == DType::Float64; }

}  // namespace knetcnn
