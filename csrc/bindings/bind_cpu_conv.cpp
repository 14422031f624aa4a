// The CPU convolution's im2col / col2im (core/cpu_conv.hpp) on NumPy arrays: checks every array
// against the window before any memory is touched, then runs the kernel without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>

#include "../core/cpu_conv.hpp"
#include "../core/cpu_conv_direct.hpp"
#include "../core/errors.hpp"
#include "bindings.hpp"
#include "cpu_array_checks.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

using cpu::Axes3;
using cpu::ConvWindow;

// A 5-D array of element type T as a core Volume (element strides); ValueError where it cannot be.
template <typename T>
cpu::Volume<T> volume_of(const std::string& function, const char* argument, const py::array& a) {
  require(a.ndim() == 5, function, std::string(argument) + " must be 5-D (items, channels, S0, S1, S2), got " +
                                       std::to_string(a.ndim()) + "-D");
  require(reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) == 0, function,
          std::string(argument) + " must be aligned to its element size");
  cpu::Volume<T> v;
  v.data = static_cast<T*>(const_cast<void*>(a.data()));
  for (int i = 0; i < 5; ++i) {
    require(a.strides(i) % static_cast<py::ssize_t>(sizeof(T)) == 0, function,
            std::string(argument) + "'s strides must be multiples of its element size");
    v.shape[i] = a.shape(i);
    v.strides[i] = a.strides(i) / static_cast<py::ssize_t>(sizeof(T));
  }
  return v;
}

// col must be a C-contiguous T array of exactly the window's column count.
template <typename T>
void check_columns(const std::string& function, const py::array& col, const ConvWindow& w, int64_t items,
                   int64_t channels) {
  require(py::isinstance<py::array_t<T>>(col), function, "col must have the same dtype as the volume");
  require((col.flags() & py::array::c_style) != 0, function, "col must be C-contiguous");
  const int64_t expected = cpu::column_elements(function.c_str(), w, items, channels);
  require(col.size() == expected, function,
          "col has " + std::to_string(col.size()) + " elements, the window needs " + std::to_string(expected));
}

template <typename T>
void run_im2col(const py::array& x, py::array col, const ConvWindow& w, bool parallel) {
  const std::string function = "im2col";
  auto volume = volume_of<const T>(function, "x", x);
  check_columns<T>(function, col, w, volume.shape[0], volume.shape[1]);
  require(col.writeable(), function, "col must be writeable");
  T* out = static_cast<T*>(col.mutable_data());
  py::gil_scoped_release release;
  cpu::im2col<T>(volume, w, out, parallel);
}

template <typename T>
void run_col2im(const py::array& col, const py::array& dx, const ConvWindow& w, bool parallel) {
  const std::string function = "col2im";
  require(dx.writeable(), function, "dx must be writeable");
  auto volume = volume_of<T>(function, "dx", dx);
  cpu::check_no_self_overlap(function.c_str(), "dx", volume.shape, volume.strides);
  check_columns<T>(function, col, w, volume.shape[0], volume.shape[1]);
  const T* in = static_cast<const T*>(col.data());
  py::gil_scoped_release release;
  cpu::col2im<T>(in, w, volume, parallel);
}

template <typename T>
void run_conv_direct(const py::array& x, const py::array& w, const py::array& y, int64_t groups,
                     const std::array<int64_t, 2>& padding, const std::array<int64_t, 2>& dilation) {
  const std::string function = "conv_direct";
  check_plain<T>(function, "x", x, 4);
  check_plain<T>(function, "w", w, 4);
  check_plain<T>(function, "y", y, 4);
  require(y.writeable(), function, "y must be writeable");
  cpu::DirectConv d;
  d.items = x.shape(0), d.channels = x.shape(1), d.height = x.shape(2), d.width = x.shape(3);
  d.outputs = w.shape(0), d.groups = groups, d.kh = w.shape(2), d.kw = w.shape(3);
  d.pad_h = padding[0], d.pad_w = padding[1], d.dil_h = dilation[0], d.dil_w = dilation[1];
  d.out_h = y.shape(2), d.out_w = y.shape(3);
  require(groups >= 1 && w.shape(1) * groups == x.shape(1), function,
          "w.shape[1] * groups must equal x's channels");
  require(y.shape(0) == x.shape(0) && y.shape(1) == w.shape(0), function,
          "y must have x's items and w's outputs");
  cpu::check_direct_conv(function.c_str(), d);
  const T* xp = static_cast<const T*>(x.data());
  const T* wp = static_cast<const T*>(w.data());
  T* yp = static_cast<T*>(const_cast<void*>(y.data()));
  py::gil_scoped_release release;
  cpu::direct_conv2d<T>(d, xp, wp, yp);
}

