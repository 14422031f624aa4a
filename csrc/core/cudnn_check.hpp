// Turning cuDNN and CUDA runtime statuses into exceptions that say which call failed and why.
#pragma once

#include <string>

#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace knetcnn {

// "CUDNN_STATUS_BAD_PARAM" and so on (cuDNN's own name for the status).
std::string cudnn_status_name(cudnnStatus_t status);
// cuDNN 9's thread-local explanation of the last failure, or "" where it has none.
std::string cudnn_last_error();

// Throws CudnnError naming `function` and adding `context` (shapes, keywords, algorithm...).
void check_cudnn(cudnnStatus_t status, const char* function, const std::string& context = "");
void check_cuda(cudaError_t status, const char* function, const std::string& context = "");

}  // namespace knetcnn

// Keeps the call's own text as the function name in the message.
#define KNETCNN_CUDNN(call) ::knetcnn::check_cudnn((call), #call)
#define KNETCNN_CUDNN_CTX(call, context) ::knetcnn::check_cudnn((call), #call, (context))
