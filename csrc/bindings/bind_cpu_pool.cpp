// NumPy glue for the CPU pooling kernels (core/cpu_pool.hpp): shape checks against the geometry,
// result allocation, and the GIL released while the kernel runs. Callers (knetcnn/cpu/pool.py)
// pass C-contiguous arrays of the compute dtype holding any block of whole (batch, channel)
// planes; other layouts are copied by pybind11 (safe casts only).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../core/cpu_pool.hpp"
#include "bindings.hpp"
#include "result_arrays.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style>;

// `a` must be (planes_of.shape[:2] or any (N, C), *spatial): the spatial axes as in `spatial`.
template <typename T>
void check_planes(const char* function, const char* argument, const Array<T>& a, const Shape& spatial,
                  const Array<T>* leading_like = nullptr) {
  bool same = a.ndim() == static_cast<py::ssize_t>(spatial.size());
  for (py::ssize_t i = 2; same && i < a.ndim(); ++i) same = a.shape(i) == spatial[i];
  if (same && leading_like) same = a.shape(0) == leading_like->shape(0) && a.shape(1) == leading_like->shape(1);
  if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0) {
    throw py::value_error(std::string(function) + ": " + argument + " is not aligned to its dtype; pass an aligned copy");
  }
  if (!same) {
    Shape expected = spatial;
    expected[0] = leading_like ? leading_like->shape(0) : -1;
    expected[1] = leading_like ? leading_like->shape(1) : -1;
    throw py::value_error(std::string(function) + ": " + argument + " must have shape " + shape_to_string(expected) +
                          " for this geometry (-1: any size)");
  }
}

template <typename T>
Array<T> result(const Array<T>& leading_like, const Shape& spatial) {
  std::vector<py::ssize_t> shape(spatial.begin(), spatial.end());
  shape[0] = leading_like.shape(0);
  shape[1] = leading_like.shape(1);
  return result_array<T>("cpu pooling result", shape);
}

template <typename T>
int64_t planes(const Array<T>& a) {
  return static_cast<int64_t>(a.shape(0)) * a.shape(1);
}

template <typename T>
void bind_for(py::module_& m) {
  m.def(
      "cpu_pool_forward",
      [](const PoolGeometry& g, const Array<T>& x, int mode, double scale, double all_nan_value) {
        check_planes("cpu_pool_forward", "x", x, g.input);
        if (mode < 0 || mode > 3) throw py::value_error("cpu_pool_forward: mode must be 0, 1, 2 or 3");
        Array<T> y = result(x, g.output);
        const T* in = x.data();
        T* out = y.mutable_data();
        py::gil_scoped_release release;
        cpu::pool_forward<T>(g, planes(x), mode, in, out, static_cast<T>(scale), static_cast<T>(all_nan_value));
        return y;
      },
      py::arg("geometry"), py::arg("x"), py::arg("mode"), py::arg("scale"), py::arg("all_nan_value"));
  m.def(
      "cpu_max_pool_backward",
      [](const PoolGeometry& g, const Array<T>& x, const Array<T>& dy, double alpha) {
        check_planes("cpu_max_pool_backward", "x", x, g.input);
        check_planes("cpu_max_pool_backward", "dy", dy, g.output, &x);
        Array<T> dx = result(x, g.input);
        const T *in = x.data(), *grad = dy.data();
        T* out = dx.mutable_data();
        py::gil_scoped_release release;
        cpu::max_pool_backward<T>(g, planes(x), in, grad, out, static_cast<T>(alpha));
        return dx;
      },
      py::arg("geometry"), py::arg("x"), py::arg("dy"), py::arg("alpha"));
  m.def(
      "cpu_average_pool_backward",
      [](const PoolGeometry& g, const Array<T>& dy, int mode, double scale) {
        check_planes("cpu_average_pool_backward", "dy", dy, g.output);
        if (mode != 1 && mode != 2) throw py::value_error("cpu_average_pool_backward: mode must be 1 or 2");
        Array<T> dx = result(dy, g.input);
        const T* grad = dy.data();
        T* out = dx.mutable_data();
        py::gil_scoped_release release;
        cpu::average_pool_backward<T>(g, planes(dy), mode, grad, out, static_cast<T>(scale));
        return dx;
      },
      py::arg("geometry"), py::arg("dy"), py::arg("mode"), py::arg("scale"));
}

}  // namespace

void register_cpu_pool(py::module_& m) {
  m.attr("cpu_pool_scratch_windows") = cpu::kPoolScratchWindows;
  // Overload resolution tries every overload without conversion first, so a float32 or float64
  // array reaches its own kernel; without forcecast a later converting pass only makes safe
  // casts (float64 is never narrowed to float32).
  bind_for<float>(m);
  bind_for<double>(m);
}

}  // namespace knetcnn::bindings
