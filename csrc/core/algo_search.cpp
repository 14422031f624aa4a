#include "algo_search.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>

#include "cudnn_check.hpp"
#include "cudnn_names.hpp"
#include "errors.hpp"
#include "workspace.hpp"

namespace knetcnn {
namespace {

std::string row_name(ConvDirection direction, int algo, cudnnMathType_t math) {
  return conv_algo_name(direction, algo) + " " + math_type_name(math);
}

bool starts_with(const std::string& text, const char* prefix) { return text.rfind(prefix, 0) == 0; }

[[noreturn]] void throw_nothing_qualifies(const SearchRequest& r, const CandidateSelection& s,
                                          const std::string& context) {
  std::string message = std::string("no cuDNN algorithm qualifies for ") + conv_direction_name(r.direction) +
                        " under algo='" + algo_policy_name(r.policy) + "', workspace_limit=" +
                        std::to_string(r.workspace_limit) + " bytes, allow_tf32=" +
                        (r.allow_tf32 ? "True" : "False") + " [" + context + "]";
  if (s.rejected.empty()) {
    message += ": cuDNN returned no algorithm";
  } else {
    message += ": ";
    for (std::size_t i = 0; i < s.rejected.size(); ++i) message += (i ? "; " : "") + s.rejected[i];
  }
  message += ". If a workspace limit excluded them, raise it with knetcnn.options(workspace_limit=...)";
  throw CudnnError(static_cast<int>(CUDNN_STATUS_NOT_SUPPORTED), cudnn_status_name(CUDNN_STATUS_NOT_SUPPORTED),
                   "algorithm search", message);
}

// The largest workspace any algorithm needs for these descriptors, up to `limit`: what the
// benchmark search is given, so that it can time every algorithm that fits.
std::size_t benchmark_workspace(cudnnHandle_t handle, ConvDirection direction, const ConvDescriptorRefs& d,
                                std::size_t limit) {
  std::size_t largest = 0;
  for (int algo = 0; algo < conv_algo_count(direction); ++algo) {
    std::size_t bytes = 0;
    if (conv_workspace_size(handle, direction, d, algo, &bytes) == CUDNN_STATUS_SUCCESS && bytes <= limit)
      largest = std::max(largest, bytes);
  }
  return largest;
}

}  // namespace

CandidateSelection select_candidates(ConvDirection direction, const std::vector<PerfRecord>& results,
                                     AlgoPolicy policy, std::size_t workspace_limit, DType dtype, bool allow_tf32) {
  CandidateSelection s;
  for (const PerfRecord& r : results) {
    const std::string name = row_name(direction, r.algo, r.math_type);
    if (r.status != CUDNN_STATUS_SUCCESS) {
      s.rejected.push_back(name + ": " + cudnn_status_name(r.status));
    } else if (r.algo < 0 || r.algo >= conv_algo_count(direction)) {
      s.rejected.push_back(name + ": unknown algorithm");
    } else if (r.memory > workspace_limit) {
      s.rejected.push_back(name + ": needs " + std::to_string(r.memory) + " bytes of workspace, limit " +
                           std::to_string(workspace_limit));
    } else if (policy == AlgoPolicy::Deterministic && r.determinism != CUDNN_DETERMINISTIC) {
      s.rejected.push_back(name + ": not deterministic");
    } else if (!math_type_allowed(dtype, allow_tf32, r.math_type)) {
      s.rejected.push_back(name + ": may use TF32 (allow_tf32=False)");
    } else if (std::any_of(s.accepted.begin(), s.accepted.end(), [&](const AlgoCandidate& c) {
                 return c.algo == r.algo && c.math_type == r.math_type;
               })) {
      // cuDNN lists an (algorithm, math type) pair once; a repeat adds nothing.
    } else {
      s.accepted.push_back(AlgoCandidate{r.algo, r.math_type, r.memory});
    }
  }
  return s;
}

bool is_stale_status(const std::string& name) {
  return starts_with(name, "CUDNN_STATUS_NOT_SUPPORTED") || starts_with(name, "CUDNN_STATUS_BAD_PARAM");
}

bool is_fallback_status(const std::string& name, bool output_accumulates) {
  if (starts_with(name, "CUDNN_STATUS_NOT_SUPPORTED")) return true;
  if (name == "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER") return true;
  // cuDNN 8's ALLOC_FAILED; cuDNN 9's INTERNAL_ERROR_{HOST,DEVICE}_ALLOCATION_FAILED.
  if (name == "CUDNN_STATUS_ALLOC_FAILED" || name.find("ALLOCATION_FAILED") != std::string::npos) return true;
  if (starts_with(name, "CUDNN_STATUS_EXECUTION_FAILED")) return !output_accumulates;
  return false;
}

SearchResult search_conv_algorithms(cudnnHandle_t handle, const SearchRequest& r, const ConvDescriptorRefs& d,
                                    const ConvPointers& p, const std::string& context) {
  const std::string refusal = search_refusal_reason(r.policy, r.capture);
  if (!refusal.empty())
    throw CudaError(static_cast<int>(cudaErrorStreamCaptureUnsupported), "cudaErrorStreamCaptureUnsupported",
                    refusal + " [" + context + "]");
  // Search under the precision policy's own math type; each result then says which it used.
  d.conv.set_math_type(cudnn_math_type(r.dtype, r.allow_tf32));
  SearchResult result;
  std::vector<PerfRecord> results;
  if (r.policy == AlgoPolicy::Benchmark) {
    // Find runs and synchronizes: not while a capture elsewhere on the device could see it.
    bool timed = !blocking_capture_on_current_device();
    const std::size_t wanted = benchmark_workspace(handle, r.direction, d, r.workspace_limit);
    const std::size_t scratch_bytes = r.output_overwritten ? 0 : r.output_bytes;
    std::optional<Workspace> workspace;
    std::optional<DeviceScratch> scratch;
    ConvPointers search = p;
    if (timed) {
      try {
        workspace.emplace(r.device, r.stream, wanted, r.capture);
        // Find writes every algorithm's garbage to the output: the caller's is fine when the call
        // overwrites it afterwards (beta == 0); otherwise a scratch buffer.
        if (!r.output_overwritten) {
          scratch.emplace(r.output_bytes, r.device, r.stream, r.capture, "benchmark search's scratch output");
          search.output = scratch->get();
        }
      } catch (const CudaError& e) {
        if (!is_out_of_memory(e.code())) throw;
        timed = false;  // no room to time every algorithm that fits the limit
      }
    }
    if (timed && workspace->size() < wanted) timed = false;  // never for a fresh allocation
    if (timed) {
      RelaxedCaptureMode relaxed;  // (eager: the stream is not capturing, search_refusal_reason)
      results = conv_benchmark_results(handle, r.direction, d, search, workspace->get(), workspace->size(), context);
    } else {
      workspace.reset();
      scratch.reset();
      result.cacheable = false;
      result.retry_free_bytes = wanted > SIZE_MAX - scratch_bytes ? SIZE_MAX : wanted + scratch_bytes;
      results = conv_heuristic_results(handle, r.direction, d, context);
    }
  } else {
    results = conv_heuristic_results(handle, r.direction, d, context);
  }
  CandidateSelection s = select_candidates(r.direction, results, r.policy, r.workspace_limit, r.dtype, r.allow_tf32);
  // The workspace an algorithm needs depends on the math type it runs with: ask again with it set.
  std::vector<AlgoCandidate> checked;
  for (AlgoCandidate c : s.accepted) {
    d.conv.set_math_type(c.math_type);
    std::size_t bytes = 0;
    const cudnnStatus_t status = conv_workspace_size(handle, r.direction, d, c.algo, &bytes);
    const std::string name = row_name(r.direction, c.algo, c.math_type);
    if (status != CUDNN_STATUS_SUCCESS) {
      s.rejected.push_back(name + ": workspace query gave " + cudnn_status_name(status));
      continue;
    }
    c.workspace = std::max(c.workspace, bytes);
    if (c.workspace > r.workspace_limit) {
      s.rejected.push_back(name + ": needs " + std::to_string(c.workspace) + " bytes of workspace, limit " +
                           std::to_string(r.workspace_limit));
      continue;
    }
    checked.push_back(c);
  }
  d.conv.set_math_type(cudnn_math_type(r.dtype, r.allow_tf32));
  if (checked.empty()) {
    s.accepted.clear();
    throw_nothing_qualifies(r, s, context);
  }
  result.candidates = std::move(checked);
  return result;
}

}  // namespace knetcnn
