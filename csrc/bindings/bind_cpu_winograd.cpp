// The Winograd F(2x2, 3x3) transforms (core/cpu_winograd.hpp) on NumPy arrays: every array is
// checked against the tiles before the kernel runs without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "../core/cpu_winograd.hpp"
#include "bindings.hpp"
#include "cpu_array_checks.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

using cpu::kWinogradPoints;
using cpu::WinogradTiles;

// Tiles over a 4-D (items, channels, height, width) array.
WinogradTiles tiles_over(const py::array& a, int64_t tiles_h, int64_t tiles_w, int64_t top, int64_t left) {
  WinogradTiles t;
  t.items = a.shape(0), t.channels = a.shape(1), t.height = a.shape(2), t.width = a.shape(3);
  t.tiles_h = tiles_h, t.tiles_w = tiles_w, t.top = top, t.left = left;
  return t;
}

// The 2x2 tiles that cover a 4-D array from (0, 0): what the output and gradient transforms take.
WinogradTiles covering_tiles(const py::array& a) {
  return tiles_over(a, (a.shape(2) + 1) / 2, (a.shape(3) + 1) / 2, 0, 0);
}

// `points` must be the (16, channels, tiles) matrix of these tiles.
template <typename T>
void check_points(const std::string& function, const char* argument, const py::array& points,
                  const WinogradTiles& t, int64_t tiles) {
  check_plain<T>(function, argument, points, 3);
  require(points.shape(0) == kWinogradPoints && points.shape(1) == t.channels && points.shape(2) == tiles, function,
          std::string(argument) + " must be (16, " + std::to_string(t.channels) + ", " + std::to_string(tiles) +
              "), got (" + std::to_string(points.shape(0)) + ", " + std::to_string(points.shape(1)) + ", " +
              std::to_string(points.shape(2)) + ")");
}

template <typename T>
void run_input(const py::array& x, const py::array& v, int64_t tiles_h, int64_t tiles_w, int64_t top, int64_t left,
               bool parallel) {
  const std::string function = "winograd_input";
  check_plain<T>(function, "x", x, 4);
  const WinogradTiles t = tiles_over(x, tiles_h, tiles_w, top, left);
  check_points<T>(function, "v", v, t, cpu::winograd_tile_count(function.c_str(), t, false));
  require(v.writeable(), function, "v must be writeable");
  const T* in = static_cast<const T*>(x.data());
  T* out = static_cast<T*>(const_cast<void*>(v.data()));
  py::gil_scoped_release release;
  cpu::winograd_input<T>(in, t, out, parallel);
}

template <typename T>
void run_output(const py::array& m, const py::array& y, bool parallel) {
  const std::string function = "winograd_output";
  check_plain<T>(function, "y", y, 4);
  require(y.writeable(), function, "y must be writeable");
  const WinogradTiles t = covering_tiles(y);
  check_points<T>(function, "m", m, t, cpu::winograd_tile_count(function.c_str(), t, true));
  const T* in = static_cast<const T*>(m.data());
  T* out = static_cast<T*>(const_cast<void*>(y.data()));
  py::gil_scoped_release release;
  cpu::winograd_output<T>(in, t, out, parallel);
}

template <typename T>
void run_gradient(const py::array& dy, const py::array& g, bool parallel) {
  const std::string function = "winograd_gradient";
  check_plain<T>(function, "dy", dy, 4);
  const WinogradTiles t = covering_tiles(dy);
  check_points<T>(function, "g", g, t, cpu::winograd_tile_count(function.c_str(), t, true));
  require(g.writeable(), function, "g must be writeable");
  const T* in = static_cast<const T*>(dy.data());
  T* out = static_cast<T*>(const_cast<void*>(g.data()));
  py::gil_scoped_release release;
  cpu::winograd_gradient<T>(in, t, out, parallel);
}

}  // namespace

void register_cpu_winograd(py::module_& m) {
  m.def(
      "winograd_input",
      [](const py::array& x, const py::array& v, int64_t tiles_h, int64_t tiles_w, int64_t top, int64_t left,
         bool parallel) {
        by_float_type("winograd_input", "x", x,
                      [&](auto t) { run_input<decltype(t)>(x, v, tiles_h, tiles_w, top, left, parallel); });
      },
      "v[p, c, (n, i, j)] = (B^T d B)[p // 4, p % 4] of the 4x4 tile d of x[n, c] at (2i - top, 2j - left), "
      "0 outside x: Winograd F(2x2, 3x3)'s input transform (x 4-D C-contiguous, v (16, C, N*tiles_h*tiles_w))",
      py::arg("x").noconvert(), py::arg("v").noconvert(), py::arg("tiles_h"), py::arg("tiles_w"), py::arg("top"),
      py::arg("left"), py::arg("parallel"));
  m.def(
      "winograd_output",
      [](const py::array& m, const py::array& y, bool parallel) {
        by_float_type("winograd_output", "y", y, [&](auto t) { run_output<decltype(t)>(m, y, parallel); });
      },
      "y[n, c, 2i:2i+2, 2j:2j+2] = A^T m A (cropped to y) with m[p // 4, p % 4] = m_points[p, c, (n, i, j)]: "
      "Winograd F(2x2, 3x3)'s output transform (y overwritten)",
      py::arg("m").noconvert(), py::arg("y").noconvert(), py::arg("parallel"));
  m.def(
      "winograd_gradient",
      [](const py::array& dy, const py::array& g, bool parallel) {
        by_float_type("winograd_gradient", "dy", dy, [&](auto t) { run_gradient<decltype(t)>(dy, g, parallel); });
      },
      "g[p, c, (n, i, j)] = (A e A^T)[p // 4, p % 4] of the 2x2 tile e of dy[n, c] at (2i, 2j), 0 outside dy: "
      "the gradient transform of Winograd F(2x2, 3x3)'s backward filter",
      py::arg("dy").noconvert(), py::arg("g").noconvert(), py::arg("parallel"));
}

}  // namespace knetcnn::bindings
