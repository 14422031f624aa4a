// Convolution on device arrays: Knet's conv4, conv4x, conv4w, deconv4, deconv4w and deconv4x
// over cuDNN, with the algorithm policy, cache, workspace and run-time fallback.
//
// Every function validates all of its arguments before any cuDNN call (ValueError), then needs a
// usable GPU (DeviceUnavailable says why), then enqueues on `target.stream` and returns without
// synchronizing. Results follow cuDNN: out = alpha * op(...) + beta * out (beta = 0 overwrites).
// Shapes come from the geometry; only pointers and element strides are passed. Filters (w, dw)
// must be C-contiguous; other arrays may carry strides.
//
// Which array plays which cuDNN role (geometry in forward terms: g.input, g.filter, g.output):
//   conv4(w, x) -> y          Forward          x: g.input   w: g.filter  y: g.output
//   conv4x(w, dy) -> dx       BackwardData     dy: g.output w: g.filter  dx: g.input
//   conv4w(x, dy) -> dw       BackwardFilter   x: g.input   dy: g.output dw: g.filter
//   deconv4(w, x) -> y        BackwardData     x (deconv4's input) as dy: g.output,
//                                              y (deconv4's result) as dx: g.input
//   deconv4w(x, dy) -> dw     BackwardFilter   dy (grad of deconv4's result) as x: g.input,
//                                              x (deconv4's input) as dy: g.output
//   deconv4x(w, dy) -> dx     Forward          dy as x: g.input, dx as y: g.output
// (semantics.md §3: deconv4(w,x) = conv4x(w,y0,x), deconv4w(w,x,dy) = conv4w(w,dy,x),
// deconv4x(w,x,dy) = conv4(w,dy).)
//
// deconv4 with output_padding >= stride (allowed when dilation > stride): cuDNN's forward output
// of deconv4's result is then larger than deconv4's x on that axis, by output_padding // stride
// (cudnn_conv_forward_shape), and cuDNN's backward functions insist on exactly that size for dy.
// deconv4 and deconv4w therefore hand cuDNN a zero-filled temporary of the larger size with x
// copied into its leading block: the extra rows are zero, so they add nothing to the result, which
// is exactly the transposed convolution clipped to deconv4's size. deconv4x runs the forward
// convolution into a temporary of the larger size and copies the leading block out.
#pragma once

#include <string>

#include "algo_cache.hpp"
#include "dtype.hpp"
#include "exec_common.hpp"
#include "exec_options.hpp"
#include "geometry.hpp"

namespace knetcnn {

// cuDNN's forward output dims for (g.input, g.filter): g.output, except for a transposed geometry
// with output_padding >= stride on some axis, where that axis is larger by output_padding // stride.
Shape cudnn_conv_forward_shape(const ConvGeometry& g);

// What a convolution op hands cuDNN, without a device: the direction, the shapes in forward terms
// (x, w, y; y is cuDNN's forward output shape), whether y goes through a temporary (deconv4 with
// output_padding >= stride), cuDNN's own cudnnGetConvolutionNdForwardOutputDim for (x, w) (lifted
// rank; must equal y lifted), and the algorithm-cache key a call with these options would use.
// `x_strides`/`y_strides` as the call would pass them for the tensors in the x/y roles.
struct ConvPlan {
  ConvDirection direction = ConvDirection::Forward;
  Shape x_shape, w_shape, y_shape;
  bool y_through_temporary = false;
  Shape cudnn_forward_dims;
  std::string key;
};
ConvPlan plan_conv(const std::string& op, const ConvGeometry& g, DType dtype, const ExecOptions& options, int device,
                   std::size_t workspace_limit, const Shape& x_strides = {}, const Shape& y_strides = {});

void conv4_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& x,
                const DeviceTensor& y, double alpha, double beta, const ExecTarget& target,
                const ExecOptions& options);
void conv4x_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& dy,
                 const DeviceTensor& dx, double alpha, double beta, const ExecTarget& target,
                 const ExecOptions& options);
void conv4w_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& dy,
                 const DeviceTensor& dw, double alpha, double beta, const ExecTarget& target,
                 const ExecOptions& options);
void deconv4_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& x,
                  const DeviceTensor& y, double alpha, double beta, const ExecTarget& target,
                  const ExecOptions& options);
void deconv4w_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& x, const DeviceTensor& dy,
                   const DeviceTensor& dw, double alpha, double beta, const ExecTarget& target,
                   const ExecOptions& options);
void deconv4x_exec(const ConvGeometry& g, DType dtype, const DeviceTensor& w, const DeviceTensor& dy,
                   const DeviceTensor& dx, double alpha, double beta, const ExecTarget& target,
                   const ExecOptions& options);

}  // namespace knetcnn
