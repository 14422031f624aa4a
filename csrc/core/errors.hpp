// Exceptions of the C++ core. The binding maps them onto Python classes:
// ArgumentError -> ValueError or TypeError, CudnnError -> knetcnn.CudnnError (and subclasses),
// CudaError -> knetcnn.CudaError, DeviceUnavailable -> knetcnn.DeviceUnavailableError.
#pragma once

#include <stdexcept>
#include <string>

namespace knetcnn {

// A user mistake, found before any cuDNN call.
class ArgumentError : public std::invalid_argument {
 public:
  enum class Kind { Value, Type };
  ArgumentError(Kind kind, const std::string& message)
      : std::invalid_argument(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

inline ArgumentError value_error(const std::string& message) {
  return ArgumentError(ArgumentError::Kind::Value, message);
}

// A cuDNN call returned something other than CUDNN_STATUS_SUCCESS.
class CudnnError : public std::runtime_error {
 public:
  CudnnError(int status, std::string status_name, std::string function, const std::string& message)
      : std::runtime_error(message),
        status_(status),
        status_name_(std::move(status_name)),
        function_(std::move(function)) {}
  int status() const { return status_; }
  // cuDNN 9 renumbered its statuses (BAD_PARAM is 2000, was 3): callers compare names.
  const std::string& status_name() const { return status_name_; }
  const std::string& function() const { return function_; }

 private:
  int status_;
  std::string status_name_;
  std::string function_;
};

// A CUDA runtime call failed (allocation, copy, stream, device query).
class CudaError : public std::runtime_error {
 public:
  CudaError(int code, std::string code_name, const std::string& message)
      : std::runtime_error(message), code_(code), code_name_(std::move(code_name)) {}
  int code() const { return code_; }
  const std::string& code_name() const { return code_name_; }

 private:
  int code_;
  std::string code_name_;
};

// Work that needs a GPU was asked for where none is usable; the message says why and what to do.
class DeviceUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace knetcnn
