// Element types knetcnn accepts, and what cuDNN is told for each.
#pragma once

#include <cstddef>
#include <string>

#include <cudnn.h>

namespace knetcnn {

enum class DType { Float16, BFloat16, Float32, Float64 };

// "float16", "bfloat16", "float32", "float64"; anything else is a TypeError.
DType dtype_from_name(const std::string& name);
const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

cudnnDataType_t cudnn_data_type(DType dtype);
// Convolution compute type: half and bfloat16 accumulate in FLOAT (TRUE_HALF is NOT_SUPPORTED
// for 3-D and many wgrad shapes), float in FLOAT, double in DOUBLE.
cudnnDataType_t cudnn_compute_type(DType dtype);
// Math type: float uses FMA math unless TF32 is allowed (then DEFAULT, which permits TF32
// tensor cores); half/bfloat16 use tensor-op math; double uses DEFAULT.
cudnnMathType_t cudnn_math_type(DType dtype, bool allow_tf32);
// alpha/beta are passed to cuDNN as double for double tensors and as float otherwise.
bool scaling_is_double(DType dtype);

}  // namespace knetcnn
