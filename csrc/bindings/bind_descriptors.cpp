// Read-backs of the descriptors cuDNN would be given: knetcnn.describe() shows these.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../core/cudnn_names.hpp"
#include "../core/descriptors.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

py::dict tensor_dict(const TensorDescriptor& d) {
  const auto r = d.read();
  py::dict out;
  out["data_type"] = data_type_name(r.data_type);
  out["dims"] = py::cast(r.dims);
  out["strides"] = py::cast(r.strides);
  return out;
}

py::dict filter_dict(const FilterDescriptor& d) {
  const auto r = d.read();
  py::dict out;
  out["data_type"] = data_type_name(r.data_type);
  out["format"] = tensor_format_name(r.format);
  out["dims"] = py::cast(r.dims);
  return out;
}

py::dict convolution_dict(const ConvolutionDescriptor& d) {
  const auto r = d.read();
  py::dict out;
  out["padding"] = py::cast(r.padding);
  out["stride"] = py::cast(r.stride);
  out["dilation"] = py::cast(r.dilation);
  out["mode"] = convolution_mode_name(r.mode);
  out["compute_type"] = data_type_name(r.compute_type);
  out["group_count"] = r.group_count;
  out["math_type"] = math_type_name(r.math_type);
  return out;
}

py::dict pooling_dict(const PoolingDescriptor& d) {
  const auto r = d.read();
  py::dict out;
  out["mode"] = pooling_mode_name(r.mode);
  out["nan_propagation"] = nan_propagation_name(r.nan_propagation);
  out["window"] = py::cast(r.window);
  out["padding"] = py::cast(r.padding);
  out["stride"] = py::cast(r.stride);
  return out;
}

}  // namespace

void register_descriptors(py::module_& m) {
  m.def(
      "describe_conv",
      [](const ConvGeometry& g, const std::string& dtype, bool allow_tf32) {
        const ConvDescriptors d = make_conv_descriptors(g, dtype_from_name(dtype), allow_tf32);
        py::dict out;
        out["input"] = tensor_dict(d.input);
        out["filter"] = filter_dict(d.filter);
        out["convolution"] = convolution_dict(d.convolution);
        out["output"] = tensor_dict(d.output);
        out["cudnn_forward_output_dims"] = py::cast(cudnn_conv_output_dims(d));
        return out;
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("allow_tf32") = false,
      "Builds the tensor, filter and convolution descriptors for this geometry and reads them back "
      "from cuDNN (host-only calls: no GPU needed).");
  m.def(
      "describe_pool",
      [](const PoolGeometry& g, const std::string& dtype) {
        const PoolDescriptors d = make_pool_descriptors(g, dtype_from_name(dtype));
        py::dict out;
        out["input"] = tensor_dict(d.input);
        out["pooling"] = pooling_dict(d.pooling);
        out["output"] = tensor_dict(d.output);
        out["cudnn_forward_output_dims"] = py::cast(cudnn_pool_output_dims(d));
        return out;
      },
      py::arg("geometry"), py::arg("dtype"),
      "Builds the tensor and pooling descriptors for this geometry and reads them back from cuDNN.");
  m.def(
      "describe_tensor",
      [](const std::string& dtype, const Shape& shape, const Shape& strides) {
        return tensor_dict(TensorDescriptor("tensor", dtype_from_name(dtype), shape, strides));
      },
      py::arg("dtype"), py::arg("shape"), py::arg("strides") = Shape{},
      "A tensor descriptor for this shape and element strides, read back from cuDNN.");
}

}  // namespace knetcnn::bindings
