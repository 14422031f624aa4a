// The execution core's host side, through the real libcudnn where it works without a GPU:
// algorithm selection rules, fallback classification, capture refusal, the descriptors and cache
// keys every op would use (for every dtype and policy), and every error raised before a device is
// needed, ending with the DeviceUnavailable error itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <set>

#include "algo_search.hpp"
#include "conv_exec.hpp"
#include "cudnn_check.hpp"
#include "device_memory.hpp"
#include "errors.hpp"
#include "expect_errors.hpp"
#include "pool_exec.hpp"
#include "runtime_info.hpp"
#include "workspace.hpp"

using namespace knetcnn;

namespace {

ConvOptions conv_opts(int64_t padding, int64_t stride, int64_t dilation, int mode = 0, int group = 1,
                      int64_t output_padding = 0) {
  ConvOptions o;
  o.padding = AxisArg::all(padding);
  o.stride = AxisArg::all(stride);
  o.dilation = AxisArg::all(dilation);
  o.output_padding = AxisArg::all(output_padding);
  o.mode = mode;
  o.group = group;
  return o;
}

PoolOptions pool_opts(int64_t window, int64_t padding, int64_t stride, int mode) {
  PoolOptions o;
  o.window = AxisArg::all(window);
  o.padding = AxisArg::all(padding);
  o.stride = AxisArg::all(stride);
  o.mode = mode;
  return o;
}

// Fake but non-null, distinct, well-separated addresses: nothing is ever read through them.
DeviceTensor fake(std::uintptr_t n, Shape strides = {}) { return DeviceTensor{n << 32, std::move(strides)}; }

PerfRecord row(int algo, cudnnStatus_t status, std::size_t memory, cudnnDeterminism_t det, cudnnMathType_t math) {
  PerfRecord r;
  r.algo = algo;
  r.status = status;
  r.memory = memory;
  r.determinism = det;
  r.math_type = math;
  return r;
}

}  // namespace

// ---- algorithm policy ----

TEST(AlgoSelection, HeuristicTakesSucceedingRowsThatFitInCudnnOrder) {
  const std::vector<PerfRecord> rows = {
      row(1, CUDNN_STATUS_SUCCESS, 1000, CUDNN_NON_DETERMINISTIC, CUDNN_FMA_MATH),
      row(6, CUDNN_STATUS_NOT_SUPPORTED, 0, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH),
      row(2, CUDNN_STATUS_SUCCESS, 1 << 30, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH),
      row(0, CUDNN_STATUS_SUCCESS, 0, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH),
      row(0, CUDNN_STATUS_SUCCESS, 0, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH),  // a repeat
  };
  const CandidateSelection s =
      select_candidates(ConvDirection::Forward, rows, AlgoPolicy::Heuristic, 4096, DType::Float32, false);
  ASSERT_EQ(s.accepted.size(), 2u);
  EXPECT_EQ(s.accepted[0].algo, 1);
  EXPECT_EQ(s.accepted[0].workspace, 1000u);
  EXPECT_EQ(s.accepted[1].algo, 0);
  ASSERT_EQ(s.rejected.size(), 2u);
  EXPECT_NE(s.rejected[0].find("CUDNN_STATUS_NOT_SUPPORTED"), std::string::npos) << s.rejected[0];
  EXPECT_NE(s.rejected[1].find("limit 4096"), std::string::npos) << s.rejected[1];
}

TEST(AlgoSelection, DeterministicKeepsOnlyDeterministicRows) {
  const std::vector<PerfRecord> rows = {
      row(0, CUDNN_STATUS_SUCCESS, 0, CUDNN_NON_DETERMINISTIC, CUDNN_FMA_MATH),
      row(3, CUDNN_STATUS_SUCCESS, 0, CUDNN_NON_DETERMINISTIC, CUDNN_FMA_MATH),
      row(1, CUDNN_STATUS_SUCCESS, 10, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH),
  };
  const CandidateSelection s =
      select_candidates(ConvDirection::BackwardFilter, rows, AlgoPolicy::Deterministic, 100, DType::Float32, false);
  ASSERT_EQ(s.accepted.size(), 1u);
  EXPECT_EQ(s.accepted[0].algo, 1);
  EXPECT_NE(s.rejected[0].find("CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0"), std::string::npos) << s.rejected[0];
  EXPECT_NE(s.rejected[0].find("not deterministic"), std::string::npos);
  // The same rows under heuristic keep cuDNN's order.
  EXPECT_EQ(select_candidates(ConvDirection::BackwardFilter, rows, AlgoPolicy::Heuristic, 100, DType::Float32, false)
                .accepted.size(),
            3u);
}

TEST(AlgoSelection, Fp32WithoutTf32TakesOnlyFmaMath) {
  EXPECT_TRUE(math_type_allowed(DType::Float32, false, CUDNN_FMA_MATH));
  EXPECT_FALSE(math_type_allowed(DType::Float32, false, CUDNN_DEFAULT_MATH));
  EXPECT_FALSE(math_type_allowed(DType::Float32, false, CUDNN_TENSOR_OP_MATH));
  EXPECT_TRUE(math_type_allowed(DType::Float32, true, CUDNN_TENSOR_OP_MATH));
  EXPECT_TRUE(math_type_allowed(DType::Float16, false, CUDNN_TENSOR_OP_MATH));
  EXPECT_TRUE(math_type_allowed(DType::Float16, false, CUDNN_DEFAULT_MATH));
  EXPECT_TRUE(math_type_allowed(DType::Float64, false, CUDNN_DEFAULT_MATH));
  const std::vector<PerfRecord> rows = {row(1, CUDNN_STATUS_SUCCESS, 0, CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH),
                                        row(1, CUDNN_STATUS_SUCCESS, 0, CUDNN_DETERMINISTIC, CUDNN_FMA_MATH)};
  const CandidateSelection s =
      select_candidates(ConvDirection::Forward, rows, AlgoPolicy::Benchmark, 0, DType::Float32, false);
  ASSERT_EQ(s.accepted.size(), 1u);
  EXPECT_EQ(s.accepted[0].math_type, CUDNN_FMA_MATH);
  EXPECT_NE(s.rejected[0].find("TF32"), std::string::npos);
  // With TF32 allowed both qualify, as two distinct (algorithm, math type) candidates.
  EXPECT_EQ(select_candidates(ConvDirection::Forward, rows, AlgoPolicy::Benchmark, 0, DType::Float32, true)
                .accepted.size(),
            2u);
}

