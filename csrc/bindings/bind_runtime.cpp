// Versions, devices, and the reason a GPU is not usable.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../core/runtime_info.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {

void register_runtime(py::module_& m) {
  m.def("runtime_info", []() {
    const RuntimeInfo r = query_runtime();
    py::dict out;
    out["cudnn_runtime_version"] = r.cudnn_runtime_version;
    out["cudnn_build_version"] = r.cudnn_build_version;
    out["cudnn_cudart_version"] = r.cudnn_cudart_version;
    out["cuda_runtime_version"] = r.cuda_runtime_version;
    out["cuda_build_version"] = r.cuda_build_version;
    out["driver_version"] = r.driver_version;
    py::list devices;
    for (const DeviceInfo& d : r.devices) {
      py::dict dev;
      dev["index"] = d.index;
      dev["name"] = d.name;
      dev["compute_capability"] = py::make_tuple(d.major, d.minor);
      dev["total_memory"] = d.total_memory;
      devices.append(dev);
    }
    out["devices"] = devices;
    out["no_device_reason"] = r.no_device_reason;
    return out;
  });
  m.def("device_unavailable_reason", &device_unavailable_reason, py::arg("index") = 0);
  m.def("require_device", &require_device, py::arg("index") = 0);
}

}  // namespace knetcnn::bindings
