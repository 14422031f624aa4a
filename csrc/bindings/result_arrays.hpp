// NumPy arrays for the CPU backend's results, over core/result_memory's recycled blocks: the
// array owns its block through a capsule, which gives it back when the last view is gone.
// `function` names the caller in errors.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "../core/result_memory.hpp"

namespace knetcnn::bindings {

template <typename T>
pybind11::array_t<T, pybind11::array::c_style> result_array(const char* function, const std::vector<pybind11::ssize_t>& shape) {
  namespace py = pybind11;
  std::size_t count = 1;
  for (py::ssize_t extent : shape) {
    if (extent < 0) throw py::value_error(std::string(function) + ": negative extent in the shape");
    // NumPy's limit: an array's bytes must fit in a signed size.
    if (extent != 0 && count > std::size_t(std::numeric_limits<py::ssize_t>::max()) / sizeof(T) / std::size_t(extent))
      throw py::value_error(std::string(function) + ": the array would have more bytes than memory can address");
    count *= std::size_t(extent);
  }
  struct Block {
    void* memory;
    std::size_t bytes;
  };
  const std::size_t bytes = count * sizeof(T);
  void* memory = cpu::acquire_result_memory(bytes);
  Block* block = nullptr;
  try {
    block = new Block{memory, bytes};
  } catch (...) {
    cpu::release_result_memory(memory, bytes);
    throw;
  }
  py::capsule owner(block, [](void* p) {
    auto* b = static_cast<Block*>(p);
    cpu::release_result_memory(b->memory, b->bytes);
    delete b;
  });
  return py::array_t<T, py::array::c_style>(shape, static_cast<T*>(block->memory), owner);
}

}  // namespace knetcnn::bindings
