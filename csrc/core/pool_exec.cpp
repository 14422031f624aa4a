#include "pool_exec.hpp"

#include <cfloat>
#include <cmath>
#include <memory>
#include <sstream>

#include "cudnn_check.hpp"
#include "errors.hpp"
#include "test_hooks.hpp"

namespace knetcnn {
namespace {

bool needs_packing(const Operand& o) { return o.shape.back() > 1 && o.strides.back() != 1; }

// Packed up to the strides of size-1 axes (which address nothing; descriptors normalize them).
bool dense(const Operand& o) { return normalized_strides(o.shape, o.strides) == packed_strides(o.shape); }

// The pooling descriptor a call hands cuDNN, as cuDNN reads it back (for the tests).
const PoolingDescriptor& noted(const PoolingDescriptor& pd) {
  test_hooks::thread_record().last_pooling_mode = static_cast<int>(pd.read().mode);
  return pd;
}

// The layouts cuDNN compares: size-1 axes' strides do not count (descriptors normalize them).
bool same_layout(const Operand& a, const Operand& b) {
  return a.shape == b.shape && normalized_strides(a.shape, a.strides) == normalized_strides(b.shape, b.strides);
}

// An operand as cuDNN's pooling gets it: the caller's, or a packed temporary.
struct Staged {
  Operand operand;
  std::unique_ptr<DeviceScratch> scratch;
};

// A read tensor: a packed copy when its innermost stride is not 1, or when `force` (to match the
// layout of the tensor it is paired with).
Staged stage_read(const ExecScope& scope, DType dtype, const Operand& o, const std::string& context,
                  bool force = false) {
  if (!needs_packing(o) && (!force || o.packed())) return Staged{o, nullptr};
  const Shape strides = packed_strides(o.shape);
  auto scratch = std::make_unique<DeviceScratch>(layout_bytes(o.shape, strides, dtype), scope.device(),
                                                 scope.stream(), scope.capture(), "packed copy for pooling");
  transform_tensor(scope, dtype, unit_scaling(dtype), o.shape, o.data, o.strides, scratch->get(), strides, context);
  Operand packed{o.role, scratch->get(), o.shape, strides};
  return Staged{packed, std::move(scratch)};
}

// A written tensor: a packed temporary when its innermost stride is not 1, or when `force` and it
// is not dense (finish_write copies it out, honouring beta).
Staged stage_write(const ExecScope& scope, DType dtype, const Operand& o, bool force = false) {
  if (!needs_packing(o) && (!force || dense(o))) return Staged{o, nullptr};
  const Shape strides = packed_strides(o.shape);
  auto scratch = std::make_unique<DeviceScratch>(layout_bytes(o.shape, strides, dtype), scope.device(),
                                                 scope.stream(), scope.capture(), "packed result for pooling");
  Operand packed{o.role, scratch->get(), o.shape, strides};
  return Staged{packed, std::move(scratch)};
}

// The beta cuDNN gets: the caller's, unless the result goes to a temporary (then finish_write
// applies beta while copying out).
double cudnn_beta(const Staged& out, double beta) { return out.scratch ? 0.0 : beta; }

void finish_write(const ExecScope& scope, DType dtype, const Staged& out, const Operand& target, double beta,
                  const std::string& context) {
  if (!out.scratch) return;
  transform_tensor(scope, dtype, Scaling(dtype, 1.0, beta), target.shape, out.operand.data, out.operand.strides,
                   target.data, target.strides, context);
}

PoolGeometry running_geometry(const PoolGeometry& g, const ExecOptions& options) {
  PoolGeometry run = g;
  run.cudnn_mode = effective_pool_mode(g, options);
  return run;
}

std::string number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

void check_kind(const char* op, const PoolGeometry& g, bool transposed) {
  if (g.transposed != transposed)
    throw value_error(std::string(op) + ": the geometry was built for " + (g.transposed ? "unpool" : "pool") +
                      "; build it with " + (transposed ? "unpool_geometry" : "pool_geometry"));
}

// unpool's folded factor, checked against the range of the type cuDNN reads it as.
double checked_unpool_scale(const std::string& op, const PoolGeometry& g, DType dtype, double alpha) {
  check_alpha(op, alpha, true);
  const double scale = unpool_scale(g, alpha);
  if (!std::isfinite(scale) || (!scaling_is_double(dtype) && std::fabs(scale) > FLT_MAX))
    throw value_error(op + ": alpha=" + number(alpha) + ": prod(window)/alpha = " + number(scale) +
                      " does not fit the scaling type cuDNN uses for " + dtype_name(dtype));
  return scale;
}

}  // namespace

int effective_pool_mode(const PoolGeometry& g, const ExecOptions& options) {
  if (options.algo == AlgoPolicy::Deterministic && g.cudnn_mode == 0) return 3;
  return g.cudnn_mode;
}

double unpool_scale(const PoolGeometry& g, double alpha) {
  double cells = 1;
  for (int64_t w : g.window) cells *= static_cast<double>(w);
  return cells / alpha;
}

void pool_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& y, double alpha,
               double beta, const ExecTarget& target, const ExecOptions& options) {
  const std::string op = "pool";
  check_kind("pool", g, false);
  check_scaling(op, dtype, alpha, beta);
  const Operand xo = make_operand(op, "x", dtype, x, g.input, false);
  const Operand yo = make_operand(op, "y", dtype, y, g.output, true);
  check_disjoint(op, dtype, yo, {&xo});
  const PoolGeometry run = running_geometry(g, options);
  const std::string context = pool_context(op, run, dtype, {&xo, &yo}, alpha, beta, options);
  const PoolingDescriptor pd(run);
  noted(pd);
  const ExecScope scope(target, {&xo, &yo}, op);
  const Staged xs = stage_read(scope, dtype, xo, context);
  const Staged ys = stage_write(scope, dtype, yo);
  const TensorDescriptor xd("x", dtype, xs.operand.shape, xs.operand.strides);
  const TensorDescriptor yd("y", dtype, ys.operand.shape, ys.operand.strides);
  const Scaling s(dtype, alpha, cudnn_beta(ys, beta));
  // (poolingDesc, alpha, xDesc, x, beta, yDesc, y)
  KNETCNN_CUDNN_CTX(cudnnPoolingForward(scope.handle(), pd.get(), s.alpha(), xd.get(), xs.operand.data, s.beta(),
                                        yd.get(), ys.operand.data),
                    context);
  finish_write(scope, dtype, ys, yo, beta, context);
}

