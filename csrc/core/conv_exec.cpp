#include "conv_exec.hpp"

#include <algorithm>
#include <optional>

#include "algo_cache.hpp"
#include "algo_search.hpp"
#include "conv_dispatch.hpp"
#include "cudnn_check.hpp"
#include "cudnn_names.hpp"
#include "errors.hpp"
#include "test_hooks.hpp"
#include "workspace.hpp"

namespace knetcnn {
namespace {

TensorLayout read_layout(const TensorDescriptor& d) {
  const auto r = d.read();
  return TensorLayout{Shape(r.dims.begin(), r.dims.end()), Shape(r.strides.begin(), r.strides.end())};
}

// The cache key's fields, read back from the descriptors cuDNN is given (so the key describes
// exactly what cuDNN sees) plus the options and the resolved workspace limit.
ConvProblem conv_problem(ConvDirection direction, const ConvGeometry& g, DType dtype, const TensorDescriptor& xd,
                         const Shape& w_shape, const TensorDescriptor& yd, const ExecOptions& options, int device,
                         std::size_t workspace_limit) {
  ConvProblem problem;
  problem.device = device;
  problem.direction = direction;
  problem.dtype = dtype;
  problem.x = read_layout(xd);
  problem.w = TensorLayout{lift_shape(w_shape), packed_strides(lift_shape(w_shape))};
  problem.y = read_layout(yd);
  problem.padding = lift_axes(g.padding, 0);
  problem.stride = lift_axes(g.stride, 1);
  problem.dilation = lift_axes(g.dilation, 1);
  problem.group = g.group;
  problem.mode = g.mode;
  // TF32 only concerns fp32 data: other types' keys do not depend on it (no duplicate entries).
  problem.allow_tf32 = dtype == DType::Float32 && options.allow_tf32;
  problem.policy = options.algo;
  problem.workspace_limit = workspace_limit;
  return problem;
}

// What became of the candidates of the last list tried, by kind of failure (the counts restart
// with each list; the text keeps every attempt).
struct Tally {
  std::string tries;                 // "algo=... : why; ..." for the message
  int stale = 0;                     // failures that will recur: the entry is wrong for this problem
  int transient = 0;                 // failures that may not recur (EXECUTION_FAILED*, cuDNN allocations)
  int out_of_memory = 0;             // the workspace could not be allocated now
  int capture_blocked = 0;           // the workspace cannot be allocated during graph capture
  cudnnStatus_t last_status = CUDNN_STATUS_NOT_SUPPORTED;
  std::string last_detail;           // cuDNN's explanation of the last failed execution
  std::string last_allocation;       // the last allocation failure's message
  void add(const std::string& algo, const std::string& why) { tries += (tries.empty() ? "" : "; ") + algo + ": " + why; }
  void failed_with(cudnnStatus_t status) {
    ++(is_stale_status(cudnn_status_name(status)) ? stale : transient);
    last_status = status;
  }
  bool only_stale() const { return transient + out_of_memory + capture_blocked == 0; }
};

// Free device memory (cudaMemGetInfo), 0 if unknown. `device` is current.
std::size_t free_device_memory() {
  std::size_t free_bytes = 0, total_bytes = 0;
  RelaxedCaptureMode relaxed;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaMemGetInfo(&free_bytes, &total_bytes);
  clear_own_cuda_error(status, pending);
  return status == cudaSuccess ? free_bytes : 0;
}

// Runs one cuDNN convolution direction on operands whose shapes are exactly what cuDNN expects
// (`y.shape` is cuDNN's forward output shape). Chooses the algorithm (cache, else search per the
// policy), then runs the candidates in order until one succeeds.
//
// The cache changes only outside graph capture, and only for failures that will recur
// (is_stale_status): a failure during capture may be the capture's own doing, and a transient one
// (an execution or allocation failure) says nothing about the entry.
void run_convolution(const ExecScope& scope, ConvDirection direction, const ConvGeometry& g, DType dtype,
                     const Operand& x, const Operand& w, const Operand& y, double alpha, double beta,
                     const ExecOptions& options, const std::string& context) {
  const TensorDescriptor xd(x.role, dtype, x.shape, x.strides);
  const FilterDescriptor wd(dtype, w.shape);
  ConvolutionDescriptor cd(g, dtype, options.allow_tf32);
  const TensorDescriptor yd(y.role, dtype, y.shape, y.strides);
  const ConvDescriptorRefs d{xd, wd, cd, yd};

  ConvPointers p;
  p.x = x.data;
  p.w = w.data;
  p.y = y.data;
  const Operand& written = direction == ConvDirection::Forward        ? y
                           : direction == ConvDirection::BackwardData ? x
                                                                      : w;
  p.output = written.data;

  const int device = scope.device();
  cudaStream_t stream = scope.stream();
  const CaptureState capture = scope.capture();  // None or Active (ExecScope refuses the rest)
  const bool eager = capture == CaptureState::None;
  const std::size_t limit = resolve_workspace_limit(device, options.workspace_limit);
  ConvProblem problem = conv_problem(direction, g, dtype, xd, w.shape, yd, options, device, limit);
  problem.x_align = pointer_alignment(p.x);
  problem.w_align = pointer_alignment(p.w);
  problem.y_align = pointer_alignment(p.y);
  const std::string key = conv_algo_key(problem);
  const Scaling scaling(dtype, alpha, beta);

  // A search during capture is the heuristic or deterministic one (benchmark is refused): cuDNN's
  // ranking, no kernels run, nothing allocated, under the full limit. Its result is cached like
  // any other where no entry exists; a benchmark that could not time anything is cached as
  // provisional. `may_cache` false: the result serves this call only.
  auto search = [&](bool may_cache) {
    SearchRequest request;
    request.direction = direction;
    request.policy = options.algo;
    request.dtype = dtype;
    request.allow_tf32 = options.allow_tf32;
    request.workspace_limit = limit;
    request.device = device;
    request.stream = stream;
    request.capture = capture;
    request.output_bytes = layout_bytes(written.shape, written.strides, dtype);
    request.output_overwritten = scaling.beta_is_zero();
    SearchResult found = search_conv_algorithms(scope.handle(), request, d, p, context);
    if (may_cache) {
      if (found.cacheable)
        algo_cache().insert(key, found.candidates);
      else
        algo_cache().insert_provisional(key, found.candidates, found.retry_free_bytes);
    }
    return found.candidates;
  };

  const char* function = conv_execute_function(direction);
  Tally tally;
  // Runs the candidates in order; true once one succeeded. Statuses that mean "this algorithm
  // cannot run here" move on to the next; any other failure raises at once.
  auto run_candidates = [&](const std::vector<AlgoCandidate>& candidates) {
    tally.stale = tally.transient = tally.out_of_memory = tally.capture_blocked = 0;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const AlgoCandidate& c = candidates[i];
      const std::string algo_text = "algo=" + conv_algo_name(direction, c.algo) + " math=" +
                                    math_type_name(c.math_type) + " workspace=" + std::to_string(c.workspace) +
                                    " bytes";
      // An entry may come from a file or another binding: hold it to this call's rules.
      const std::string violation =
          candidate_violation(direction, c, dtype, options.allow_tf32, options.algo, limit);
      if (!violation.empty()) {
        ++tally.stale;
        tally.add(algo_text, "refused: " + violation);
        continue;
      }
      // The math type is part of the algorithm choice (cuDNN >= 7.4): apply the one found with it,
      // and ask cuDNN what the algorithm needs with it now: a cached size is only a record.
      cd.set_math_type(c.math_type);
      std::size_t queried = 0;
      cudnn_clear_last_error();
      const cudnnStatus_t size_status = conv_workspace_size(scope.handle(), direction, d, c.algo, &queried);
      if (size_status != CUDNN_STATUS_SUCCESS) {
        tally.failed_with(size_status);
        tally.last_detail = cudnn_last_error();
        tally.add(algo_text, "workspace query gave " + cudnn_status_name(size_status));
        continue;
      }
      const std::size_t needed = std::max(c.workspace, queried);
      if (needed > limit) {
        ++tally.stale;
        tally.add(algo_text, "needs " + std::to_string(needed) + " bytes of workspace, above workspace_limit=" +
                                 std::to_string(limit));
        continue;
      }
      std::optional<Workspace> workspace;
      try {
        workspace.emplace(device, stream, needed, capture);
      } catch (const CudaError& e) {
        if (is_out_of_memory(e.code())) {
          ++tally.out_of_memory;
          tally.last_allocation = e.what();
          tally.add(algo_text, "allocating " + std::to_string(needed) + " bytes of workspace failed");
        } else if (e.code() == static_cast<int>(cudaErrorStreamCaptureUnsupported)) {
          ++tally.capture_blocked;
          tally.last_allocation = e.what();
          tally.add(algo_text, "its workspace cannot be allocated during graph capture on this device");
        } else {
          throw;
        }
        continue;
      }
      if (workspace->size() < needed) {  // never for a fresh allocation; checked, not assumed
        ++tally.out_of_memory;
        tally.add(algo_text, "the workspace holds only " + std::to_string(workspace->size()) + " bytes");
        continue;
      }
      cudnn_clear_last_error();
      const cudaError_t pending = cudaPeekAtLastError();
      ++test_hooks::thread_record().conv_launches;
      cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
      if (!test_hooks::take_injected_execution_failure(&status))
        status = conv_execute(scope.handle(), direction, d, p, c.algo, needed ? workspace->get() : nullptr, needed,
                              scaling.alpha(), scaling.beta());
      if (status == CUDNN_STATUS_SUCCESS) {
        // Forget candidates that failed for good before this one, so that they are not retried on
        // every call; not during capture, and not where one only lacked memory or failed once.
        if (i > 0 && eager && tally.only_stale())
          algo_cache().insert(key, std::vector<AlgoCandidate>(candidates.begin() + static_cast<long>(i),
                                                              candidates.end()));
        return true;
      }
      const std::string name = cudnn_status_name(status);
      if (!is_fallback_status(name, !scaling.beta_is_zero()))
        check_cudnn(status, function, context + " " + algo_text);  // throws, with cuDNN's explanation
      tally.failed_with(status);
      tally.last_detail = cudnn_last_error();
      // A launch failure behind the status must not leak into the next candidate, nor into the
      // caller's next check; an error the caller had pending before is theirs and stays.
      clear_own_cuda_error(cudaPeekAtLastError(), pending);
      tally.add(algo_text, name);
    }
    return false;
  };

