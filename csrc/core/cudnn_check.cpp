#include "cudnn_check.hpp"

#include "errors.hpp"

namespace knetcnn {
namespace {

// Only the name of the called function, not its argument list.
std::string function_name(const char* function) {
  std::string call = function;
  if (auto paren = call.find('('); paren != std::string::npos) call.resize(paren);
  return call;
}

}  // namespace

std::string cudnn_status_name(cudnnStatus_t status) {
  const char* name = cudnnGetErrorString(status);
  return name ? name : "CUDNN_STATUS_UNKNOWN(" + std::to_string(static_cast<int>(status)) + ")";
}

std::string cudnn_last_error() {
  char buffer[1024] = {0};
  cudnnGetLastErrorString(buffer, sizeof(buffer));
  return buffer;
}

void cudnn_clear_last_error() {
  char buffer[256];
  cudnnGetLastErrorString(buffer, sizeof(buffer));
}

void check_cudnn(cudnnStatus_t status, const char* function, const std::string& context) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  const std::string name = cudnn_status_name(status);
  const std::string call = function_name(function);
  std::string message = call + " failed with " + name;
  if (!context.empty()) message += " [" + context + "]";
  const std::string detail = cudnn_last_error();
  if (!detail.empty()) message += ": " + detail;
  throw CudnnError(static_cast<int>(status), name, call, message);
}

void check_cuda(cudaError_t status, const char* function, const std::string& context) {
  if (status == cudaSuccess) return;
  const char* name = cudaGetErrorName(status);
  const char* text = cudaGetErrorString(status);
  std::string message = function_name(function) + " failed with " + (name ? name : "?") + ": " + (text ? text : "");
  if (!context.empty()) message += " [" + context + "]";
  throw CudaError(static_cast<int>(status), name ? name : "?", message);
}

}  // namespace knetcnn
