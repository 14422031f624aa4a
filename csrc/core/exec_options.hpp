// Execution settings the cuDNN core reads on every call: the algorithm policy, the workspace
// limit and whether fp32 convolutions may use TF32 tensor cores.
//
// Two layers: process-wide defaults (mutex-protected) and a per-thread override on top of them.
// A thread's override holds only the fields it sets; the others follow the defaults, even when
// the defaults change later. Python's `knetcnn.options(...)` sets the defaults; used as a context
// manager it installs a thread override instead (python/knetcnn/options.py). Python threads are OS
// threads, so a C++ thread_local is the right scope for them.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace knetcnn {

// How a convolution algorithm is chosen (see algo_search.hpp).
enum class AlgoPolicy {
  Heuristic,      // cudnnGet*Algorithm_v7: cuDNN's ranking, no kernels run (the default)
  Benchmark,      // cudnnFind*AlgorithmEx: time the candidates once per configuration
  Deterministic,  // cuDNN's ranking restricted to CUDNN_DETERMINISTIC algorithms; max pooling
                  // runs as CUDNN_POOLING_MAX_DETERMINISTIC
};

// "heuristic", "benchmark", "deterministic"; anything else is a ValueError naming the option.
AlgoPolicy algo_policy_from_name(const std::string& name);
const char* algo_policy_name(AlgoPolicy policy);

struct ExecOptions {
  AlgoPolicy algo = AlgoPolicy::Heuristic;
  // Largest workspace a convolution may use, in bytes. nullopt: min(256 MiB, free memory / 8),
  // measured once per device (see workspace.hpp).
  std::optional<std::size_t> workspace_limit;
  bool allow_tf32 = false;
};

// A thread's override: only the fields that are set replace the defaults.
struct ExecOptionsOverride {
  std::optional<AlgoPolicy> algo;
  // Set and holding nullopt means "the default limit", overriding a default that names bytes.
  std::optional<std::optional<std::size_t>> workspace_limit;
  std::optional<bool> allow_tf32;
};

ExecOptions default_exec_options();
void set_default_exec_options(const ExecOptions& options);

ExecOptionsOverride thread_exec_override();
void set_thread_exec_override(const ExecOptionsOverride& override_);

// The defaults with this thread's override applied: what a call made now uses.
ExecOptions effective_exec_options();
ExecOptions apply_override(const ExecOptions& defaults, const ExecOptionsOverride& override_);

// "algo=heuristic workspace_limit=default allow_tf32=False": for error messages.
std::string exec_options_to_string(const ExecOptions& options);

}  // namespace knetcnn
