// DLPack capsules for knetcnn's exports (KnetArray.__dlpack__), built and cleaned up in C++.
//
// The tensor's deleter and the capsule's destructor are called by other libraries from C, on any
// thread, and sometimes while a Python exception is pending (a consumer that fails after taking
// the capsule drops it with its error set). So both are C++ functions here: the deleter takes
// the GIL itself, and the destructor saves and restores a pending exception around it, as the
// DLPack Python specification asks. The structures are declared below, matching dlpack.h v1.x.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "bindings.hpp"

namespace py = pybind11;

namespace {

// ---- dlpack.h v1.x (only what an exporter needs; layouts checked below) --------------------------
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
struct DLDevice {
  int32_t device_type;  // DLDeviceType: a C enum, int-sized
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
};

static_assert(sizeof(void*) == 8, "the DLPack layouts below are those of 64-bit platforms");
static_assert(sizeof(DLDevice) == 8 && sizeof(DLDataType) == 4, "dlpack.h layout");
static_assert(offsetof(DLTensor, device) == 8 && offsetof(DLTensor, ndim) == 16 && offsetof(DLTensor, dtype) == 20 &&
                  offsetof(DLTensor, shape) == 24 && offsetof(DLTensor, strides) == 32 &&
                  offsetof(DLTensor, byte_offset) == 40 && sizeof(DLTensor) == 48,
              "dlpack.h DLTensor layout");
static_assert(offsetof(DLManagedTensor, manager_ctx) == 48 && offsetof(DLManagedTensor, deleter) == 56 &&
                  sizeof(DLManagedTensor) == 64,
              "dlpack.h DLManagedTensor layout");
static_assert(offsetof(DLManagedTensorVersioned, manager_ctx) == 8 &&
                  offsetof(DLManagedTensorVersioned, deleter) == 16 && offsetof(DLManagedTensorVersioned, flags) == 24 &&
                  offsetof(DLManagedTensorVersioned, dl_tensor) == 32 && sizeof(DLManagedTensorVersioned) == 80,
              "dlpack.h DLManagedTensorVersioned layout");

constexpr uint32_t kMajor = 1, kMinor = 1;  // the version we write
constexpr int32_t kDLCPU = 1, kDLCUDA = 2;
constexpr int64_t kMaxNdim = 64;

template <class T>
struct Names;
template <>
struct Names<DLManagedTensor> {
  static constexpr const char* unused = "dltensor";
};
template <>
struct Names<DLManagedTensorVersioned> {
  static constexpr const char* unused = "dltensor_versioned";
};

bool interpreter_usable() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// The tensor's deleter: drops the owner (a KnetArray or a host copy) and frees the structure.
// Callable from any thread. Once the interpreter is gone (or going) the owner cannot be touched:
// its reference is leaked, which is harmless then.
template <class T>
void delete_tensor(T* self) {
  if (self == nullptr) return;
  auto* owner = static_cast<PyObject*>(self->manager_ctx);
  self->manager_ctx = nullptr;
  if (owner != nullptr && interpreter_usable()) {
    const PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);  // dropping the owner may run Python code
    Py_DECREF(owner);
    PyErr_Restore(type, value, traceback);
    PyGILState_Release(gil);
  }
  delete[] self->dl_tensor.shape;  // shape and strides are one block
  delete self;
}

// The capsule's destructor: runs the deleter only if nobody consumed the capsule (a consumer
// renames it "used_..." and then owns the tensor). Keeps any exception that is in flight.
template <class T>
void destroy_capsule(PyObject* capsule) {
  const char* name = Names<T>::unused;
  if (!PyCapsule_IsValid(capsule, name)) return;
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  auto* managed = static_cast<T*>(PyCapsule_GetPointer(capsule, name));
  if (managed == nullptr) {
    PyErr_WriteUnraisable(capsule);
  } else if (managed->deleter != nullptr) {
    managed->deleter(managed);
  }
  PyErr_Restore(type, value, traceback);
}