  std::optional<std::vector<AlgoCandidate>> cached = algo_cache().find(key);
  // A provisional benchmark entry (heuristic stand-in) is replaced once the benchmark can run.
  if (cached && eager && options.algo == AlgoPolicy::Benchmark) {
    const std::optional<std::size_t> wanted = algo_cache().provisional(key);
    if (wanted && free_device_memory() >= *wanted && !blocking_capture_on_current_device()) cached.reset();
  }
  bool kept_during_capture = false;
  if (cached) {
    if (run_candidates(*cached)) return;
    // Every cached choice failed. Where one failed for good the entry is stale (loaded from a
    // file, another cuDNN): outside capture, forget it and search again, once, where a search may
    // run. During capture the entry is kept; a heuristic or deterministic ranking (no kernels)
    // may still serve this call. Where all only lacked memory, failed transiently, or could not
    // allocate during capture, the entry is right: keep it.
    if (tally.stale > 0) {
      if (eager) {
        algo_cache().erase(key);
        if (run_candidates(search(true))) return;
      } else {
        kept_during_capture = true;
        if (search_refusal_reason(options.algo, capture).empty() && run_candidates(search(false))) return;
      }
    }
  } else if (run_candidates(search(true))) {
    return;
  }
  // (The counts are the last list's: the cached one, or the fresh search's that replaced it.)
  if (tally.stale == 0 && tally.transient == 0 && tally.capture_blocked > 0)
    throw CudaError(static_cast<int>(cudaErrorStreamCaptureUnsupported), "cudaErrorStreamCaptureUnsupported",
                    std::string(function) + ": no candidate algorithm can run during this graph capture [" + context +
                        "]: " + tally.tries + ". " + tally.last_allocation +
                        ". Capture on a device with memory pools, or under knetcnn.options(workspace_limit=0)");
  if (tally.stale == 0 && tally.transient == 0 && tally.out_of_memory > 0)
    throw CudaError(static_cast<int>(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation",
                    std::string(function) + ": out of device memory for every candidate algorithm's workspace [" +
                        context + "]: " + tally.tries +
                        ". Lower knetcnn.options(workspace_limit=...) or free device memory");
  if (tally.stale > 0 && eager) algo_cache().erase(key);
  std::string message = std::string(function) + " failed with every candidate algorithm [" + context + "]: " +
                        (tally.tries.empty() ? "no candidate" : tally.tries);
  if (!tally.last_detail.empty()) message += ": " + tally.last_detail;
  if (kept_during_capture)
    message += ". The cached choice is kept: knetcnn does not change its algorithm cache during a CUDA graph "
               "capture. Run this call once before capturing (warm up), so that a failing choice is replaced "
               "outside capture" +
               std::string(options.algo == AlgoPolicy::Benchmark ? " by a new benchmark" : "");
  throw CudnnError(static_cast<int>(tally.last_status), cudnn_status_name(tally.last_status), function, message);
}

// A zero-filled packed temporary of cuDNN's forward output shape `big` holding `small` (an
// output-shaped operand) in its leading block: what cuDNN's backward functions need as dy when
// deconv4's output_padding >= stride.
struct PaddedOperand {
  DeviceScratch scratch;
  Operand operand;
};

std::unique_ptr<PaddedOperand> pad_to(const ExecScope& scope, DType dtype, const Operand& small, const Shape& big,
                                      const std::string& context) {
  const Shape strides = packed_strides(big);
  const std::size_t bytes = layout_bytes(big, strides, dtype);
  auto padded = std::unique_ptr<PaddedOperand>(new PaddedOperand{
      DeviceScratch(bytes, scope.device(), scope.stream(), scope.capture(),
                    "zero-padded copy for output_padding >= stride"),
      Operand{}});
  padded->operand = Operand{small.role, padded->scratch.get(), big, strides};
  KNETCNN_CUDA_CTX(cudaMemsetAsync(padded->scratch.get(), 0, bytes, scope.stream()), context);
  // Same dims, two layouts: `small` lands in the leading block of the larger packed tensor.
  transform_tensor(scope, dtype, unit_scaling(dtype), small.shape, small.data, small.strides,
                   padded->scratch.get(), strides, context);
  return padded;
}

// y = alpha * conv(x, w) + beta * y, with y of shape g.output.
void forward(const ExecScope& scope, const ConvGeometry& g, DType dtype, const Operand& x, const Operand& w,
             const Operand& y, double alpha, double beta, const ExecOptions& options, const std::string& context) {
  const Shape big = cudnn_conv_forward_shape(g);
  if (big == y.shape) {
    run_convolution(scope, ConvDirection::Forward, g, dtype, x, w, y, alpha, beta, options, context);
    return;
  }
  const Shape strides = packed_strides(big);
  DeviceScratch scratch(layout_bytes(big, strides, dtype), scope.device(), scope.stream(), scope.capture(),
                        "cuDNN's larger forward output for output_padding >= stride");
  const Operand whole{y.role, scratch.get(), big, strides};
  run_convolution(scope, ConvDirection::Forward, g, dtype, x, w, whole, alpha, 0.0, options, context);
  // The leading block of the larger result is the answer: same dims as y, the larger strides.
  transform_tensor(scope, dtype, Scaling(dtype, 1.0, beta), y.shape, scratch.get(), strides, y.data, y.strides,
                   context);
}

// dx = alpha * conv^T(dy, w) + beta * dx, with dy of shape g.output.
void backward_data(const ExecScope& scope, const ConvGeometry& g, DType dtype, const Operand& w, const Operand& dy,
                   const Operand& dx, double alpha, double beta, const ExecOptions& options,
                   const std::string& context) {
  const Shape big = cudnn_conv_forward_shape(g);
  if (big == dy.shape) {
    run_convolution(scope, ConvDirection::BackwardData, g, dtype, dx, w, dy, alpha, beta, options, context);
    return;
  }
  const auto padded = pad_to(scope, dtype, dy, big, context);
  run_convolution(scope, ConvDirection::BackwardData, g, dtype, dx, w, padded->operand, alpha, beta, options,
                  context);
}

// dw = alpha * d<dy, conv(x, w)>/dw + beta * dw, with dy of shape g.output.
void backward_filter(const ExecScope& scope, const ConvGeometry& g, DType dtype, const Operand& x,
                     const Operand& dy, const Operand& dw, double alpha, double beta, const ExecOptions& options,
                     const std::string& context) {
  const Shape big = cudnn_conv_forward_shape(g);
  if (big == dy.shape) {
    run_convolution(scope, ConvDirection::BackwardFilter, g, dtype, x, dw, dy, alpha, beta, options, context);
    return;
  }
  const auto padded = pad_to(scope, dtype, dy, big, context);
  run_convolution(scope, ConvDirection::BackwardFilter, g, dtype, x, dw, padded->operand, alpha, beta, options,
                  context);
}

void check_kind(const char* op, const ConvGeometry& g, bool transposed) {
  if (g.transposed != transposed)
    throw value_error(std::string(op) + ": the geometry was built for " + (g.transposed ? "deconv4" : "conv4") +
                      "; build it with " + (transposed ? "deconv4_geometry" : "conv4_geometry"));
}

}  // namespace

Shape cudnn_conv_forward_shape(const ConvGeometry& g) {
  Shape out = g.output;
  for (int i = 0; i < g.spatial_dims; ++i) {
    const int64_t span = (g.filter[2 + i] - 1) * g.dilation[i] + 1;
    out[2 + i] = 1 + (g.input[2 + i] + 2 * g.padding[i] - span) / g.stride[i];
  }
  return out;
}

ConvPlan plan_conv(const std::string& op, const ConvGeometry& g, DType dtype, const ExecOptions& options, int device,
                   std::size_t workspace_limit, const Shape& x_strides, const Shape& y_strides) {
  const bool deconv = op.rfind("deconv4", 0) == 0;
  if (op != "conv4" && op != "conv4x" && op != "conv4w" && op != "deconv4" && op != "deconv4w" && op != "deconv4x")
    throw value_error("plan_conv: op='" + op + "': op must be conv4, conv4x, conv4w, deconv4, deconv4w or deconv4x");
  check_kind(op.c_str(), g, deconv);
  ConvPlan plan;
  const char last = op.back();
  plan.direction = last == '4' ? (deconv ? ConvDirection::BackwardData : ConvDirection::Forward)
                   : last == 'x' ? (deconv ? ConvDirection::Forward : ConvDirection::BackwardData)
                                 : ConvDirection::BackwardFilter;
  plan.x_shape = g.input;
  plan.w_shape = g.filter;
  plan.y_shape = cudnn_conv_forward_shape(g);
  plan.y_through_temporary = plan.y_shape != g.output;
  const Shape y_layout = plan.y_through_temporary ? Shape{} : y_strides;  // a temporary is packed
  const TensorDescriptor xd("x", dtype, plan.x_shape, x_strides);
  const FilterDescriptor wd(dtype, plan.w_shape);
  const ConvolutionDescriptor cd(g, dtype, options.allow_tf32);
  const TensorDescriptor yd("y", dtype, plan.y_shape, y_layout);
  int dims[8];
  const int nb = static_cast<int>(lift_shape(plan.x_shape).size());
  KNETCNN_CUDNN(cudnnGetConvolutionNdForwardOutputDim(cd.get(), xd.get(), wd.get(), nb, dims));
  plan.cudnn_forward_dims = Shape(dims, dims + nb);
  plan.key = conv_algo_key(conv_problem(plan.direction, g, dtype, xd, plan.w_shape, yd, options, device, workspace_limit));
  return plan;
}

void conv4_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& x,
                const DeviceTensor& y, double alpha, double beta, const ExecTarget& target,
                const ExecOptions& options) {
  const std::string op = "conv4";
  check_kind("conv4", g, false);
  check_scaling(op, dtype, alpha, beta);
  const Operand wo = make_filter_operand(op, "w", dtype, w, g.filter);
  const Operand xo = make_operand(op, "x", dtype, x, g.input, false);
  const Operand yo = make_operand(op, "y", dtype, y, g.output, true);
  check_disjoint(op, dtype, yo, {&wo, &xo});
  const std::string context = conv_context(op, g, dtype, {&wo, &xo, &yo}, alpha, beta, options);
  const ExecScope scope(target, {&wo, &xo, &yo}, op);
  forward(scope, g, dtype, xo, wo, yo, alpha, beta, options, context);
}