TEST(AlgoSelection, FallbackStatusesByName) {
  for (const char* name : {"CUDNN_STATUS_NOT_SUPPORTED", "CUDNN_STATUS_NOT_SUPPORTED_SHAPE",
                           "CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT", "CUDNN_STATUS_ALLOC_FAILED",
                           "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
                           "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"}) {
    EXPECT_TRUE(is_fallback_status(name, false)) << name;
    EXPECT_TRUE(is_fallback_status(name, true)) << name;
  }
  // A failed execution may have half-updated an accumulating output (beta != 0).
  EXPECT_TRUE(is_fallback_status("CUDNN_STATUS_EXECUTION_FAILED", false));
  EXPECT_TRUE(is_fallback_status("CUDNN_STATUS_EXECUTION_FAILED_CUDART", false));
  EXPECT_FALSE(is_fallback_status("CUDNN_STATUS_EXECUTION_FAILED", true));
  for (const char* name : {"CUDNN_STATUS_BAD_PARAM", "CUDNN_STATUS_BAD_PARAM_NULL_POINTER",
                           "CUDNN_STATUS_INTERNAL_ERROR", "CUDNN_STATUS_NOT_INITIALIZED"})
    EXPECT_FALSE(is_fallback_status(name, false)) << name;
  // The real library's names for cuDNN 9's codes, not guesses.
  EXPECT_TRUE(is_fallback_status(cudnn_status_name(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED), true));
  EXPECT_TRUE(is_fallback_status(cudnn_status_name(CUDNN_STATUS_ALLOC_FAILED), true));
  EXPECT_TRUE(is_fallback_status(cudnn_status_name(CUDNN_STATUS_NOT_SUPPORTED_SHAPE), true));
  // An algorithm that needs more alignment than a pointer has: nothing ran, another may accept it.
  EXPECT_TRUE(is_fallback_status(cudnn_status_name(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER), true));
  EXPECT_TRUE(is_fallback_status("CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER", false));
  EXPECT_FALSE(is_fallback_status(cudnn_status_name(CUDNN_STATUS_BAD_PARAM_NULL_POINTER), false));
}

// Review #3: only failures that will recur may erase a cache entry.
TEST(AlgoSelection, OnlyNotSupportedAndBadParamAreStale) {
  for (const char* name : {"CUDNN_STATUS_NOT_SUPPORTED", "CUDNN_STATUS_NOT_SUPPORTED_SHAPE",
                           "CUDNN_STATUS_BAD_PARAM", "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER"})
    EXPECT_TRUE(is_stale_status(name)) << name;
  for (const char* name : {"CUDNN_STATUS_EXECUTION_FAILED", "CUDNN_STATUS_EXECUTION_FAILED_CUDART",
                           "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_INTERNAL_ERROR",
                           "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"})
    EXPECT_FALSE(is_stale_status(name)) << name;
  // The real library's names.
  EXPECT_TRUE(is_stale_status(cudnn_status_name(CUDNN_STATUS_NOT_SUPPORTED_SHAPE)));
  EXPECT_TRUE(is_stale_status(cudnn_status_name(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER)));
  EXPECT_FALSE(is_stale_status(cudnn_status_name(CUDNN_STATUS_EXECUTION_FAILED)));
  EXPECT_FALSE(is_stale_status(cudnn_status_name(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)));
  // Every stale status is also one that moves on to the next candidate, except plain BAD_PARAM
  // (raised at once: an argument knetcnn got wrong, not an algorithm that cannot run).
  EXPECT_TRUE(is_fallback_status(cudnn_status_name(CUDNN_STATUS_NOT_SUPPORTED_SHAPE), true));
}

// Review #2: an invalidated capture, or a capture state the runtime cannot tell, stops the call
// before anything touches the stream, with the runtime's own error code.
TEST(CaptureRefusal, InvalidatedAndUnknownCaptureStatesStopTheCall) {
  EXPECT_NO_THROW(check_capture_usable(CaptureState::None, cudaSuccess, nullptr, 0, "conv4"));
  EXPECT_NO_THROW(check_capture_usable(CaptureState::Active, cudaSuccess, nullptr, 0, "conv4"));
  try {
    check_capture_usable(CaptureState::Invalidated, cudaSuccess, reinterpret_cast<cudaStream_t>(0x1234), 0, "pool");
    FAIL() << "an invalidated capture was accepted";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code(), static_cast<int>(cudaErrorStreamCaptureInvalidated));
    EXPECT_EQ(e.code_name(), "cudaErrorStreamCaptureInvalidated");
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("pool: stream=0x1234", 0), 0u) << m;
    EXPECT_NE(m.find("cudaStreamEndCapture"), std::string::npos) << m;
  }
  try {
    check_capture_usable(CaptureState::Unknown, cudaErrorStreamCaptureImplicit, nullptr, 1, "conv4x");
    FAIL() << "the legacy stream was accepted while a blocking stream captures";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code(), static_cast<int>(cudaErrorStreamCaptureImplicit));
    EXPECT_EQ(e.code_name(), "cudaErrorStreamCaptureImplicit");
    const std::string m = e.what();
    EXPECT_NE(m.find("conv4x: stream=0 (the legacy default stream) on device 1"), std::string::npos) << m;
    EXPECT_NE(m.find("blocking stream"), std::string::npos) << m;
    EXPECT_NE(m.find("cudaStreamNonBlocking"), std::string::npos) << m;  // how to fix it
  }
  try {
    check_capture_usable(CaptureState::Unknown, cudaErrorInvalidResourceHandle, cudaStreamPerThread, 0, "unpool");
    FAIL() << "a stream that cannot be queried was accepted";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code(), static_cast<int>(cudaErrorInvalidResourceHandle));
    EXPECT_NE(std::string(e.what()).find("cudaStreamPerThread"), std::string::npos) << e.what();
  }
}

