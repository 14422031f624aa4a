// Geometry: Python passes already type-checked ints (knetcnn/_args.py); the core validates
// values and computes shapes.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <variant>

#include "../core/geometry.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

using AxisValue = std::variant<int64_t, std::vector<int64_t>>;

AxisArg to_axis_arg(const AxisValue& value) {
  if (auto scalar = std::get_if<int64_t>(&value)) return AxisArg::all(*scalar);
  return AxisArg::each(std::get<std::vector<int64_t>>(value));
}

py::tuple to_tuple(const std::vector<int64_t>& values) { return py::cast(values); }

}  // namespace

void register_geometry(py::module_& m) {
  py::class_<ConvGeometry>(m, "ConvGeometry",
                           "Convolution geometry in cuDNN forward terms: for conv4 input is x and output "
                           "is y; for deconv4 (transposed) input is deconv4's result and output is its x.")
      .def_readonly("spatial_dims", &ConvGeometry::spatial_dims)
      .def_property_readonly("input_shape", [](const ConvGeometry& g) { return to_tuple(g.input); })
      .def_property_readonly("filter_shape", [](const ConvGeometry& g) { return to_tuple(g.filter); })
      .def_property_readonly("output_shape", [](const ConvGeometry& g) { return to_tuple(g.output); })
      .def_property_readonly("padding", [](const ConvGeometry& g) { return to_tuple(g.padding); })
      .def_property_readonly("stride", [](const ConvGeometry& g) { return to_tuple(g.stride); })
      .def_property_readonly("dilation", [](const ConvGeometry& g) { return to_tuple(g.dilation); })
      .def_property_readonly("output_padding", [](const ConvGeometry& g) { return to_tuple(g.output_padding); })
      .def_readonly("mode", &ConvGeometry::mode)
      .def_readonly("group", &ConvGeometry::group)
      .def_readonly("transposed", &ConvGeometry::transposed);

  py::class_<PoolGeometry>(m, "PoolGeometry",
                           "Pooling geometry in cuDNN forward terms: for pool input is x and output is y; "
                           "for unpool (transposed) input is unpool's result and output is its x.")
      .def_readonly("spatial_dims", &PoolGeometry::spatial_dims)
      .def_property_readonly("input_shape", [](const PoolGeometry& g) { return to_tuple(g.input); })
      .def_property_readonly("output_shape", [](const PoolGeometry& g) { return to_tuple(g.output); })
      .def_property_readonly("window", [](const PoolGeometry& g) { return to_tuple(g.window); })
      .def_property_readonly("padding", [](const PoolGeometry& g) { return to_tuple(g.padding); })
      .def_property_readonly("stride", [](const PoolGeometry& g) { return to_tuple(g.stride); })
      .def_readonly("mode", &PoolGeometry::mode)
      .def_readonly("cudnn_mode", &PoolGeometry::cudnn_mode)
      .def_readonly("nan_opt", &PoolGeometry::nan_opt)
      .def_readonly("transposed", &PoolGeometry::transposed);

  auto conv_options = [](const AxisValue& padding, const AxisValue& stride, const AxisValue& dilation,
                         const AxisValue& output_padding, int64_t mode, int64_t group) {
    ConvOptions o;
    o.padding = to_axis_arg(padding);
    o.stride = to_axis_arg(stride);
    o.dilation = to_axis_arg(dilation);
    o.output_padding = to_axis_arg(output_padding);
    o.mode = mode;
    o.group = group;
    return o;
  };
  m.def(
      "conv4_geometry",
      [conv_options](const std::string& function, const Shape& w, const Shape& x, const AxisValue& padding,
                     const AxisValue& stride, const AxisValue& dilation, int64_t mode, int64_t group) {
        return conv4_geometry(function, w, x, conv_options(padding, stride, dilation, int64_t{0}, mode, group));
      },
      py::arg("function"), py::arg("w"), py::arg("x"), py::arg("padding"), py::arg("stride"),
      py::arg("dilation"), py::arg("mode"), py::arg("group"));
  m.def(
      "deconv4_geometry",
      [conv_options](const std::string& function, const Shape& w, const Shape& x, const AxisValue& padding,
                     const AxisValue& stride, const AxisValue& dilation, int64_t mode, int64_t group,
                     const AxisValue& output_padding) {
        return deconv4_geometry(function, w, x, conv_options(padding, stride, dilation, output_padding, mode, group));
      },
      py::arg("function"), py::arg("w"), py::arg("x"), py::arg("padding"), py::arg("stride"),
      py::arg("dilation"), py::arg("mode"), py::arg("group"), py::arg("output_padding"));

  auto pool_options = [](const AxisValue& window, const AxisValue& padding, const std::optional<AxisValue>& stride,
                         int64_t mode, int64_t nan_opt) {
    PoolOptions o;
    o.window = to_axis_arg(window);
    o.padding = to_axis_arg(padding);
    if (stride) o.stride = to_axis_arg(*stride);
    o.mode = mode;
    o.nan_opt = nan_opt;
    return o;
  };
  m.def(
      "pool_geometry",
      [pool_options](const std::string& function, const Shape& x, const AxisValue& window, const AxisValue& padding,
                     const std::optional<AxisValue>& stride, int64_t mode, int64_t nan_opt) {
        return pool_geometry(function, x, pool_options(window, padding, stride, mode, nan_opt));
      },
      py::arg("function"), py::arg("x"), py::arg("window"), py::arg("padding"), py::arg("stride"),
      py::arg("mode"), py::arg("nan_opt"));
  m.def(
      "unpool_geometry",
      [pool_options](const std::string& function, const Shape& x, const AxisValue& window, const AxisValue& padding,
                     const std::optional<AxisValue>& stride, int64_t mode) {
        return unpool_geometry(function, x, pool_options(window, padding, stride, mode, 1));
      },
      py::arg("function"), py::arg("x"), py::arg("window"), py::arg("padding"), py::arg("stride"),
      py::arg("mode"));

  m.def("check_shape", &check_shape, py::arg("function"), py::arg("argument"), py::arg("actual"),
        py::arg("expected"), py::arg("why"));
  m.def("check_alpha", &check_alpha, py::arg("function"), py::arg("alpha"), py::arg("must_be_nonzero"));
  m.def("unpool_average_mode", &unpool_average_mode, py::arg("mode"));
}

}  // namespace knetcnn::bindings
