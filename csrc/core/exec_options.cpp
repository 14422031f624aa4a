#include "exec_options.hpp"

#include <mutex>

#include "errors.hpp"

namespace knetcnn {
namespace {

std::mutex& defaults_mutex() {
  static std::mutex m;
  return m;
}

ExecOptions& defaults_storage() {
  static ExecOptions options;
  return options;
}

thread_local ExecOptionsOverride t_override;

}  // namespace

AlgoPolicy algo_policy_from_name(const std::string& name) {
  if (name == "heuristic") return AlgoPolicy::Heuristic;
  if (name == "benchmark") return AlgoPolicy::Benchmark;
  if (name == "deterministic") return AlgoPolicy::Deterministic;
  throw value_error("algo='" + name + "': algo must be 'heuristic', 'benchmark' or 'deterministic'");
}

const char* algo_policy_name(AlgoPolicy policy) {
  switch (policy) {
    case AlgoPolicy::Heuristic: return "heuristic";
    case AlgoPolicy::Benchmark: return "benchmark";
    case AlgoPolicy::Deterministic: return "deterministic";
  }
  return "?";
}

ExecOptions default_exec_options() {
  std::lock_guard<std::mutex> lock(defaults_mutex());
  return defaults_storage();
}

void set_default_exec_options(const ExecOptions& options) {
  std::lock_guard<std::mutex> lock(defaults_mutex());
  defaults_storage() = options;
}

ExecOptionsOverride thread_exec_override() { return t_override; }

void set_thread_exec_override(const ExecOptionsOverride& override_) { t_override = override_; }

ExecOptions apply_override(const ExecOptions& defaults, const ExecOptionsOverride& o) {
  ExecOptions out = defaults;
  if (o.algo) out.algo = *o.algo;
  if (o.workspace_limit) out.workspace_limit = *o.workspace_limit;
  if (o.allow_tf32) out.allow_tf32 = *o.allow_tf32;
  return out;
}

ExecOptions effective_exec_options() { return apply_override(default_exec_options(), t_override); }

std::string exec_options_to_string(const ExecOptions& o) {
  return std::string("algo=") + algo_policy_name(o.algo) + " workspace_limit=" +
         (o.workspace_limit ? std::to_string(*o.workspace_limit) : std::string("default")) +
         " allow_tf32=" + (o.allow_tf32 ? "True" : "False");
}

}  // namespace knetcnn
