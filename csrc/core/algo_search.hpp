// Algorithm policy: which of cuDNN's convolution algorithms qualify, and the search itself.
//
//   heuristic      cudnnGet*Algorithm_v7 (no kernels run); cuDNN's order.
//   benchmark      cudnnFind*AlgorithmEx with our workspace (never the non-Ex Find that allocates
//                  its own); fastest first, run in relaxed capture mode. It writes garbage to the
//                  output: when the call overwrites its output anyway (beta == 0) that is the
//                  caller's output, else a scratch buffer. Refused (CudaError) while the calling
//                  stream captures a CUDA graph. Find runs kernels and synchronizes, which would
//                  break a capture elsewhere on the device: where one is seen (a blocking stream
//                  captures, blocking_capture_on_current_device), or where memory is short (the
//                  largest workspace, or the scratch output, cannot be allocated), nothing is
//                  timed: this call takes cuDNN's heuristic ranking, and the result is marked
//                  provisional (AlgoCache::insert_provisional) so that a later call that finds the
//                  memory free benchmarks properly, while calls in between reuse it instead of
//                  trying again each time.
//   deterministic  cudnnGet*Algorithm_v7 keeping only rows with determinism == CUDNN_DETERMINISTIC.
// A row qualifies when its status is SUCCESS, its workspace fits the limit, it meets the policy's
// determinism rule and its math type keeps the precision policy (fp32 without allow_tf32 takes
// only CUDNN_FMA_MATH rows: DEFAULT and TENSOR_OP math may use TF32 on Ampere and later). Each
// accepted row's workspace is re-queried with its math type applied. The accepted list is cached;
// the first entry runs and the others are the run-time fallbacks.
#pragma once

#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "algo_cache.hpp"
#include "conv_dispatch.hpp"
#include "device_memory.hpp"

namespace knetcnn {

// (math_type_allowed, the precision policy, lives in algo_cache.hpp.)

struct CandidateSelection {
  std::vector<AlgoCandidate> accepted;
  std::vector<std::string> rejected;  // "<algorithm> <math>: why", for the error message
};

// Pure: filters cuDNN's result rows (in cuDNN's order) by the rules above.
CandidateSelection select_candidates(ConvDirection direction, const std::vector<PerfRecord>& results,
                                     AlgoPolicy policy, std::size_t workspace_limit, DType dtype, bool allow_tf32);

// Whether a failed execution may move on to the next cached candidate: NOT_SUPPORTED*,
// BAD_PARAM_MISALIGNED_POINTER (an algorithm that needs more alignment than a pointer has) and
// allocation failures always (nothing ran); EXECUTION_FAILED* only when the output is being
// overwritten (beta == 0), because a half-run kernel may have updated an accumulating output.
bool is_fallback_status(const std::string& status_name, bool output_accumulates);
// Whether a failure says the algorithm cannot run this problem at all, so that a cache entry
// holding it is wrong and may be erased: NOT_SUPPORTED* and BAD_PARAM* (the key carries everything
// they depend on, pointer alignment included). Anything else (EXECUTION_FAILED*, allocation
// failures, internal errors) may not recur: transient, the entry stays.
bool is_stale_status(const std::string& status_name);

struct SearchRequest {
  ConvDirection direction = ConvDirection::Forward;
  AlgoPolicy policy = AlgoPolicy::Heuristic;
  DType dtype = DType::Float32;
  bool allow_tf32 = false;
  std::size_t workspace_limit = 0;
  int device = 0;
  cudaStream_t stream = nullptr;
  CaptureState capture = CaptureState::None;
  std::size_t output_bytes = 0;     // the written tensor's extent: benchmark's scratch output size
  bool output_overwritten = false;  // beta == 0: benchmark may write garbage to p.output itself
};

struct SearchResult {
  std::vector<AlgoCandidate> candidates;
  // False when the benchmark could not run (short memory, a capture on the device) and cuDNN's
  // heuristic ranking stands in: cache it with insert_provisional(retry_free_bytes).
  bool cacheable = true;
  std::size_t retry_free_bytes = 0;  // the free memory the real benchmark needs
};

// Runs the search for `request.policy`; throws CudnnError(CUDNN_STATUS_NOT_SUPPORTED) naming
// every rejected row when nothing qualifies, and CudaError(cudaErrorStreamCaptureUnsupported)
// for a benchmark search during capture.
SearchResult search_conv_algorithms(cudnnHandle_t handle, const SearchRequest& request, const ConvDescriptorRefs& d,
                                    const ConvPointers& p, const std::string& context);

}  // namespace knetcnn
