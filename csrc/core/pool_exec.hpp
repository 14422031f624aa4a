// Pooling on device arrays: Knet's pool, poolx, unpool and unpoolx over cuDNN.
//
// Same conventions as conv_exec.hpp: all validation first, then the device; enqueued on
// `target.stream`; out = alpha * op(...) + beta * out. Geometry in forward terms:
//   pool(x) -> y               cudnnPoolingForward    x: g.input, y: g.output
//   poolx(x, y, dy) -> dx      cudnnPoolingBackward   x, dx: g.input; y, dy: g.output
//   unpool(x) -> y             cudnnPoolingBackward   (average mode g.cudnn_mode) with dy = x:
//                                                     g.output, dx = y (unpool's result): g.input
//   unpoolx(dy) -> dx          cudnnPoolingForward    (average mode) x = dy: g.input,
//                                                     y = dx: g.output
//
// Scalings (semantics.md §4):
// - poolx with alpha != 1 in a max mode: cuDNN's max backward routes each dy to the cell of x
//   equal to y, so it needs the unscaled forward output. Dividing the caller's y by alpha is not
//   exact in floating point (and impossible for alpha = 0), so y is recomputed: a pooling forward
//   with alpha = 1 into a scratch buffer. Average modes do not read y; the caller's y is passed.
// - unpool = (1/alpha) * avgpool_backward(x * prod(window)): the pooling backward is linear in
//   dy, so both factors fold into cuDNN's alpha, prod(window)/alpha, and no extra kernel runs.
//   unpoolx = prod(window) * avgpool_forward(dy, alpha = 1/alpha): cuDNN's alpha is again
//   prod(window)/alpha. (Exact in real arithmetic; rounding differs from scaling x first by at
//   most a rounding of the folded factor.) cuDNN's average backward should read neither y nor x,
//   but cuDNN does not document it: unpool passes its input as y (same shape and layout as dy)
//   and, as x, a zeroed temporary of the result's shape (never the result buffer itself, which
//   cuDNN writes as dx while x is declared read-only; Knet passed the result). x and dx must share
//   a layout, so a result that is not dense (a strided view, perhaps into a much larger buffer) is
//   computed into a packed temporary and copied out with beta: the stand-in is never sized by the
//   span of the caller's view.
// - Layouts: cuDNN's pooling needs innermost stride 1 (NOT_SUPPORTED otherwise), and
//   cudnnPoolingBackward needs x and dx in the same layout, and y and dy in the same layout
//   (BAD_PARAM otherwise). Tensors that break either rule are copied to packed temporaries
//   (cudnnTransformTensor); a result is computed into a temporary and copied out with beta.
// Under knetcnn.options(algo='deterministic'), max pooling (mode 0) runs as
// CUDNN_POOLING_MAX_DETERMINISTIC (mode 3): the same forward, a deterministic backward.
#pragma once

#include "dtype.hpp"
#include "exec_common.hpp"
#include "exec_options.hpp"
#include "geometry.hpp"

namespace knetcnn {

// The pooling mode that runs: g.cudnn_mode, with max (0) made deterministic (3) under the
// deterministic policy.
int effective_pool_mode(const PoolGeometry& g, const ExecOptions& options);
// The factor folded into cuDNN's alpha for unpool and unpoolx: prod(window) / alpha.
double unpool_scale(const PoolGeometry& g, double alpha);

void pool_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& y, double alpha,
               double beta, const ExecTarget& target, const ExecOptions& options);
void poolx_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& y,
                const DeviceTensor& dy, const DeviceTensor& dx, double alpha, double beta, const ExecTarget& target,
                const ExecOptions& options);
void unpool_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& y, double alpha,
                 double beta, const ExecTarget& target, const ExecOptions& options);
void unpoolx_exec(const PoolGeometry& g, DType dtype, const DeviceTensor& dy, const DeviceTensor& dx, double alpha,
                  double beta, const ExecTarget& target, const ExecOptions& options);

}  // namespace knetcnn
