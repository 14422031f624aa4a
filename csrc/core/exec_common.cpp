#include "exec_common.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "cudnn_check.hpp"
#include "errors.hpp"
#include "handle_pool.hpp"
#include "runtime_info.hpp"

namespace knetcnn {
namespace {

std::string axes(const std::vector<int64_t>& values) {
  std::string out = "(";
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + (values.size() == 1 ? ",)" : ")");
}

std::string number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string operands_text(const std::vector<const Operand*>& operands) {
  std::string out;
  for (const Operand* o : operands) {
    out += std::string(out.empty() ? "" : " ") + o->role + " " + shape_to_string(o->shape);
    if (!o->packed()) out += " strides " + shape_to_string(o->strides);
  }
  return out;
}

// Written tensors must not alias themselves: walking the axes from the smallest stride up, each
// stride must step past everything the smaller axes reach.
bool self_overlapping(const Shape& shape, const Shape& strides) {
  std::vector<std::pair<int64_t, int64_t>> axes;  // (stride, size) of axes with size > 1
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (shape[i] > 1) axes.emplace_back(strides[i], shape[i]);
  std::sort(axes.begin(), axes.end());
  int64_t reach = 0;  // largest offset the smaller axes address
  for (const auto& [stride, size] : axes) {
    if (stride <= reach) return true;
    reach += (size - 1) * stride;
  }
  return false;
}

}  // namespace

Scaling::Scaling(DType dtype, double alpha, double beta)
    : is_double_(scaling_is_double(dtype)),
      f_{static_cast<float>(alpha), static_cast<float>(beta)},
      d_{alpha, beta} {}

Scaling unit_scaling(DType dtype) { return Scaling(dtype, 1.0, 0.0); }

int64_t last_offset(const Shape& shape, const Shape& strides) {
  if (shape.size() != strides.size()) return -1;
  int64_t last = 0;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    int64_t term = 0;
    if (shape[i] < 1 || strides[i] < 0 || __builtin_mul_overflow(shape[i] - 1, strides[i], &term) ||
        __builtin_add_overflow(last, term, &last))
      return -1;
  }
  return last;
}

std::size_t layout_bytes(const Shape& shape, const Shape& strides, DType dtype) {
  const int64_t last = last_offset(shape, strides);
  int64_t bytes = 0;
  if (last < 0 || __builtin_mul_overflow(last + 1, static_cast<int64_t>(dtype_size(dtype)), &bytes))
    throw value_error("shape " + shape_to_string(shape) + " with strides " + shape_to_string(strides) +
                      " addresses more bytes than fit in 63 bits");
  return static_cast<std::size_t>(bytes);
}

Operand make_operand(const std::string& op, const char* role, DType dtype, const DeviceTensor& t, const Shape& shape,
                     bool written) {
  Operand o;
  o.role = role;
  o.data = reinterpret_cast<void*>(t.data);
  o.shape = shape;
  check_not_null((op + ": " + role).c_str(), o.data);
  const std::size_t size = dtype_size(dtype);
  if (t.data % size != 0) {
    std::ostringstream address;
    address << "0x" << std::hex << t.data;
    throw value_error(op + ": " + role + " = " + address.str() + " is not a multiple of " + std::to_string(size) +
                      " bytes, the size of a " + dtype_name(dtype) +
                      " element: cuDNN reads elements at aligned addresses (a misaligned one faults the GPU and "
                      "ends the CUDA context); pass an array whose data pointer is element-aligned");
  }
  if (t.strides.empty()) {
    o.strides = packed_strides(shape);
  } else {
    if (t.strides.size() != shape.size())
      throw value_error(op + ": " + role + " strides " + shape_to_string(t.strides) + " do not match its shape " +
                        shape_to_string(shape) + " (one stride per axis, in elements)");
    for (int64_t s : t.strides)
      if (s < 0 || s > kMaxDescriptorInt)
        throw value_error(op + ": " + role + " strides " + shape_to_string(t.strides) +
                          ": cuDNN needs element strides in 0..2147483647; copy the array to a contiguous one");
    o.strides = t.strides;
  }
  // The descriptors refuse these too, but only once a device is there: say it first.
  const int64_t elements = element_count(shape);
  const int64_t last = last_offset(shape, o.strides);  // -1 on overflow
  if (elements < 0 || elements > kMaxDescriptorInt || last < 0 || last > kMaxDescriptorInt)
    throw value_error(op + ": " + role + " has shape " + shape_to_string(shape) + " and strides " +
                      shape_to_string(o.strides) +
                      ": cuDNN tensors hold and address at most 2147483647 elements; split the batch (axis 0)");
  if (written && self_overlapping(o.shape, o.strides))
    throw value_error(op + ": " + role + " with shape " + shape_to_string(shape) + " and strides " +
                      shape_to_string(o.strides) +
                      " has elements sharing memory, so it cannot receive a result; pass a contiguous array");
  return o;
}