TEST(CaptureRefusal, OnlyBenchmarkSearchIsRefusedWhileCapturing) {
  for (CaptureState state : {CaptureState::Active, CaptureState::Invalidated, CaptureState::Unknown}) {
    const std::string reason = search_refusal_reason(AlgoPolicy::Benchmark, state);
    EXPECT_NE(reason.find("algo='benchmark'"), std::string::npos) << reason;
    EXPECT_NE(reason.find("cudaStreamIsCapturing"), std::string::npos) << reason;
    EXPECT_NE(reason.find("before capturing"), std::string::npos) << reason;  // how to fix it
    EXPECT_EQ(search_refusal_reason(AlgoPolicy::Heuristic, state), "");
    EXPECT_EQ(search_refusal_reason(AlgoPolicy::Deterministic, state), "");
    EXPECT_TRUE(capture_forbids_sync(state));
  }
  EXPECT_EQ(search_refusal_reason(AlgoPolicy::Benchmark, CaptureState::None), "");
  EXPECT_FALSE(capture_forbids_sync(CaptureState::None));
}

// ---- descriptors and keys for every op, dtype and policy (real libcudnn, host-only) ----

TEST(ConvPlans, EveryOpDtypePolicyBuildsConsistentDescriptors) {
  struct Case {
    const char* name;
    Shape w, x;
    ConvOptions o;
    bool deconv;
  };
  const std::vector<Case> cases = {
      {"2-D padded strided dilated", {8, 3, 3, 3}, {2, 3, 17, 16}, conv_opts(1, 2, 2), false},
      {"1-D cross-correlation", {4, 2, 5}, {3, 2, 20}, conv_opts(2, 3, 1, 1), false},
      {"3-D grouped", {6, 2, 3, 3, 3}, {1, 4, 7, 6, 5}, conv_opts(1, 1, 1, 0, 2), false},
      {"deconv 2-D stride 2", {4, 3, 3, 3}, {2, 4, 5, 5}, conv_opts(1, 2, 1, 0, 1, 1), true},
      {"deconv output_padding >= stride", {4, 3, 3, 3}, {2, 4, 5, 5}, conv_opts(0, 1, 3, 0, 1, 2), true},
      {"deconv 3-D output_padding >= stride", {2, 2, 2, 3, 2}, {1, 2, 3, 4, 3}, conv_opts(1, 2, 4, 1, 1, 3), true},
      {"deconv 1-D grouped", {4, 1, 3}, {2, 4, 6}, conv_opts(0, 2, 1, 0, 2, 1), true},
  };
  std::set<std::string> keys;
  int plans = 0;
  for (const Case& c : cases) {
    const ConvGeometry g = c.deconv ? deconv4_geometry("deconv4", c.w, c.x, c.o) : conv4_geometry("conv4", c.w, c.x, c.o);
    const std::vector<std::string> ops = c.deconv ? std::vector<std::string>{"deconv4", "deconv4w", "deconv4x"}
                                                  : std::vector<std::string>{"conv4", "conv4x", "conv4w"};
    for (const std::string& op : ops)
      for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float32, DType::Float64})
        for (AlgoPolicy policy : {AlgoPolicy::Heuristic, AlgoPolicy::Benchmark, AlgoPolicy::Deterministic})
          for (bool tf32 : {false, true}) {
            ExecOptions options;
            options.algo = policy;
            options.allow_tf32 = tf32;
            const ConvPlan p = plan_conv(op, g, dtype, options, 0, 1 << 20);
            // cuDNN's backward functions need dy == the forward output of (x, w): the plan's y.
            EXPECT_EQ(p.cudnn_forward_dims, lift_shape(p.y_shape)) << c.name << " " << op;
            EXPECT_EQ(p.y_through_temporary, p.y_shape != g.output) << c.name;
            if (tf32 && dtype != DType::Float32) {
              // TF32 only concerns fp32: other types share one key (review: duplicate entries).
              options.allow_tf32 = false;
              EXPECT_EQ(p.key, plan_conv(op, g, dtype, options, 0, 1 << 20).key);
              EXPECT_NE(p.key.find("|tf32=0|"), std::string::npos) << p.key;
            } else {
              EXPECT_TRUE(keys.insert(p.key).second) << "key collision: " << p.key;
            }
            ++plans;
          }
  }
  EXPECT_EQ(plans, 7 * 3 * 4 * 3 * 2);
  EXPECT_EQ(keys.size(), 7u * 3 * (4 + 1) * 3);  // fp32 keys differ by tf32, the others do not
}