void poolx_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& y,
                const DeviceTensor& dy, const DeviceTensor& dx, double alpha, double beta, const ExecTarget& target,
                const ExecOptions& options) {
  const std::string op = "poolx";
  check_kind("poolx", g, false);
  check_scaling(op, dtype, alpha, beta);
  const Operand xo = make_operand(op, "x", dtype, x, g.input, false);
  const Operand yo = make_operand(op, "y", dtype, y, g.output, false);
  const Operand dyo = make_operand(op, "dy", dtype, dy, g.output, false);
  const Operand dxo = make_operand(op, "dx", dtype, dx, g.input, true);
  check_disjoint(op, dtype, dxo, {&xo, &yo, &dyo});
  const PoolGeometry run = running_geometry(g, options);
  const std::string context = pool_context(op, run, dtype, {&xo, &yo, &dyo, &dxo}, alpha, beta, options);
  const PoolingDescriptor pd(run);
  noted(pd);
  const bool max_mode = run.cudnn_mode == 0 || run.cudnn_mode == 3;
  const ExecScope scope(target, {&xo, &yo, &dyo, &dxo}, op);
  // cudnnPoolingBackward wants x and dx in one layout, and y and dy in one layout (BAD_PARAM
  // otherwise), each with innermost stride 1: where the caller's differ, both go packed.
  const bool x_pair_direct = same_layout(xo, dxo) && !needs_packing(xo);
  const Staged xs = stage_read(scope, dtype, xo, context, !x_pair_direct);
  const Staged dxs = stage_write(scope, dtype, dxo, !x_pair_direct);
  const TensorDescriptor xd("x", dtype, xs.operand.shape, xs.operand.strides);

  // The forward output cuDNN's max backward compares against must be unscaled (see header).
  Staged ys{yo, nullptr}, dys{dyo, nullptr};
  if (max_mode && alpha != 1.0) {
    const Shape strides = packed_strides(g.output);
    ys.scratch = std::make_unique<DeviceScratch>(layout_bytes(g.output, strides, dtype), scope.device(),
                                                 scope.stream(), scope.capture(), "unscaled pooling output for poolx");
    ys.operand = Operand{"y (recomputed with alpha=1)", ys.scratch->get(), g.output, strides};
    const TensorDescriptor y0d("y", dtype, g.output, strides);
    const Scaling unit = unit_scaling(dtype);
    KNETCNN_CUDNN_CTX(cudnnPoolingForward(scope.handle(), pd.get(), unit.alpha(), xd.get(), xs.operand.data,
                                          unit.beta(), y0d.get(), ys.operand.data),
                      context + " (recomputing y with alpha=1)");
    dys = stage_read(scope, dtype, dyo, context, true);  // packed, like the recomputed y
  } else {
    const bool y_pair_direct = same_layout(yo, dyo) && !needs_packing(yo);
    ys = stage_read(scope, dtype, yo, context, !y_pair_direct);
    dys = stage_read(scope, dtype, dyo, context, !y_pair_direct);
  }
  const TensorDescriptor yd("y", dtype, ys.operand.shape, ys.operand.strides);
  const TensorDescriptor dyd("dy", dtype, dys.operand.shape, dys.operand.strides);
  const TensorDescriptor dxd("dx", dtype, dxs.operand.shape, dxs.operand.strides);
  const Scaling s(dtype, alpha, cudnn_beta(dxs, beta));
  // (poolingDesc, alpha, yDesc, y, dyDesc, dy, xDesc, x, beta, dxDesc, dx)
  KNETCNN_CUDNN_CTX(cudnnPoolingBackward(scope.handle(), pd.get(), s.alpha(), yd.get(), ys.operand.data, dyd.get(),
                                         dys.operand.data, xd.get(), xs.operand.data, s.beta(), dxd.get(),
                                         dxs.operand.data),
                    context);
  finish_write(scope, dtype, dxs, dxo, beta, context);
}