ConvWindow window(const Axes3& kernel, const Axes3& stride, const Axes3& dilation, const Axes3& padding,
                  const Axes3& origin, const Axes3& out_begin, const Axes3& out_end) {
  return ConvWindow{kernel, stride, dilation, padding, origin, out_begin, out_end};
}

}  // namespace

void register_cpu_conv(py::module_& m) {
  m.def(
      "im2col",
      [](const py::array& x, const py::array& col, const Axes3& kernel, const Axes3& stride, const Axes3& dilation,
         const Axes3& padding, const Axes3& origin, const Axes3& out_begin, const Axes3& out_end, bool parallel) {
        const ConvWindow w = window(kernel, stride, dilation, padding, origin, out_begin, out_end);
        by_float_type("im2col", "x", x, [&](auto t) { run_im2col<decltype(t)>(x, col, w, parallel); });
      },
      "col[c, k, n, *j] = x[n, c, *((out_begin + j) * stride + k * dilation - padding - origin)], 0 outside x "
      "(spatial axes lifted to 3; col C-contiguous (C*prod(kernel), items*prod(out_end - out_begin)))",
      py::arg("x").noconvert(), py::arg("col").noconvert(), py::arg("kernel"), py::arg("stride"),
      py::arg("dilation"), py::arg("padding"), py::arg("origin"), py::arg("out_begin"), py::arg("out_end"),
      py::arg("parallel"));
  m.def(
      "col2im",
      [](const py::array& col, const py::array& dx, const Axes3& kernel, const Axes3& stride, const Axes3& dilation,
         const Axes3& padding, const Axes3& origin, const Axes3& out_begin, const Axes3& out_end, bool parallel) {
        const ConvWindow w = window(kernel, stride, dilation, padding, origin, out_begin, out_end);
        by_float_type("col2im", "dx", dx, [&](auto t) { run_col2im<decltype(t)>(col, dx, w, parallel); });
      },
      "dx += the adjoint of im2col applied to col (cells outside dx dropped)", py::arg("col").noconvert(),
      py::arg("dx").noconvert(), py::arg("kernel"), py::arg("stride"), py::arg("dilation"), py::arg("padding"),
      py::arg("origin"), py::arg("out_begin"), py::arg("out_end"), py::arg("parallel"));
  m.def(
      "conv_direct",
      [](const py::array& x, const py::array& w, const py::array& y, int64_t groups,
         const std::array<int64_t, 2>& padding, const std::array<int64_t, 2>& dilation) {
        by_float_type("conv_direct", "x", x,
                      [&](auto t) { run_conv_direct<decltype(t)>(x, w, y, groups, padding, dilation); });
      },
      "y[n, o, r, j] = sum over o's group's channels c and taps (a, b) of w[o, c, a, b] * "
      "x[n, c, r - padding[0] + a*dilation[0], j - padding[1] + b*dilation[1]], 0 outside x: stride 1, "
      "arrays 4-D C-contiguous of one dtype; padding may be negative; y is overwritten",
      py::arg("x").noconvert(), py::arg("w").noconvert(), py::arg("y").noconvert(), py::arg("groups"),
      py::arg("padding"), py::arg("dilation"));
}

}  // namespace knetcnn::bindings