TEST(ConvPlans, OpsMapToTheirCudnnDirections) {
  const ConvGeometry c = conv4_geometry("conv4", {4, 3, 3, 3}, {1, 3, 8, 8}, conv_opts(0, 1, 1));
  const ConvGeometry d = deconv4_geometry("deconv4", {3, 4, 3, 3}, {1, 3, 8, 8}, conv_opts(0, 1, 1));
  const ExecOptions o;
  EXPECT_EQ(plan_conv("conv4", c, DType::Float32, o, 0, 0).direction, ConvDirection::Forward);
  EXPECT_EQ(plan_conv("conv4x", c, DType::Float32, o, 0, 0).direction, ConvDirection::BackwardData);
  EXPECT_EQ(plan_conv("conv4w", c, DType::Float32, o, 0, 0).direction, ConvDirection::BackwardFilter);
  EXPECT_EQ(plan_conv("deconv4", d, DType::Float32, o, 0, 0).direction, ConvDirection::BackwardData);
  EXPECT_EQ(plan_conv("deconv4w", d, DType::Float32, o, 0, 0).direction, ConvDirection::BackwardFilter);
  EXPECT_EQ(plan_conv("deconv4x", d, DType::Float32, o, 0, 0).direction, ConvDirection::Forward);
  // deconv4's result is cuDNN's x: (1, 4, 10, 10); its input is cuDNN's y.
  EXPECT_EQ(plan_conv("deconv4", d, DType::Float32, o, 0, 0).x_shape, (Shape{1, 4, 10, 10}));
  EXPECT_EQ(plan_conv("deconv4", d, DType::Float32, o, 0, 0).y_shape, (Shape{1, 3, 8, 8}));
  expect_value_error([&] { plan_conv("conv4", d, DType::Float32, o, 0, 0); }, {"conv4", "built for deconv4"});
  expect_value_error([&] { plan_conv("conv5", c, DType::Float32, o, 0, 0); }, {"op='conv5'"});
}

TEST(ConvPlans, KeysSeparateDilationDeviceStridesAndWorkspace) {
  const ConvGeometry a = conv4_geometry("conv4", {4, 3, 3, 3}, {2, 3, 9, 9}, conv_opts(1, 1, 1));
  const ConvGeometry b = conv4_geometry("conv4", {4, 3, 3, 3}, {2, 3, 9, 9}, conv_opts(1, 1, 2));
  const ExecOptions o;
  const std::string base = plan_conv("conv4", a, DType::Float32, o, 0, 1000).key;
  EXPECT_EQ(base, plan_conv("conv4", a, DType::Float32, o, 0, 1000).key);
  EXPECT_NE(base, plan_conv("conv4", b, DType::Float32, o, 0, 1000).key);  // only dilation differs
  EXPECT_NE(base, plan_conv("conv4", a, DType::Float32, o, 1, 1000).key);  // only the device
  EXPECT_NE(base, plan_conv("conv4", a, DType::Float32, o, 0, 999).key);   // only the limit
  // Only x's strides differ (a padded row pitch): a different problem for cuDNN.
  EXPECT_NE(base, plan_conv("conv4", a, DType::Float32, o, 0, 1000, {300, 100, 10, 1}).key);
  // Explicit packed strides are the same problem as none.
  EXPECT_EQ(base, plan_conv("conv4", a, DType::Float32, o, 0, 1000, {243, 81, 9, 1}, {324, 81, 9, 1}).key);
  // Device arrays from cudaMalloc (256-byte aligned) are keyed as 16-byte aligned.
  EXPECT_NE(base.find("|align=16,16,16"), std::string::npos) << base;
}

TEST(ConvPlans, DeconvOutputPaddingBeyondStrideWidensCudnnsOutput) {
  // s=1, dilation=3, K=3, output_padding=2 on 5: deconv4 gives 5 - 1 + 7 + 2 = 13; cuDNN's forward
  // of 13 gives 7 = 5 + 2 // 1, so dy goes through a 7x7 zero-padded temporary.
  const ConvGeometry g = deconv4_geometry("deconv4", {4, 3, 3, 3}, {2, 4, 5, 5}, conv_opts(0, 1, 3, 0, 1, 2));
  EXPECT_EQ(g.input, (Shape{2, 3, 13, 13}));
  EXPECT_EQ(cudnn_conv_forward_shape(g), (Shape{2, 4, 7, 7}));
  // output_padding < stride needs none.
  const ConvGeometry h = deconv4_geometry("deconv4", {4, 3, 3, 3}, {2, 4, 5, 5}, conv_opts(1, 2, 1, 0, 1, 1));
  EXPECT_EQ(cudnn_conv_forward_shape(h), h.output);
  const ConvGeometry c = conv4_geometry("conv4", {4, 3, 3, 3}, {2, 3, 11, 10}, conv_opts(1, 2, 2));
  EXPECT_EQ(cudnn_conv_forward_shape(c), c.output);
}

TEST(PoolPlans, DeterministicPolicyAndUnpoolScaling) {
  ExecOptions heuristic, deterministic;
  deterministic.algo = AlgoPolicy::Deterministic;
  for (int mode = 0; mode < 4; ++mode) {
    const PoolGeometry g = pool_geometry("pool", {1, 2, 6, 6}, pool_opts(2, 0, 2, mode));
    EXPECT_EQ(effective_pool_mode(g, heuristic), mode);
    EXPECT_EQ(effective_pool_mode(g, deterministic), mode == 0 ? 3 : mode);
    PoolGeometry run = g;
    run.cudnn_mode = effective_pool_mode(g, deterministic);
    for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float32, DType::Float64}) {
      const PoolDescriptors d = make_pool_descriptors(run, dtype);  // real cuDNN descriptors
      EXPECT_EQ(d.pooling.read().mode, cudnn_pooling_mode(run.cudnn_mode));
      EXPECT_EQ(cudnn_pool_output_dims(d), g.output);
    }
    const PoolGeometry u = unpool_geometry("unpool", {1, 2, 3, 3}, pool_opts(2, 0, 2, mode));
    EXPECT_EQ(effective_pool_mode(u, deterministic), u.cudnn_mode);  // always an average mode
    EXPECT_DOUBLE_EQ(unpool_scale(u, 1.0), 4.0);
    EXPECT_DOUBLE_EQ(unpool_scale(u, 0.5), 8.0);
  }
  const PoolGeometry u3 = unpool_geometry("unpool", {1, 1, 2, 2, 2}, pool_opts(3, 1, 2, 1));
  EXPECT_DOUBLE_EQ(unpool_scale(u3, 3.0), 9.0);
}

