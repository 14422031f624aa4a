// C++ exceptions -> Python exceptions. cuDNN and CUDA failures become the classes defined in
// knetcnn/_errors.py (built there so that they can subclass MemoryError, ValueError, ...).
#include <pybind11/pybind11.h>

#include "../core/errors.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

void raise_from_factory(const char* factory, py::tuple args) {
  py::object error = py::module_::import("knetcnn._errors").attr(factory)(*args);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
}

}  // namespace

void register_errors(py::module_& m) {
  (void)m;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgumentError& e) {
      PyErr_SetString(e.kind() == ArgumentError::Kind::Type ? PyExc_TypeError : PyExc_ValueError, e.what());
    } catch (const CudnnError& e) {
      raise_from_factory("cudnn_error", py::make_tuple(e.what(), e.status(), e.status_name(), e.function()));
    } catch (const CudaError& e) {
      raise_from_factory("cuda_error", py::make_tuple(e.what(), e.code(), e.code_name()));
    } catch (const DeviceUnavailable& e) {
      raise_from_factory("device_unavailable", py::make_tuple(e.what()));
    }
  });
}

}  // namespace knetcnn::bindings
