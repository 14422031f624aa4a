// Execution options: names, defaults, the per-thread override, the default workspace limit.
#include <gtest/gtest.h>

#include <thread>

#include "errors.hpp"
#include "exec_options.hpp"
#include "workspace.hpp"

using namespace knetcnn;

namespace {

// Restores the defaults and this thread's override when a test ends.
struct OptionsSandbox {
  ExecOptions defaults = default_exec_options();
  ExecOptionsOverride thread = thread_exec_override();
  ~OptionsSandbox() {
    set_default_exec_options(defaults);
    set_thread_exec_override(thread);
  }
};

}  // namespace

TEST(ExecOptions, PolicyNamesRoundTripAndUnknownIsValueError) {
  for (AlgoPolicy p : {AlgoPolicy::Heuristic, AlgoPolicy::Benchmark, AlgoPolicy::Deterministic})
    EXPECT_EQ(algo_policy_from_name(algo_policy_name(p)), p);
  try {
    algo_policy_from_name("fastest");
    FAIL() << "expected an ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.kind(), ArgumentError::Kind::Value);
    EXPECT_NE(std::string(e.what()).find("algo='fastest'"), std::string::npos) << e.what();
  }
}

TEST(ExecOptions, DefaultsAreHeuristicDefaultLimitNoTf32) {
  const ExecOptions o;
  EXPECT_EQ(o.algo, AlgoPolicy::Heuristic);
  EXPECT_FALSE(o.workspace_limit.has_value());
  EXPECT_FALSE(o.allow_tf32);
  EXPECT_EQ(exec_options_to_string(o), "algo=heuristic workspace_limit=default allow_tf32=False");
}

TEST(ExecOptions, ThreadOverrideReplacesOnlyItsFieldsAndFollowsLaterDefaults) {
  OptionsSandbox sandbox;
  set_default_exec_options(ExecOptions{AlgoPolicy::Heuristic, 1000, false});
  ExecOptionsOverride o;
  o.algo = AlgoPolicy::Deterministic;
  set_thread_exec_override(o);
  EXPECT_EQ(effective_exec_options().algo, AlgoPolicy::Deterministic);
  EXPECT_EQ(effective_exec_options().workspace_limit, std::optional<std::size_t>(1000));
  // A later change of the defaults shows through the fields the override leaves alone.
  set_default_exec_options(ExecOptions{AlgoPolicy::Benchmark, 2000, true});
  EXPECT_EQ(effective_exec_options().algo, AlgoPolicy::Deterministic);
  EXPECT_EQ(effective_exec_options().workspace_limit, std::optional<std::size_t>(2000));
  EXPECT_TRUE(effective_exec_options().allow_tf32);
  // Overriding the limit with "the default" (nullopt) beats a default that names bytes.
  o.workspace_limit = std::optional<std::size_t>();
  set_thread_exec_override(o);
  EXPECT_FALSE(effective_exec_options().workspace_limit.has_value());
}

TEST(ExecOptions, OverrideIsPerThread) {
  OptionsSandbox sandbox;
  set_default_exec_options(ExecOptions{});
  ExecOptionsOverride o;
  o.algo = AlgoPolicy::Benchmark;
  o.allow_tf32 = true;
  set_thread_exec_override(o);
  ExecOptions seen_elsewhere;
  std::thread other([&] { seen_elsewhere = effective_exec_options(); });
  other.join();
  EXPECT_EQ(seen_elsewhere.algo, AlgoPolicy::Heuristic);
  EXPECT_FALSE(seen_elsewhere.allow_tf32);
  EXPECT_EQ(effective_exec_options().algo, AlgoPolicy::Benchmark);
}

TEST(ExecOptions, ApplyOverrideIsPure) {
  ExecOptions defaults{AlgoPolicy::Heuristic, 5, false};
  ExecOptionsOverride none;
  const ExecOptions same = apply_override(defaults, none);
  EXPECT_EQ(same.algo, defaults.algo);
  EXPECT_EQ(same.workspace_limit, defaults.workspace_limit);
  ExecOptionsOverride tf32;
  tf32.allow_tf32 = true;
  EXPECT_TRUE(apply_override(defaults, tf32).allow_tf32);
  EXPECT_EQ(apply_override(defaults, tf32).workspace_limit, std::optional<std::size_t>(5));
}

TEST(Workspace, DefaultLimitIsMin256MiBAndAnEighthOfFree) {
  EXPECT_EQ(default_workspace_limit_for(0), 0u);
  EXPECT_EQ(default_workspace_limit_for(8 * kMiB), kMiB);
  EXPECT_EQ(default_workspace_limit_for(std::size_t{80} << 30), 256 * kMiB);  // an 80 GiB GPU
  EXPECT_EQ(default_workspace_limit_for(2048 * kMiB), 256 * kMiB);
  EXPECT_EQ(default_workspace_limit_for(1024 * kMiB), 128 * kMiB);
}

TEST(Workspace, ExplicitLimitNeedsNoDevice) {
  EXPECT_EQ(resolve_workspace_limit(0, std::size_t{12345}), 12345u);
}