TEST(Scaling, FloatForHalfBf16FloatAndDoubleForDouble) {
  for (DType t : {DType::Float16, DType::BFloat16, DType::Float32}) {
    const Scaling s(t, 0.1, -2.5);
    EXPECT_EQ(*static_cast<const float*>(s.alpha()), 0.1f);
    EXPECT_EQ(*static_cast<const float*>(s.beta()), -2.5f);
    EXPECT_FALSE(s.beta_is_zero());
  }
  const Scaling d(DType::Float64, 0.1, 0.0);
  EXPECT_EQ(*static_cast<const double*>(d.alpha()), 0.1);
  EXPECT_EQ(*static_cast<const double*>(d.beta()), 0.0);
  EXPECT_TRUE(d.beta_is_zero());
  EXPECT_EQ(layout_bytes({2, 3, 4}, {12, 4, 1}, DType::Float32), 96u);
  EXPECT_EQ(layout_bytes({2, 3, 4}, {24, 8, 1}, DType::Float16), 2u * (24 + 2 * 8 + 3 + 1));
}

// ---- errors raised before any device is needed ----

class ExecErrors : public ::testing::Test {
 protected:
  ConvGeometry conv = conv4_geometry("conv4", {4, 3, 3, 3}, {2, 3, 8, 8}, conv_opts(1, 1, 1));
  ConvGeometry deconv = deconv4_geometry("deconv4", {3, 4, 3, 3}, {2, 3, 8, 8}, conv_opts(1, 1, 1));
  PoolGeometry pool = pool_geometry("pool", {2, 3, 8, 8}, pool_opts(2, 0, 2, 0));
  PoolGeometry unpool = unpool_geometry("unpool", {2, 3, 4, 4}, pool_opts(2, 0, 2, 0));
  ExecTarget target{0, nullptr};
  ExecOptions options;
};

TEST_F(ExecErrors, NullPointersAreRefusedNamingOpAndArgument) {
  expect_value_error([&] { conv4_exec(conv, DType::Float32, fake(0), fake(1), fake(2), 1, 0, target, options); },
                     {"conv4: w", "null device pointer"});
  expect_value_error([&] { conv4x_exec(conv, DType::Float32, fake(1), fake(0), fake(2), 1, 0, target, options); },
                     {"conv4x: dy", "null"});
  expect_value_error([&] { conv4w_exec(conv, DType::Float32, fake(1), fake(2), fake(0), 1, 0, target, options); },
                     {"conv4w: dw", "null"});
  expect_value_error([&] { deconv4_exec(deconv, DType::Float32, fake(1), fake(2), fake(0), 1, 0, target, options); },
                     {"deconv4: y", "null"});
  expect_value_error([&] { deconv4w_exec(deconv, DType::Float32, fake(0), fake(2), fake(3), 1, 0, target, options); },
                     {"deconv4w: x", "null"});
  expect_value_error([&] { deconv4x_exec(deconv, DType::Float32, fake(1), fake(0), fake(3), 1, 0, target, options); },
                     {"deconv4x: dy", "null"});
  expect_value_error([&] { pool_exec(pool, DType::Float32, fake(0), fake(1), 1, 0, target, options); },
                     {"pool: x", "null"});
  expect_value_error(
      [&] { poolx_exec(pool, DType::Float32, fake(1), fake(2), fake(3), fake(0), 1, 0, target, options); },
      {"poolx: dx", "null"});
  expect_value_error([&] { unpool_exec(unpool, DType::Float32, fake(1), fake(0), 1, 0, target, options); },
                     {"unpool: y", "null"});
  expect_value_error([&] { unpoolx_exec(unpool, DType::Float32, fake(0), fake(1), 1, 0, target, options); },
                     {"unpoolx: dy", "null"});
}

// Review #8: an element-misaligned pointer would fault the GPU (a sticky error that ends the
// CUDA context): refused before the device is looked at, naming the op and the argument.
TEST_F(ExecErrors, ElementMisalignedPointersAreRefusedNamingOpAndArgument) {
  const std::uintptr_t base = std::uintptr_t{5} << 32;
  auto at = [](std::uintptr_t address) { return DeviceTensor{address, {}}; };
  expect_value_error([&] { conv4_exec(conv, DType::Float32, fake(1), at(base + 2), fake(3), 1, 0, target, options); },
                     {"conv4: x = 0x500000002", "not a multiple of 4 bytes", "float32", "aligned"});
  expect_value_error([&] { conv4w_exec(conv, DType::Float64, fake(1), fake(2), at(base + 4), 1, 0, target, options); },
                     {"conv4w: dw = 0x500000004", "multiple of 8 bytes", "float64"});
  expect_value_error([&] { deconv4_exec(deconv, DType::Float16, at(base + 1), fake(2), fake(3), 1, 0, target, options); },
                     {"deconv4: w", "multiple of 2 bytes", "float16"});
  expect_value_error([&] { deconv4x_exec(deconv, DType::BFloat16, fake(1), fake(2), at(base + 3), 1, 0, target, options); },
                     {"deconv4x: dx", "multiple of 2 bytes", "bfloat16"});
  expect_value_error([&] { pool_exec(pool, DType::Float32, fake(1), at(base + 6), 1, 0, target, options); },
                     {"pool: y", "multiple of 4 bytes"});
  expect_value_error(
      [&] { poolx_exec(pool, DType::Float32, fake(1), fake(2), at(base + 1), fake(4), 1, 0, target, options); },
      {"poolx: dy", "multiple of 4 bytes"});
  expect_value_error([&] { unpoolx_exec(unpool, DType::Float64, fake(1), at(base + 12), 1, 0, target, options); },
                     {"unpoolx: dx", "multiple of 8 bytes"});
  // Element-aligned but not 16-byte aligned is fine (it reaches the device, or the missing one).
  try {
    conv4_exec(conv, DType::Float32, fake(1), at(base + 4), fake(3), 1, 0, target, options);
  } catch (const ArgumentError& e) {
    EXPECT_EQ(std::string(e.what()).find("not a multiple"), std::string::npos) << e.what();
  } catch (const std::exception&) {
    // DeviceUnavailable here; a device-side refusal of the fake pointers on a GPU machine.
  }
}