void conv4x_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& dy,
                 const DeviceTensor& dx, double alpha, double beta, const ExecTarget& target,
                 const ExecOptions& options) {
  const std::string op = "conv4x";
  check_kind("conv4x", g, false);
  check_scaling(op, dtype, alpha, beta);
  const Operand wo = make_filter_operand(op, "w", dtype, w, g.filter);
  const Operand dyo = make_operand(op, "dy", dtype, dy, g.output, false);
  const Operand dxo = make_operand(op, "dx", dtype, dx, g.input, true);
  check_disjoint(op, dtype, dxo, {&wo, &dyo});
  const std::string context = conv_context(op, g, dtype, {&wo, &dyo, &dxo}, alpha, beta, options);
  const ExecScope scope(target, {&wo, &dyo, &dxo}, op);
  backward_data(scope, g, dtype, wo, dyo, dxo, alpha, beta, options, context);
}

void conv4w_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& dy,
                 const DeviceTensor& dw, double alpha, double beta, const ExecTarget& target,
                 const ExecOptions& options) {
  const std::string op = "conv4w";
  check_kind("conv4w", g, false);
  check_scaling(op, dtype, alpha, beta);
  const Operand xo = make_operand(op, "x", dtype, x, g.input, false);
  const Operand dyo = make_operand(op, "dy", dtype, dy, g.output, false);
  const Operand dwo = make_filter_operand(op, "dw", dtype, dw, g.filter);
  check_disjoint(op, dtype, dwo, {&xo, &dyo});
  const std::string context = conv_context(op, g, dtype, {&xo, &dyo, &dwo}, alpha, beta, options);
  const ExecScope scope(target, {&xo, &dyo, &dwo}, op);
  backward_filter(scope, g, dtype, xo, dyo, dwo, alpha, beta, options, context);
}

