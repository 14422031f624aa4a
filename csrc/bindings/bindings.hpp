// The pybind11 module is assembled from one registration function per feature.
#pragma once

#include <pybind11/pybind11.h>

namespace knetcnn::bindings {

void register_errors(pybind11::module_& m);
void register_geometry(pybind11::module_& m);
void register_descriptors(pybind11::module_& m);
void register_runtime(pybind11::module_& m);
void register_exec(pybind11::module_& m);
void register_dlpack(pybind11::module_& m);
void register_cpu_pool(pybind11::module_& m);
void register_cpu_conv(pybind11::module_& m);
void register_cpu_winograd(pybind11::module_& m);
void register_results(pybind11::module_& m);

}  // namespace knetcnn::bindings