TEST_F(ExecErrors, GeometryOfTheOtherKindIsRefused) {
  expect_value_error([&] { conv4_exec(deconv, DType::Float32, fake(1), fake(2), fake(3), 1, 0, target, options); },
                     {"conv4", "conv4_geometry"});
  expect_value_error([&] { deconv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3), 1, 0, target, options); },
                     {"deconv4", "deconv4_geometry"});
  expect_value_error([&] { pool_exec(unpool, DType::Float32, fake(1), fake(2), 1, 0, target, options); },
                     {"pool", "pool_geometry"});
  expect_value_error([&] { unpoolx_exec(pool, DType::Float32, fake(1), fake(2), 1, 0, target, options); },
                     {"unpoolx", "unpool_geometry"});
}

TEST_F(ExecErrors, BadStridesAliasingAndScalings) {
  expect_value_error(
      [&] { conv4_exec(conv, DType::Float32, fake(1), fake(2, {1, 2, 3}), fake(3), 1, 0, target, options); },
      {"conv4: x strides", "do not match"});
  expect_value_error(
      [&] { conv4_exec(conv, DType::Float32, fake(1), fake(2, {-192, 64, 8, 1}), fake(3), 1, 0, target, options); },
      {"x strides", "0..2147483647"});
  // A written tensor whose elements share memory (a broadcast stride) cannot hold a result.
  expect_value_error(
      [&] { conv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3, {0, 64, 8, 1}), 1, 0, target, options); },
      {"conv4: y", "sharing memory"});
  expect_value_error(
      [&] { pool_exec(pool, DType::Float32, fake(1), fake(2, {48, 16, 1, 1}), 1, 0, target, options); },
      {"pool: y", "sharing memory"});
  // Filters have no strides in cuDNN.
  expect_value_error(
      [&] { conv4_exec(conv, DType::Float32, fake(1, {27, 1, 9, 3}), fake(2), fake(3), 1, 0, target, options); },
      {"conv4: w", "C-contiguous"});
  // Output overlapping an input.
  const std::uintptr_t base = std::uintptr_t{7} << 32;
  expect_value_error(
      [&] {
        conv4_exec(conv, DType::Float32, fake(1), DeviceTensor{base, {}}, DeviceTensor{base + 64, {}}, 1, 0, target,
                   options);
      },
      {"conv4: the result y shares memory with the input x"});
  // Over 2^31 elements, or addressing past them: refused before the device is looked at. The
  // geometry refuses such shapes itself, so build a small one and enlarge it by hand: the exec
  // layer must not rely on its callers.
  ConvGeometry big = conv4_geometry("conv4", {1, 1, 1, 1}, {1, 1, 256, 256}, conv_opts(0, 1, 1));
  big.input[0] = big.output[0] = 65536;
  expect_value_error([&] { conv4_exec(big, DType::Float16, fake(1), fake(2), fake(3), 1, 0, target, options); },
                     {"conv4: x", "at most 2147483647 elements"});
  expect_value_error(
      [&] { conv4_exec(conv, DType::Float32, fake(1), fake(2, {1LL << 31, 64, 8, 1}), fake(3), 1, 0, target, options); },
      {"conv4: x", "2147483647"});
  expect_value_error([&] { conv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3), NAN, 0, target, options); },
                     {"conv4: alpha=nan", "finite"});
  expect_value_error(
      [&] { pool_exec(pool, DType::Float32, fake(1), fake(2), 1, INFINITY, target, options); },
      {"pool: beta=inf"});
  expect_value_error([&] { unpool_exec(unpool, DType::Float32, fake(1), fake(2), 0.0, 0, target, options); },
                     {"unpool", "alpha must be non-zero"});
  expect_value_error([&] { unpoolx_exec(unpool, DType::Float32, fake(1), fake(2), 1e-300, 0, target, options); },
                     {"unpoolx", "does not fit"});
  expect_value_error(
      [&] { conv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3), 1, 0, ExecTarget{-1, nullptr}, options); },
      {"device=-1"});
}