Operand make_filter_operand(const std::string& op, const char* role, DType dtype, const DeviceTensor& t,
                            const Shape& shape) {
  Operand o = make_operand(op, role, dtype, t, shape, false);
  // Size-1 axes may carry any stride (nothing is addressed through them).
  if (normalized_strides(shape, o.strides) != packed_strides(shape))
    throw value_error(op + ": " + role + " has strides " + shape_to_string(o.strides) +
                      ": cuDNN filters have no strides, so " + role +
                      " must be C-contiguous; copy it to a contiguous array");
  o.strides = packed_strides(shape);
  return o;
}

void check_disjoint(const std::string& op, DType dtype, const Operand& written,
                    const std::vector<const Operand*>& read) {
  const auto begin = reinterpret_cast<std::uintptr_t>(written.data);
  const auto end = begin + layout_bytes(written.shape, written.strides, dtype);
  for (const Operand* r : read) {
    const auto rb = reinterpret_cast<std::uintptr_t>(r->data);
    const auto re = rb + layout_bytes(r->shape, r->strides, dtype);
    if (rb < end && begin < re)
      throw value_error(op + ": the result " + written.role + " shares memory with the input " + r->role +
                        "; cuDNN computes out of place: pass a separate output array");
  }
}

void check_scaling(const std::string& op, DType dtype, double alpha, double beta) {
  for (const auto& [name, value] : {std::make_pair("alpha", alpha), std::make_pair("beta", beta)}) {
    const std::string what = op + ": " + name + "=" + number(value) + ": ";
    if (!std::isfinite(value)) throw value_error(what + name + " must be a finite number");
    // cuDNN reads the scalings as host floats for these types: the conversion must stay finite.
    if (!scaling_is_double(dtype) && std::isinf(static_cast<float>(value)))
      throw value_error(what + "for " + dtype_name(dtype) + " data cuDNN reads " + name +
                        " as a float, whose largest magnitude is " + number(std::numeric_limits<float>::max()) +
                        "; " + name + " would become infinity");
  }
}

std::string conv_context(const std::string& op, const ConvGeometry& g, DType dtype,
                         const std::vector<const Operand*>& operands, double alpha, double beta,
                         const ExecOptions& options) {
  std::string out = op + ": " + operands_text(operands) + " " + dtype_name(dtype) + " padding=" + axes(g.padding) +
                    " stride=" + axes(g.stride) + " dilation=" + axes(g.dilation) + " mode=" +
                    std::to_string(g.mode) + " group=" + std::to_string(g.group);
  if (g.transposed) out += " output_padding=" + axes(g.output_padding);
  return out + " alpha=" + number(alpha) + " beta=" + number(beta) + " " + exec_options_to_string(options);
}

std::string pool_context(const std::string& op, const PoolGeometry& g, DType dtype,
                         const std::vector<const Operand*>& operands, double alpha, double beta,
                         const ExecOptions& options) {
  return op + ": " + operands_text(operands) + " " + dtype_name(dtype) + " window=" + axes(g.window) +
         " padding=" + axes(g.padding) + " stride=" + axes(g.stride) + " mode=" + std::to_string(g.mode) +
         " (cuDNN pooling mode " + std::to_string(g.cudnn_mode) + ") maxpoolingNanOpt=" + std::to_string(g.nan_opt) +
         " alpha=" + number(alpha) + " beta=" + number(beta) + " " + exec_options_to_string(options);
}

ExecScope::ExecScope(const ExecTarget& target, const std::vector<const Operand*>& operands, const std::string& op)
    : target_(target) {
  if (target.device < 0)
    throw value_error("device=" + std::to_string(target.device) + ": the device ordinal must be >= 0");
  cudaError_t query = cudaSuccess;
  {
    // Queries only (nothing is enqueued or synchronized), which another thread's global-mode
    // capture must not refuse whether or not our stream turns out to capture.
    RelaxedCaptureMode probing;
    require_device(target.device);
    cudnn_clear_last_error();
    guard_ = std::make_unique<DeviceGuard>(target.device);
    check_stream_device(target.stream, target.device);
    for (const Operand* o : operands) check_device_pointer(o->role, o->data, target.device);
    capture_ = stream_capture_state(target.stream, &query);
  }
  check_capture_usable(capture_, query, target.stream, target.device, op);  // None or Active from here
  if (capture_ == CaptureState::None) relaxed_.emplace();
  handle_ = cudnn_handle(target.device, target.stream, capture_);
}

void transform_tensor(const ExecScope& scope, DType dtype, const Scaling& scaling, const Shape& dims,
                      const void* x, const Shape& x_strides, void* y, const Shape& y_strides,
                      const std::string& context) {
  const TensorDescriptor xd("copy source", dtype, dims, x_strides);
  const TensorDescriptor yd("copy destination", dtype, dims, y_strides);
  KNETCNN_CUDNN_CTX(cudnnTransformTensor(scope.handle(), scaling.alpha(), xd.get(), x, scaling.beta(), yd.get(), y),
                    context);
}

}  // namespace knetcnn
