// Turning cuDNN and CUDA runtime statuses into exceptions that say which call failed and why.
#pragma once

#include <string>

#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace knetcnn {

// "CUDNN_STATUS_BAD_PARAM" and so on (cuDNN's own name for the status).
std::string cudnn_status_name(cudnnStatus_t status);
// cuDNN 9's thread-local explanation of the last failure, or "" where it has none. Reading it
// clears it (cuDNN 9 behaviour, checked by test_exec_host.cpp); a successful call does NOT clear
// it, so a message left by an earlier, expected failure would be reported with the next one.
std::string cudnn_last_error();
// Reads and discards that message: called before the cuDNN calls whose failure we report
// (KNETCNN_CUDNN*, each candidate's execution, the start of every exec_* call).
void cudnn_clear_last_error();

// Throws CudnnError naming `function` and adding `context` (shapes, keywords, algorithm...), with
// cuDNN's last-error text. The text is only this call's if cudnn_clear_last_error() ran just
// before the call (the KNETCNN_CUDNN macros do that).
void check_cudnn(cudnnStatus_t status, const char* function, const std::string& context = "");

// The CUDA runtime keeps one "last error" per host thread, shared with every other library in the
// process (CuPy, PyTorch) that uses the same libcudart. A runtime call that fails sets it. We clear
// it only where we set it: `pending` is cudaPeekAtLastError() taken just before our call; if an
// error was already pending there it belongs to someone else and is left alone (our failure may
// have overwritten it; the runtime has no way to put it back).
inline void clear_own_cuda_error(cudaError_t status, cudaError_t pending) {
  if (status != cudaSuccess && pending == cudaSuccess) cudaGetLastError();
}

// Throws CudaError for a failed runtime call. Does not touch the last-error slot: use
// KNETCNN_CUDA(_CTX), which clears the error our call set (and only that).
void check_cuda(cudaError_t status, const char* function, const std::string& context = "");

}  // namespace knetcnn

// Keeps the call's own text as the function name in the message, and clears cuDNN's last-error
// text first so that the message carries this call's explanation, not an older one.
#define KNETCNN_CUDNN(call) \
  ::knetcnn::check_cudnn((::knetcnn::cudnn_clear_last_error(), (call)), #call)
#define KNETCNN_CUDNN_CTX(call, context) \
  ::knetcnn::check_cudnn((::knetcnn::cudnn_clear_last_error(), (call)), #call, (context))

// A CUDA runtime call whose failure throws CudaError; the error it left in the runtime's
// last-error slot is cleared only if the slot was clear before it (see clear_own_cuda_error).
#define KNETCNN_CUDA_CTX(call, context)                                  \
  do {                                                                   \
    const cudaError_t knetcnn_pending_ = cudaPeekAtLastError();          \
    const cudaError_t knetcnn_status_ = (call);                          \
    if (knetcnn_status_ != cudaSuccess) {                                \
      ::knetcnn::clear_own_cuda_error(knetcnn_status_, knetcnn_pending_); \
      ::knetcnn::check_cuda(knetcnn_status_, #call, (context));          \
    }                                                                    \
  } while (0)
#define KNETCNN_CUDA(call) KNETCNN_CUDA_CTX(call, std::string())