TEST_F(ExecErrors, WithoutAGpuEveryOpSaysWhyAndHowToFixIt) {
  const std::string reason = device_unavailable_reason(0);
  if (reason.empty()) GTEST_SKIP() << "a GPU is usable here: the no-device path cannot be exercised";
  std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"conv4", [&] { conv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3), 1, 0, target, options); }},
      {"conv4x", [&] { conv4x_exec(conv, DType::Float16, fake(1), fake(2), fake(3), 1, 0, target, options); }},
      {"conv4w", [&] { conv4w_exec(conv, DType::Float64, fake(1), fake(2), fake(3), 1, 0, target, options); }},
      {"deconv4", [&] { deconv4_exec(deconv, DType::BFloat16, fake(1), fake(2), fake(3), 1, 0, target, options); }},
      {"deconv4w", [&] { deconv4w_exec(deconv, DType::Float32, fake(1), fake(2), fake(3), 1, 0, target, options); }},
      {"deconv4x", [&] { deconv4x_exec(deconv, DType::Float32, fake(1), fake(2), fake(3), 1, 0, target, options); }},
      {"pool", [&] { pool_exec(pool, DType::Float32, fake(1), fake(2), 1, 0, target, options); }},
      {"poolx", [&] { poolx_exec(pool, DType::Float32, fake(1), fake(2), fake(3), fake(4), 2, 0, target, options); }},
      {"unpool", [&] { unpool_exec(unpool, DType::Float32, fake(1), fake(2), 1, 0, target, options); }},
      {"unpoolx", [&] { unpoolx_exec(unpool, DType::Float32, fake(1), fake(2), 1, 0, target, options); }},
  };
  for (auto& [op, call] : calls) {
    try {
      call();
      ADD_FAILURE() << op << " ran without a GPU";
    } catch (const DeviceUnavailable& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("no GPU is usable"), std::string::npos) << op << ": " << message;
      EXPECT_NE(message.find(reason), std::string::npos) << op << ": " << message;
    } catch (const std::exception& e) {
      ADD_FAILURE() << op << " raised something else: " << e.what();
    }
  }
}

// ---- cuDNN's last-error text is cleared before the calls whose failures we report ----

TEST(CudnnLastError, ReadingClearsItAndCheckedCallsDoNotReportAStaleOne) {
  cudnnTensorDescriptor_t desc = nullptr;
  ASSERT_EQ(cudnnCreateTensorDescriptor(&desc), CUDNN_STATUS_SUCCESS);
  const int bad_dims[4] = {-1, 2, 3, 4}, strides[4] = {24, 12, 4, 1};
  // An expected failure elsewhere leaves an explanation behind; a success does not clear it.
  ASSERT_NE(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 4, bad_dims, strides), CUDNN_STATUS_SUCCESS);
  const int good_dims[4] = {1, 2, 3, 4};
  ASSERT_EQ(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 4, good_dims, strides), CUDNN_STATUS_SUCCESS);
  const std::string stale = cudnn_last_error();
  EXPECT_NE(stale.find("-1"), std::string::npos) << "cuDNN kept no message: '" << stale << "'";
  // Reading it cleared it (the behaviour cudnn_clear_last_error relies on).
  EXPECT_EQ(cudnn_last_error(), "");
  ASSERT_NE(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 4, bad_dims, strides), CUDNN_STATUS_SUCCESS);
  cudnn_clear_last_error();
  EXPECT_EQ(cudnn_last_error(), "");

  // A later checked call that fails for another reason reports its own explanation only.
  ASSERT_NE(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 4, bad_dims, strides), CUDNN_STATUS_SUCCESS);
  const int zero_dims[4] = {1, 0, 3, 4};
  try {
    KNETCNN_CUDNN(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 4, zero_dims, strides));
    ADD_FAILURE() << "a zero size was accepted";
  } catch (const CudnnError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find("invalid size -1"), std::string::npos) << "stale explanation: " << message;
    EXPECT_EQ(e.function(), "cudnnSetTensorNdDescriptor");
  }
  cudnnDestroyTensorDescriptor(desc);
}

// ---- ranges and overflow, before any device ----

TEST_F(ExecErrors, ScalingsMustFitTheTypeCudnnReadsThemAs) {
  for (DType t : {DType::Float16, DType::BFloat16, DType::Float32}) {
    expect_value_error([&] { conv4_exec(conv, t, fake(1), fake(2), fake(3), 1e39, 0, target, options); },
                       {"conv4: alpha=1e+39", "as a float", "infinity"});
    expect_value_error([&] { pool_exec(pool, t, fake(1), fake(2), 1, -1e300, target, options); },
                       {"pool: beta=-1e+300", "as a float"});
    expect_value_error([&] { unpoolx_exec(unpool, t, fake(1), fake(2), 1, 4e38, target, options); },
                       {"unpoolx: beta=4e+38"});
  }
  // float's largest value, and one a hair above that rounds down to it, are fine (the device is
  // what is missing next); doubles take the whole double range.
  auto reaches_the_device = [&](std::function<void()> call) {
    try {
      call();
    } catch (const ArgumentError& e) {
      ADD_FAILURE() << "refused: " << e.what();
    } catch (const std::exception&) {
      // DeviceUnavailable here, or a device-side error on a GPU machine (fake pointers).
    }
  };
  reaches_the_device([&] { conv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3), 3.4028234663852886e38, 0, target, options); });
  reaches_the_device([&] { conv4_exec(conv, DType::Float32, fake(1), fake(2), fake(3), 3.40282350e38, 0, target, options); });
  reaches_the_device([&] { conv4_exec(conv, DType::Float64, fake(1), fake(2), fake(3), 1e300, 0, target, options); });
}

