#include "bindings.hpp"

PYBIND11_MODULE(_knetcnn, m) {
  m.doc() = "knetcnn's C++ core: Knet geometry, cuDNN descriptors and runtime queries, CPU convolution and pooling kernels";
  knetcnn::bindings::register_errors(m);
  knetcnn::bindings::register_geometry(m);
  knetcnn::bindings::register_descriptors(m);
  knetcnn::bindings::register_runtime(m);
  knetcnn::bindings::register_exec(m);
  knetcnn::bindings::register_dlpack(m);
  knetcnn::bindings::register_cpu_pool(m);
  knetcnn::bindings::register_cpu_conv(m);
  knetcnn::bindings::register_cpu_winograd(m);
  knetcnn::bindings::register_results(m);
}