void unpool_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& y, double alpha,
                 double beta, const ExecTarget& target, const ExecOptions& options) {
  const std::string op = "unpool";
  check_kind("unpool", g, true);
  check_scaling(op, dtype, alpha, beta);
  const double scale = checked_unpool_scale(op, g, dtype, alpha);
  const Operand xo = make_operand(op, "x", dtype, x, g.output, false);  // unpool's input: cuDNN's dy (and y)
  const Operand yo = make_operand(op, "y", dtype, y, g.input, true);    // unpool's result: cuDNN's dx (and x)
  check_disjoint(op, dtype, yo, {&xo});
  const PoolGeometry run = running_geometry(g, options);  // an average mode: unchanged
  const std::string context = pool_context(op, run, dtype, {&xo, &yo}, alpha, beta, options);
  const PoolingDescriptor pd(run);
  noted(pd);
  const ExecScope scope(target, {&xo, &yo}, op);
  const Staged xs = stage_read(scope, dtype, xo, context);
  // A result that is not dense (a strided view, perhaps into a much larger buffer) is computed
  // into a packed temporary and copied out with beta: the stand-in below then has the result's
  // element count, never the span of the caller's view.
  const Staged ys = stage_write(scope, dtype, yo, true);
  const TensorDescriptor small("x", dtype, xs.operand.shape, xs.operand.strides);
  const TensorDescriptor large("y", dtype, ys.operand.shape, ys.operand.strides);
  // cuDNN's forward input x: average modes do not read it, but nothing documents that, and the
  // result buffer may not be handed to cuDNN as a read-only input it also writes. A zeroed buffer
  // in the result's (dense) layout (the x/dx layouts must match) stands in for it.
  const std::size_t x_bytes = layout_bytes(ys.operand.shape, ys.operand.strides, dtype);
  const DeviceScratch forward_input(x_bytes, scope.device(), scope.stream(), scope.capture(),
                                    "zeroed stand-in for cuDNN's pooling input x");
  KNETCNN_CUDA_CTX(cudaMemsetAsync(forward_input.get(), 0, x_bytes, scope.stream()), context);
  const Scaling s(dtype, scale, cudnn_beta(ys, beta));
  // (poolingDesc, alpha, yDesc, y := x, dyDesc, dy := x, xDesc, x := zeros, beta, dxDesc,
  // dx := result)
  KNETCNN_CUDNN_CTX(cudnnPoolingBackward(scope.handle(), pd.get(), s.alpha(), small.get(), xs.operand.data,
                                         small.get(), xs.operand.data, large.get(), forward_input.get(), s.beta(),
                                         large.get(), ys.operand.data),
                    context + " cuDNN alpha=prod(window)/alpha=" + number(scale));
  finish_write(scope, dtype, ys, yo, beta, context);
}

void unpoolx_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& dy, const DeviceTensor& dx, double alpha,
                  double beta, const ExecTarget& target, const ExecOptions& options) {
  const std::string op = "unpoolx";
  check_kind("unpoolx", g, true);
  check_scaling(op, dtype, alpha, beta);
  const double scale = checked_unpool_scale(op, g, dtype, alpha);
  const Operand dyo = make_operand(op, "dy", dtype, dy, g.input, false);  // grad of unpool's result: cuDNN's x
  const Operand dxo = make_operand(op, "dx", dtype, dx, g.output, true);  // grad of unpool's input: cuDNN's y
  check_disjoint(op, dtype, dxo, {&dyo});
  const PoolGeometry run = running_geometry(g, options);
  const std::string context = pool_context(op, run, dtype, {&dyo, &dxo}, alpha, beta, options);
  const PoolingDescriptor pd(run);
  noted(pd);
  const ExecScope scope(target, {&dyo, &dxo}, op);
  const Staged dys = stage_read(scope, dtype, dyo, context);
  const Staged dxs = stage_write(scope, dtype, dxo);
  const TensorDescriptor large("dy", dtype, dys.operand.shape, dys.operand.strides);
  const TensorDescriptor small("dx", dtype, dxs.operand.shape, dxs.operand.strides);
  const Scaling s(dtype, scale, cudnn_beta(dxs, beta));
  // (poolingDesc, alpha, xDesc, x := dy, beta, yDesc, y := dx)
  KNETCNN_CUDNN_CTX(cudnnPoolingForward(scope.handle(), pd.get(), s.alpha(), large.get(), dys.operand.data,
                                        s.beta(), small.get(), dxs.operand.data),
                    context + " cuDNN alpha=prod(window)/alpha=" + number(scale));
  finish_write(scope, dtype, dxs, dxo, beta, context);
}

}  // namespace knetcnn