void deconv4_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& x,
                  const DeviceTensor& y, double alpha, double beta, const ExecTarget& target,
                  const ExecOptions& options) {
  const std::string op = "deconv4";
  check_kind("deconv4", g, true);
  check_scaling(op, dtype, alpha, beta);
  const Operand wo = make_filter_operand(op, "w", dtype, w, g.filter);
  const Operand xo = make_operand(op, "x", dtype, x, g.output, false);  // deconv4's input: cuDNN's dy
  const Operand yo = make_operand(op, "y", dtype, y, g.input, true);    // deconv4's result: cuDNN's dx
  check_disjoint(op, dtype, yo, {&wo, &xo});
  const std::string context = conv_context(op, g, dtype, {&wo, &xo, &yo}, alpha, beta, options);
  const ExecScope scope(target, {&wo, &xo, &yo}, op);
  backward_data(scope, g, dtype, wo, xo, yo, alpha, beta, options, context);
}

void deconv4w_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& dy,
                   const DeviceTensor& dw, double alpha, double beta, const ExecTarget& target,
                   const ExecOptions& options) {
  const std::string op = "deconv4w";
  check_kind("deconv4w", g, true);
  check_scaling(op, dtype, alpha, beta);
  const Operand xo = make_operand(op, "x", dtype, x, g.output, false);    // deconv4's input: cuDNN's dy
  const Operand dyo = make_operand(op, "dy", dtype, dy, g.input, false);  // grad of deconv4's result: cuDNN's x
  const Operand dwo = make_filter_operand(op, "dw", dtype, dw, g.filter);
  check_disjoint(op, dtype, dwo, {&xo, &dyo});
  const std::string context = conv_context(op, g, dtype, {&xo, &dyo, &dwo}, alpha, beta, options);
  const ExecScope scope(target, {&xo, &dyo, &dwo}, op);
  backward_filter(scope, g, dtype, dyo, xo, dwo, alpha, beta, options, context);
}

void deconv4x_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& dy,
                   const DeviceTensor& dx, double alpha, double beta, const ExecTarget& target,
                   const ExecOptions& options) {
  const std::string op = "deconv4x";
  check_kind("deconv4x", g, true);
  check_scaling(op, dtype, alpha, beta);
  const Operand wo = make_filter_operand(op, "w", dtype, w, g.filter);
  const Operand dyo = make_operand(op, "dy", dtype, dy, g.input, false);  // cuDNN's x
  const Operand dxo = make_operand(op, "dx", dtype, dx, g.output, true);  // cuDNN's y
  check_disjoint(op, dtype, dxo, {&wo, &dyo});
  const std::string context = conv_context(op, g, dtype, {&wo, &dyo, &dxo}, alpha, beta, options);
  const ExecScope scope(target, {&wo, &dyo, &dxo}, op);
  forward(scope, g, dtype, dyo, wo, dxo, alpha, beta, options, context);
}

}  // namespace knetcnn
