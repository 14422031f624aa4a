// Checks shared by the CPU kernels' bindings: every array a kernel reads or writes is checked
// here (dtype, rank, layout, alignment) before the GIL is released and the kernel runs.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../core/errors.hpp"

namespace knetcnn::bindings {

inline void require(bool ok, const std::string& function, const std::string& what) {
  if (!ok) throw value_error(function + ": " + what);
}

// A C-contiguous, aligned array of `ndim` axes and element type T (TypeError for another dtype,
// which must be the same as the kernel's first array's).
template <typename T>
void check_plain(const std::string& function, const char* argument, const pybind11::array& a, int ndim) {
  if (!pybind11::isinstance<pybind11::array_t<T>>(a))
    throw ArgumentError(ArgumentError::Kind::Type, function + ": " + argument + " must have x's dtype, got " +
                                                       pybind11::str(a.dtype()).cast<std::string>());
  require(a.ndim() == ndim, function,
          std::string(argument) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) + "-D");
  require((a.flags() & pybind11::array::c_style) != 0, function, std::string(argument) + " must be C-contiguous");
  require(reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) == 0, function,
          std::string(argument) + " must be aligned to its element size");
}

// run(T{}) with T the element type of `a`, float64 or float32; a TypeError naming the function and
// argument for any other dtype.
template <typename Run>
void by_float_type(const char* function, const char* argument, const pybind11::array& a, Run&& run) {
  if (pybind11::isinstance<pybind11::array_t<double>>(a)) return run(double{});
  if (pybind11::isinstance<pybind11::array_t<float>>(a)) return run(float{});
  throw ArgumentError(ArgumentError::Kind::Type, std::string(function) + ": " + argument +
                                                     " must be float32 or float64, got " +
                                                     pybind11::str(a.dtype()).cast<std::string>());
}

}  // namespace knetcnn::bindings
