// What every execution entry point shares: the device-array arguments, their validation (all of
// it before any cuDNN call), alpha/beta in the type cuDNN reads, the message context, and the
// call scope (device check, current device, cuDNN handle on the caller's stream).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "descriptors.hpp"
#include "device_memory.hpp"
#include "dtype.hpp"
#include "exec_options.hpp"
#include "geometry.hpp"

namespace knetcnn {

// A device array argument: its address and element strides (empty: C-contiguous). Its shape is
// fixed by the geometry.
struct DeviceTensor {
  std::uintptr_t data = 0;
  Shape strides;
};

// Where a call runs: the arrays' device ordinal and the CUDA stream to enqueue on (0: the legacy
// default stream).
struct ExecTarget {
  int device = 0;
  cudaStream_t stream = nullptr;
};

// An argument after validation: pointer, the shape the geometry gives it, strides (never empty).
struct Operand {
  const char* role = "";
  void* data = nullptr;
  Shape shape, strides;
  bool packed() const { return strides == packed_strides(shape); }
};

// alpha and beta as cuDNN reads them: host floats for half, bfloat16 and float data, host doubles
// for double data (cuDNN's scaling-parameter rule; Knet passed Float16 here, which is wrong).
class Scaling {
 public:
  Scaling(DType dtype, double alpha, double beta);
  const void* alpha() const { return is_double_ ? static_cast<const void*>(&d_[0]) : &f_[0]; }
  const void* beta() const { return is_double_ ? static_cast<const void*>(&d_[1]) : &f_[1]; }
  bool beta_is_zero() const { return d_[1] == 0; }

 private:
  bool is_double_;
  float f_[2];
  double d_[2];
};
// 1 and 0, for internal copies.
Scaling unit_scaling(DType dtype);

// Bytes from the first to one past the last element the layout addresses (sizes >= 1, strides
// >= 0). ValueError if that does not fit in 63 bits.
std::size_t layout_bytes(const Shape& shape, const Shape& strides, DType dtype);
// The largest element offset the layout addresses, sum((shape[i] - 1) * strides[i]), or -1 if it
// overflows int64 (or a size is < 1 or a stride < 0).
int64_t last_offset(const Shape& shape, const Shape& strides);

// Checks one argument: non-null, aligned to its element size (a misaligned element access is a
// GPU fault that destroys the CUDA context: semantics.md section 6, no input may crash), strides
// of the right length and >= 0, and (for a written tensor) no two elements sharing an address.
// ValueErrors name `op` and the argument.
Operand make_operand(const std::string& op, const char* role, DType dtype, const DeviceTensor& t, const Shape& shape,
                     bool written);
// Filters have no strides in cuDNN: w and dw must be C-contiguous.
Operand make_filter_operand(const std::string& op, const char* role, DType dtype, const DeviceTensor& t,
                            const Shape& shape);
// The written tensor must not share memory with any read one (cuDNN computes out of place).
void check_disjoint(const std::string& op, DType dtype, const Operand& written, const std::vector<const Operand*>& read);
// alpha and beta must be finite, and (for half, bfloat16 and float data, where cuDNN reads them as
// host floats) within float's range: a larger magnitude would silently become infinity.
void check_scaling(const std::string& op, DType dtype, double alpha, double beta);

// "conv4: w (8, 3, 3, 3) x (2, 3, 32, 32) strides (...) ... float32 padding=(1, 1) ...".
std::string conv_context(const std::string& op, const ConvGeometry& g, DType dtype,
                         const std::vector<const Operand*>& operands, double alpha, double beta,
                         const ExecOptions& options);
std::string pool_context(const std::string& op, const PoolGeometry& g, DType dtype,
                         const std::vector<const Operand*>& operands, double alpha, double beta,
                         const ExecOptions& options);

// The device side of a call, in order: the GPU must be usable (DeviceUnavailable says why and
// how to fix it), `device` becomes current for the scope, the stream must belong to it, every
// pointer must be device memory on it, the stream's graph-capture state is read once (an
// invalidated capture, or a state the runtime cannot tell, is refused with CudaError before
// anything touches the stream: check_capture_usable), and the thread's cuDNN handle for the
// device is bound to the stream. A call on a stream that is not capturing runs in relaxed capture
// mode throughout: nothing it enqueues can belong to another thread's capture, so the runtime calls
// it and cuDNN make (allocations, frees, module loads) must not be refused by, nor invalidate, a
// global-mode capture elsewhere. cuDNN's last-error text is cleared first, so that no message of
// this call carries an earlier call's explanation.
class ExecScope {
 public:
  ExecScope(const ExecTarget& target, const std::vector<const Operand*>& operands, const std::string& op);
  cudnnHandle_t handle() const { return handle_; }
  int device() const { return target_.device; }
  cudaStream_t stream() const { return target_.stream; }
  CaptureState capture() const { return capture_; }

 private:
  ExecTarget target_;
  std::unique_ptr<DeviceGuard> guard_;
  std::optional<RelaxedCaptureMode> relaxed_;  // eager calls only
  CaptureState capture_ = CaptureState::None;
  cudnnHandle_t handle_ = nullptr;
};

// y = alpha * x + beta * y between two layouts of the same dims (cudnnTransformTensor).
void transform_tensor(const ExecScope& scope, DType dtype, const Scaling& scaling, const Shape& dims,
                      const void* x, const Shape& x_strides, void* y, const Shape& y_strides,
                      const std::string& context);

}  // namespace knetcnn
