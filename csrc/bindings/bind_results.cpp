// core.result_empty: uninitialized float64 / float32 arrays over recycled result memory, for
// the results the Python side allocates (knetcnn/cpu/conv.py, _direct.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "../core/result_memory.hpp"
#include "bindings.hpp"
#include "result_arrays.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {

void register_results(py::module_& m) {
  m.def(
      "result_empty",
      [](const std::vector<py::ssize_t>& shape, const py::object& dtype_like) -> py::array {
        const py::dtype dtype = py::dtype::from_args(dtype_like);
        if (dtype.equal(py::dtype::of<double>())) return result_array<double>("result_empty", shape);
        if (dtype.equal(py::dtype::of<float>())) return result_array<float>("result_empty", shape);
        throw py::type_error("result_empty: dtype must be float64 or float32, not " + std::string(py::str(dtype)));
      },
      py::arg("shape"), py::arg("dtype"),
      "An uninitialized C-contiguous array whose memory is recycled from earlier results once they "
      "are gone (no page faults on reuse).");
  m.def("retained_result_bytes", &cpu::retained_result_bytes,
        "Bytes of given-back result memory kept for reuse (at most core.RETAINED_RESULT_BYTES).");
  m.attr("RETAINED_RESULT_BYTES") = py::int_(cpu::kRetainedResultBytes);
  m.attr("MIN_RECYCLED_BYTES") = py::int_(cpu::kMinRecycledBytes);
}

}  // namespace knetcnn::bindings