TEST(Overflow, LayoutExtentsNeverOverflowSilently) {
  const int64_t big = kMaxDescriptorInt;
  // (2^31 - 2) * (2^31 - 1) three times over is past int64: reported, not wrapped.
  EXPECT_EQ(last_offset({big, big, big, 1}, {big, big, big, 1}), -1);
  EXPECT_EQ(last_offset({2, 3, 4}, {12, 4, 1}), 23);
  EXPECT_EQ(last_offset({2, 3}, {1, -1}), -1);
  expect_value_error([&] { layout_bytes({big, big, big, 1}, {big, big, big, 1}, DType::Float64); }, {"63 bits"});
  // Through an op: x (2^31-1) x 1 x 2^31-1 x 2^31-1 with 2^31-1 strides addresses past int64.
  ConvOptions o;
  ConvGeometry g = conv4_geometry("conv4", {1, 1, 1, 1}, {1, 1, 1, 1}, o);  // enlarged by hand, as above
  g.input = g.output = {big, 1, big, big};
  ExecTarget target{0, nullptr};
  expect_value_error(
      [&] {
        conv4_exec(g, DType::Float32, fake(1), DeviceTensor{std::uintptr_t{2} << 32, {big, big, big, big}}, fake(3), 1, 0,
                   target, ExecOptions{});
      },
      {"conv4: x", "2147483647"});
}

TEST(Overflow, CudnnIntArithmeticIsRefusedByTheGeometry) {
  const int64_t big = kMaxDescriptorInt;
  auto conv = [](int64_t padding, int64_t dilation) {
    ConvOptions o;
    o.padding = AxisArg::all(padding);
    o.dilation = AxisArg::all(dilation);
    return o;
  };
  // X + 2*padding past 2^31 - 1: cuDNN would compute it in an int.
  expect_value_error([&] { conv4_geometry("conv4", {1, 1, 3}, {1, 1, big - 10}, conv(6, 1)); },
                     {"conv4: padding=6", "X + 2*padding must be <= 2147483647", "32-bit"});
  EXPECT_NO_THROW(conv4_geometry("conv4", {1, 1, 3}, {1, 1, big - 10}, conv(5, 1)));
  // The dilated kernel past 2^31 - 1.
  expect_value_error([&] { conv4_geometry("conv4", {1, 1, 3}, {1, 1, 8}, conv(0, int64_t{1} << 30)); },
                     {"conv4: dilation=1073741824", "(K-1)*dilation + 1 must be <= 2147483647"});
  // deconv4: its result is cuDNN's input, and cuDNN pads that.
  ConvOptions d = conv(2, 1);
  expect_value_error([&] { deconv4_geometry("deconv4", {1, 1, 3}, {1, 1, big - 1}, d); },
                     {"deconv4: padding=2", "X + 2*padding"});
  // Pooling and unpooling.
  PoolOptions p = pool_opts(3, 2, 1, 0);
  expect_value_error([&] { pool_geometry("pool", {1, 1, big - 2}, p); }, {"pool: padding=2", "32-bit"});
  PoolOptions u = pool_opts(5, 2, 1, 1);
  expect_value_error([&] { unpool_geometry("unpool", {1, 1, big - 2}, u); }, {"unpool: padding=2", "32-bit"});
}

TEST(Streams, SpecialHandlesNameTheCurrentDevicesStream) {
  EXPECT_TRUE(is_special_stream(nullptr));
  EXPECT_TRUE(is_special_stream(cudaStreamLegacy));
  EXPECT_TRUE(is_special_stream(cudaStreamPerThread));
  EXPECT_FALSE(is_special_stream(reinterpret_cast<cudaStream_t>(std::uintptr_t{0x5555000})));
  // Without a driver the check has nothing to ask and must not throw for the special handles.
  EXPECT_NO_THROW(check_stream_device(nullptr, 0));
  EXPECT_NO_THROW(check_stream_device(cudaStreamPerThread, 3));
}

// Review #5: the pool's release threshold follows the workspace limit, but never past a quarter
// of the device, whatever limit a call names.
TEST(PoolRetention, CappedAtAQuarterOfTheDeviceWithA64MiBFloor) {
  constexpr std::size_t GiB = std::size_t{1} << 30;
  EXPECT_EQ(pool_retention_for(0, 80 * GiB), kMinPoolRetention);
  EXPECT_EQ(pool_retention_for(std::size_t{16} << 20, 80 * GiB), kMinPoolRetention);
  EXPECT_EQ(pool_retention_for(GiB, 80 * GiB), 2 * GiB);
  EXPECT_EQ(pool_retention_for(4 * 80 * GiB, 80 * GiB), 20 * GiB);  // a limit of 4x the device
  EXPECT_EQ(pool_retention_for(SIZE_MAX, 80 * GiB), 20 * GiB);      // no overflow
  EXPECT_EQ(pool_retention_for(GiB, 0), kMinPoolRetention);         // unknown size: the floor
}

// Review #11: releasing idle buffers is exception-safe: a buffer whose device cannot be made
// current (here: no driver) is kept for the next release, and the others are still tried.
TEST(DeviceMemoryRelease, AFailingBufferNeitherThrowsNorLosesTheOthers) {
  if (device_unavailable_reason(0).empty()) GTEST_SKIP() << "a GPU is usable here: fake buffers cannot be adopted";
  test_hooks::adopt_idle_buffer(0, reinterpret_cast<void*>(std::uintptr_t{1} << 40), 4096);
  test_hooks::adopt_idle_buffer(3, reinterpret_cast<void*>(std::uintptr_t{2} << 40), 8192);
  EXPECT_EQ(stream_pool_stats().idle_buffers, 2u);
  EXPECT_NO_THROW(release_workspaces());  // no device to ask about captures, none to free on
  const PoolStats after = stream_pool_stats();
  EXPECT_EQ(after.idle_buffers, 2u);  // both kept: neither leaked by an exception halfway
  EXPECT_EQ(after.idle_bytes, 4096u + 8192u);
  EXPECT_EQ(workspace_stats().bytes, 4096u + 8192u);
  test_hooks::forget_idle_buffers();
  EXPECT_EQ(workspace_stats().buffers, 0u);
}