void fill(DLTensor& t, uintptr_t data, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides,
          int code, int bits, int32_t device_type, int32_t device_id, int64_t* dims) {
  const auto ndim = static_cast<int32_t>(shape.size());
  for (int32_t i = 0; i < ndim; ++i) {
    dims[i] = shape[i];
    dims[ndim + i] = strides[i];
  }
  t.data = reinterpret_cast<void*>(data);
  t.device = DLDevice{device_type, device_id};
  t.ndim = ndim;
  t.dtype = DLDataType{static_cast<uint8_t>(code), static_cast<uint8_t>(bits), 1};
  t.shape = dims;
  t.strides = dims + ndim;
  t.byte_offset = 0;
}

template <class T>
py::object make_capsule(T* managed) {
  PyObject* capsule = PyCapsule_New(managed, Names<T>::unused, &destroy_capsule<T>);
  if (capsule == nullptr) {
    delete_tensor(managed);  // drops the owner reference taken for it
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(capsule);
}

py::object dlpack_capsule(uintptr_t data, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides,
                          int code, int bits, int32_t device_type, int32_t device_id, py::object owner,
                          bool versioned, uint64_t flags) {
  if (shape.size() != strides.size())
    throw py::value_error("dlpack_capsule: shape and strides must have the same length");
  if (static_cast<int64_t>(shape.size()) > kMaxNdim) throw py::value_error("dlpack_capsule: more than 64 axes");
  if (code < 0 || code > 255 || bits < 1 || bits > 255)
    throw py::value_error("dlpack_capsule: dtype code must be 0..255 and bits 1..255");
  // CPU only for host copies (KnetArray.__dlpack__(dl_device=kDLCPU)) and the host tests.
  if (device_type != kDLCPU && device_type != kDLCUDA)
    throw py::value_error("dlpack_capsule: device_type must be kDLCPU (1) or kDLCUDA (2)");
  if (device_id < 0) throw py::value_error("dlpack_capsule: device_id must be >= 0");
  if (owner.is_none()) throw py::value_error("dlpack_capsule: an owner object is required");

  auto* dims = new int64_t[2 * shape.size() + 1];  // never empty: a 0-d tensor still gets valid pointers
  if (versioned) {
    auto* managed = new (std::nothrow) DLManagedTensorVersioned{};
    if (managed == nullptr) {
      delete[] dims;
      throw std::bad_alloc();
    }
    managed->version = DLPackVersion{kMajor, kMinor};
    managed->flags = flags;
    fill(managed->dl_tensor, data, shape, strides, code, bits, device_type, device_id, dims);
    managed->manager_ctx = owner.release().ptr();  // the strong reference the deleter drops
    managed->deleter = &delete_tensor<DLManagedTensorVersioned>;
    return make_capsule(managed);
  }
  auto* managed = new (std::nothrow) DLManagedTensor{};
  if (managed == nullptr) {
    delete[] dims;
    throw std::bad_alloc();
  }
  fill(managed->dl_tensor, data, shape, strides, code, bits, device_type, device_id, dims);
  managed->manager_ctx = owner.release().ptr();
  managed->deleter = &delete_tensor<DLManagedTensor>;
  return make_capsule(managed);
}

}  // namespace

namespace knetcnn::bindings {

void register_dlpack(py::module_& m) {
  m.def("dlpack_capsule", &dlpack_capsule, py::arg("data"), py::arg("shape"), py::arg("strides"), py::arg("code"),
        py::arg("bits"), py::arg("device_type"), py::arg("device_id"), py::arg("owner"), py::arg("versioned"),
        py::arg("flags") = 0,
        "A new DLPack capsule ('dltensor' or 'dltensor_versioned') over data; owner is kept alive until the "
        "tensor's deleter runs. strides are in elements. device_type: 1 (kDLCPU) or 2 (kDLCUDA).");
}

}  // namespace knetcnn::bindings
