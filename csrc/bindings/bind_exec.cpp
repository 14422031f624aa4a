// The cuDNN execution core: ops on raw device pointers, execution options, and the algorithm
// cache. Thin: every check lives in the C++ core. The GIL is released around the device work;
// exceptions propagate after it is re-acquired, so the translator in bind_errors.cpp builds the
// Python exception with the GIL held.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <optional>

#include <cudnn.h>

#include "../core/algo_cache.hpp"
#include "../core/conv_exec.hpp"
#include "../core/errors.hpp"
#include "../core/exec_options.hpp"
#include "../core/handle_pool.hpp"
#include "../core/pool_exec.hpp"
#include "../core/workspace.hpp"
#include "bindings.hpp"

namespace py = pybind11;

namespace knetcnn::bindings {
namespace {

DeviceTensor tensor(std::uintptr_t data, const Shape& strides) { return DeviceTensor{data, strides}; }

ExecTarget target(int device, std::uintptr_t stream) {
  return ExecTarget{device, reinterpret_cast<cudaStream_t>(stream)};
}

py::dict options_dict(const ExecOptions& o) {
  py::dict out;
  out["algo"] = algo_policy_name(o.algo);
  out["workspace_limit"] = o.workspace_limit ? py::cast(*o.workspace_limit) : py::none();
  out["allow_tf32"] = o.allow_tf32;
  return out;
}

DeviceSignature signature_from(const std::optional<std::map<int, std::string>>& devices) {
  if (!devices) return cuda_device_signature;
  return [devices](int device) {
    auto it = devices->find(device);
    return it == devices->end() ? std::string() : it->second;
  };
}

constexpr const char* kCommonDoc = R"doc(

Pointers are device addresses as ints (``__cuda_array_interface__['data'][0]``, DLPack's data
pointer plus byte offset). Shapes come from ``geometry``; each ``*_strides`` gives that array's
element strides (not bytes), empty for C-contiguous. ``dtype`` is 'float16', 'bfloat16',
'float32' or 'float64' for every array. The result is ``alpha * op(...) + beta * out``
(``beta=0`` overwrites). ``device`` is the arrays' device ordinal; ``stream`` a cudaStream_t
as an int (0 or 1: the legacy default stream, 2: the per-thread default stream). The work is
enqueued on ``stream`` and not waited for. The algorithm policy, workspace limit and TF32 come
from ``knetcnn.options``. All arguments are checked (ValueError/TypeError) before cuDNN is
called; without a usable GPU a DeviceUnavailableError says why.)doc";

std::string doc(const char* text) { return std::string(text) + kCommonDoc; }

}  // namespace

void register_exec(py::module_& m) {
  // ---- convolution ----
  m.def(
      "exec_conv4",
      [](const ConvGeometry& g, const std::string& dtype, std::uintptr_t w, std::uintptr_t x, std::uintptr_t y,
         double alpha, double beta, int device, std::uintptr_t stream, const Shape& w_strides,
         const Shape& x_strides, const Shape& y_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        conv4_exec(g, t, tensor(w, w_strides), tensor(x, x_strides), tensor(y, y_strides), alpha, beta,
                   target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("w"), py::arg("x"), py::arg("y"), py::kw_only(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("w_strides") = Shape{}, py::arg("x_strides") = Shape{}, py::arg("y_strides") = Shape{},
      doc("y = conv4(w, x): cudnnConvolutionForward.\n\ngeometry: conv4_geometry(w.shape, x.shape). "
          "w: (O, C/group, *k) = geometry.filter_shape, C-contiguous; x: geometry.input_shape; "
          "y (written): geometry.output_shape.")
          .c_str());
  m.def(
      "exec_conv4x",
      [](const ConvGeometry& g, const std::string& dtype, std::uintptr_t w, std::uintptr_t dy, std::uintptr_t dx,
         double alpha, double beta, int device, std::uintptr_t stream, const Shape& w_strides,
         const Shape& dy_strides, const Shape& dx_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        conv4x_exec(g, t, tensor(w, w_strides), tensor(dy, dy_strides), tensor(dx, dx_strides), alpha, beta,
                    target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("w"), py::arg("dy"), py::arg("dx"), py::kw_only(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("w_strides") = Shape{}, py::arg("dy_strides") = Shape{}, py::arg("dx_strides") = Shape{},
      doc("dx = conv4x(w, x, dy): cudnnConvolutionBackwardData (x is not read: only its shape matters).\n\n"
          "geometry: conv4_geometry(w.shape, x.shape). w: geometry.filter_shape, C-contiguous; "
          "dy: geometry.output_shape; dx (written): geometry.input_shape.")
          .c_str());
  m.def(
      "exec_conv4w",
      [](const ConvGeometry& g, const std::string& dtype, std::uintptr_t x, std::uintptr_t dy, std::uintptr_t dw,
         double alpha, double beta, int device, std::uintptr_t stream, const Shape& x_strides,
         const Shape& dy_strides, const Shape& dw_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        conv4w_exec(g, t, tensor(x, x_strides), tensor(dy, dy_strides), tensor(dw, dw_strides), alpha, beta,
                    target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("x"), py::arg("dy"), py::arg("dw"), py::kw_only(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("x_strides") = Shape{}, py::arg("dy_strides") = Shape{}, py::arg("dw_strides") = Shape{},
      doc("dw = conv4w(w, x, dy): cudnnConvolutionBackwardFilter (w is not read).\n\n"
          "geometry: conv4_geometry(w.shape, x.shape). x: geometry.input_shape; dy: geometry.output_shape; "
          "dw (written): geometry.filter_shape, C-contiguous.")
          .c_str());
  m.def(
      "exec_deconv4",
      [](const ConvGeometry& g, const std::string& dtype, std::uintptr_t w, std::uintptr_t x, std::uintptr_t y,
         double alpha, double beta, int device, std::uintptr_t stream, const Shape& w_strides,
         const Shape& x_strides, const Shape& y_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        deconv4_exec(g, t, tensor(w, w_strides), tensor(x, x_strides), tensor(y, y_strides), alpha, beta,
                     target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("w"), py::arg("x"), py::arg("y"), py::kw_only(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("w_strides") = Shape{}, py::arg("x_strides") = Shape{}, py::arg("y_strides") = Shape{},
      doc("y = deconv4(w, x): cudnnConvolutionBackwardData with deconv4's x as cuDNN's dy and its result "
          "as cuDNN's dx.\n\ngeometry: deconv4_geometry(w.shape, x.shape) (forward terms). "
          "w: (C_in, C_out/group, *k) = geometry.filter_shape, C-contiguous; x (deconv4's input): "
          "geometry.output_shape; y (written, deconv4's result): geometry.input_shape. output_padding >= "
          "stride is handled with a zero-padded temporary.")
          .c_str());
  m.def(
      "exec_deconv4w",
      [](const ConvGeometry& g, const std::string& dtype, std::uintptr_t x, std::uintptr_t dy, std::uintptr_t dw,
         double alpha, double beta, int device, std::uintptr_t stream, const Shape& x_strides,
         const Shape& dy_strides, const Shape& dw_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        deconv4w_exec(g, t, tensor(x, x_strides), tensor(dy, dy_strides), tensor(dw, dw_strides), alpha, beta,
                      target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("x"), py::arg("dy"), py::arg("dw"), py::kw_only(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("x_strides") = Shape{}, py::arg("dy_strides") = Shape{}, py::arg("dw_strides") = Shape{},
      doc("dw = deconv4w(w, x, dy) = conv4w(w, dy, x): cudnnConvolutionBackwardFilter with deconv4's dy as "
          "cuDNN's x and deconv4's x as cuDNN's dy.\n\ngeometry: deconv4_geometry(w.shape, x.shape). "
          "x (deconv4's input): geometry.output_shape; dy (gradient of deconv4's result): "
          "geometry.input_shape; dw (written): geometry.filter_shape, C-contiguous.")
          .c_str());
  m.def(
      "exec_deconv4x",
      [](const ConvGeometry& g, const std::string& dtype, std::uintptr_t w, std::uintptr_t dy, std::uintptr_t dx,
         double alpha, double beta, int device, std::uintptr_t stream, const Shape& w_strides,
         const Shape& dy_strides, const Shape& dx_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        deconv4x_exec(g, t, tensor(w, w_strides), tensor(dy, dy_strides), tensor(dx, dx_strides), alpha, beta,
                      target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("w"), py::arg("dy"), py::arg("dx"), py::kw_only(),
      py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("w_strides") = Shape{}, py::arg("dy_strides") = Shape{}, py::arg("dx_strides") = Shape{},
      doc("dx = deconv4x(w, x, dy) = conv4(w, dy): cudnnConvolutionForward with deconv4's dy as cuDNN's x "
          "and dx as cuDNN's y.\n\ngeometry: deconv4_geometry(w.shape, x.shape). w: geometry.filter_shape, "
          "C-contiguous; dy (gradient of deconv4's result): geometry.input_shape; dx (written, shape of "
          "deconv4's x): geometry.output_shape.")
          .c_str());

  // ---- pooling ----
  m.def(
      "exec_pool",
      [](const PoolGeometry& g, const std::string& dtype, std::uintptr_t x, std::uintptr_t y, double alpha,
         double beta, int device, std::uintptr_t stream, const Shape& x_strides, const Shape& y_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        pool_exec(g, t, tensor(x, x_strides), tensor(y, y_strides), alpha, beta, target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("x"), py::arg("y"), py::kw_only(), py::arg("alpha") = 1.0,
      py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0, py::arg("x_strides") = Shape{},
      py::arg("y_strides") = Shape{},
      doc("y = pool(x): cudnnPoolingForward.\n\ngeometry: pool_geometry(x.shape). x: geometry.input_shape; "
          "y (written): geometry.output_shape.")
          .c_str());
  m.def(
      "exec_poolx",
      [](const PoolGeometry& g, const std::string& dtype, std::uintptr_t x, std::uintptr_t y, std::uintptr_t dy,
         std::uintptr_t dx, double alpha, double beta, int device, std::uintptr_t stream, const Shape& x_strides,
         const Shape& y_strides, const Shape& dy_strides, const Shape& dx_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        poolx_exec(g, t, tensor(x, x_strides), tensor(y, y_strides), tensor(dy, dy_strides), tensor(dx, dx_strides),
                   alpha, beta, target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("x"), py::arg("y"), py::arg("dy"), py::arg("dx"),
      py::kw_only(), py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0,
      py::arg("x_strides") = Shape{}, py::arg("y_strides") = Shape{}, py::arg("dy_strides") = Shape{},
      py::arg("dx_strides") = Shape{},
      doc("dx = poolx(x, y, dy): cudnnPoolingBackward. y is pool(x) with the same alpha; in max modes with "
          "alpha != 1 the unscaled forward output is recomputed for cuDNN.\n\ngeometry: pool_geometry(x.shape). "
          "x: geometry.input_shape; y, dy: geometry.output_shape; dx (written): geometry.input_shape.")
          .c_str());
  m.def(
      "exec_unpool",
      [](const PoolGeometry& g, const std::string& dtype, std::uintptr_t x, std::uintptr_t y, double alpha,
         double beta, int device, std::uintptr_t stream, const Shape& x_strides, const Shape& y_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        unpool_exec(g, t, tensor(x, x_strides), tensor(y, y_strides), alpha, beta, target(device, stream), options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("x"), py::arg("y"), py::kw_only(), py::arg("alpha") = 1.0,
      py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0, py::arg("x_strides") = Shape{},
      py::arg("y_strides") = Shape{},
      doc("y = unpool(x): cudnnPoolingBackward in the mapped average mode with unpool's x as cuDNN's dy and "
          "the result as cuDNN's dx; cuDNN's alpha is prod(window)/alpha.\n\ngeometry: unpool_geometry(x.shape) "
          "(forward terms). x (unpool's input): geometry.output_shape; y (written, unpool's result): "
          "geometry.input_shape.")
          .c_str());
  m.def(
      "exec_unpoolx",
      [](const PoolGeometry& g, const std::string& dtype, std::uintptr_t dy, std::uintptr_t dx, double alpha,
         double beta, int device, std::uintptr_t stream, const Shape& dy_strides, const Shape& dx_strides) {
        const DType t = dtype_from_name(dtype);
        const ExecOptions options = effective_exec_options();
        py::gil_scoped_release release;
        unpoolx_exec(g, t, tensor(dy, dy_strides), tensor(dx, dx_strides), alpha, beta, target(device, stream),
                     options);
      },
      py::arg("geometry"), py::arg("dtype"), py::arg("dy"), py::arg("dx"), py::kw_only(), py::arg("alpha") = 1.0,
      py::arg("beta") = 0.0, py::arg("device") = 0, py::arg("stream") = 0, py::arg("dy_strides") = Shape{},
      py::arg("dx_strides") = Shape{},
      doc("dx = unpoolx(x, y, dy) = prod(window) * pool(dy, mapped mode, alpha=1/alpha): cudnnPoolingForward "
          "with cuDNN alpha prod(window)/alpha (unpool's x and y are not needed).\n\ngeometry: "
          "unpool_geometry(x.shape). dy (gradient of unpool's result): geometry.input_shape; dx (written, "
          "shape of unpool's x): geometry.output_shape.")
          .c_str());

  // ---- plans: what a call hands cuDNN, without a device ----
  m.def(
      "plan_conv",
      [](const std::string& op, const ConvGeometry& g, const std::string& dtype, int device,
         std::optional<std::size_t> workspace_limit, const Shape& x_strides, const Shape& y_strides) {
        const ExecOptions options = effective_exec_options();
        const std::size_t limit = options.workspace_limit ? *options.workspace_limit
                                                          : workspace_limit.value_or(kDefaultWorkspaceCap);
        const ConvPlan p = plan_conv(op, g, dtype_from_name(dtype), options, device, limit, x_strides, y_strides);
        py::dict out;
        out["direction"] = conv_direction_name(p.direction);
        out["x_shape"] = py::tuple(py::cast(p.x_shape));
        out["w_shape"] = py::tuple(py::cast(p.w_shape));
        out["y_shape"] = py::tuple(py::cast(p.y_shape));
        out["y_through_temporary"] = p.y_through_temporary;
        out["cudnn_forward_dims"] = py::tuple(py::cast(p.cudnn_forward_dims));
        out["key"] = p.key;
        return out;
      },
      py::arg("op"), py::arg("geometry"), py::arg("dtype"), py::arg("device") = 0,
      py::arg("workspace_limit") = py::none(), py::arg("x_strides") = Shape{}, py::arg("y_strides") = Shape{},
      "Builds the descriptors a convolution op would hand cuDNN (host-only) under the current options and "
      "returns the direction, the shapes in forward terms (x, w, y = cuDNN's forward output), whether y goes "
      "through a zero-padded temporary, cuDNN's forward output dims and the algorithm-cache key. The workspace "
      "limit in the key is the option's, else `workspace_limit`, else 256 MiB (a device measures its own).");
  m.def(
      "plan_pool",
      [](const PoolGeometry& g, double alpha) {
        const ExecOptions options = effective_exec_options();
        PoolGeometry run = g;
        run.cudnn_mode = effective_pool_mode(g, options);
        const PoolingDescriptor pd(run);
        py::dict out;
        out["cudnn_mode"] = run.cudnn_mode;
        out["pooling_mode"] = static_cast<int>(pd.read().mode);
        out["cudnn_alpha"] = g.transposed ? unpool_scale(g, alpha) : alpha;
        return out;
      },
      py::arg("geometry"), py::arg("alpha") = 1.0,
      "The pooling mode that runs under the current options (max becomes MAX_DETERMINISTIC under "
      "algo='deterministic') and the alpha cuDNN gets (prod(window)/alpha for unpool/unpoolx).");

  // ---- options ----
  m.def("get_default_options", []() { return options_dict(default_exec_options()); },
        "The process-wide execution options: {'algo', 'workspace_limit' (None: the default), 'allow_tf32'}.");
  m.def(
      "set_default_options",
      [](const std::string& algo, std::optional<std::size_t> workspace_limit, bool allow_tf32) {
        ExecOptions o;
        o.algo = algo_policy_from_name(algo);
        o.workspace_limit = workspace_limit;
        o.allow_tf32 = allow_tf32;
        set_default_exec_options(o);
      },
      py::arg("algo"), py::arg("workspace_limit"), py::arg("allow_tf32"));
  m.def(
      "get_thread_options",
      []() {
        const ExecOptionsOverride o = thread_exec_override();
        py::dict out;
        if (o.algo) out["algo"] = algo_policy_name(*o.algo);
        if (o.workspace_limit) out["workspace_limit"] = *o.workspace_limit ? py::cast(**o.workspace_limit) : py::none();
        if (o.allow_tf32) out["allow_tf32"] = *o.allow_tf32;
        return out;
      },
      "This thread's override of the defaults: only the keys it sets.");
  m.def(
      "set_thread_options",
      [](const py::dict& fields) {
        ExecOptionsOverride o;
        for (auto item : fields) {
          const std::string name = py::cast<std::string>(item.first);
          if (name == "algo") {
            o.algo = algo_policy_from_name(py::cast<std::string>(item.second));
          } else if (name == "workspace_limit") {
            o.workspace_limit = item.second.is_none() ? std::optional<std::size_t>()
                                                      : std::optional<std::size_t>(py::cast<std::size_t>(item.second));
          } else if (name == "allow_tf32") {
            o.allow_tf32 = py::cast<bool>(item.second);
          } else {
            throw knetcnn::value_error("set_thread_options: unknown option '" + name + "'");
          }
        }
        set_thread_exec_override(o);
      },
      py::arg("fields"), "Replaces this thread's override; keys: 'algo', 'workspace_limit' (None: default), "
                         "'allow_tf32'. An empty dict removes it.");
  m.def("effective_options", []() { return options_dict(effective_exec_options()); },
        "The options a call on this thread uses now: the defaults with this thread's override applied.");

  // ---- algorithm cache, workspaces, handles ----
  m.def(
      "algo_cache_info",
      []() {
        AlgoCacheStats s;
        WorkspaceStats w;
        int handles = 0;
        {
          // Queries the driver (pool sizes) and takes the core's locks: never with the GIL held,
          // so that a thread inside a knetcnn call that needs the GIL back cannot deadlock us.
          py::gil_scoped_release release;
          s = algo_cache().stats();
          w = workspace_stats();
          handles = cudnn_handles_created();
        }
        py::dict out;
        out["hits"] = s.hits;
        out["misses"] = s.misses;
        out["evictions"] = s.evictions;
        out["size"] = s.size;
        out["capacity"] = s.capacity;
        out["workspace_buffers"] = w.buffers;
        out["workspace_bytes"] = w.bytes;
        out["cudnn_handles"] = handles;
        return out;
      },
      "Algorithm-cache counters and size, plus the workspace buffers and cuDNN handles held.");
  m.def(
      "algo_cache_clear",
      []() {
        py::gil_scoped_release release;
        release_workspaces();  // first: it refuses during a capture it can see, changing nothing
        algo_cache().clear();
      },
      "Forgets every algorithm choice, resets the counters and releases the workspace memory knetcnn holds "
      "and no longer uses, without synchronizing a device (memory whose asynchronous free has not completed "
      "yet is released at a later clear or synchronization). Must not run during a CUDA graph capture: it "
      "raises CudaError, changing nothing, where it can see one (this thread's default streams, or a blocking "
      "stream, of a device knetcnn holds memory on). CUDA graphs own the workspaces they captured: they stay "
      "valid.");
  m.def("algo_cache_set_capacity", [](std::size_t capacity) { algo_cache().set_capacity(capacity); },
        py::arg("capacity"), py::call_guard<py::gil_scoped_release>(),
        "Bounds the cache to `capacity` entries (least recently used evicted first).");
  m.def("algo_cache_keys", []() { return algo_cache().keys(); }, "Keys, most recently used first.");
  m.def(
      "algo_cache_entry",
      [](const std::string& key) -> py::object {
        const auto found = algo_cache().peek(key);  // not counted as a hit
        if (!found) return py::none();
        py::list out;
        for (const AlgoCandidate& c : *found)
          out.append(py::make_tuple(c.algo, static_cast<int>(c.math_type), c.workspace));
        return out;
      },
      py::arg("key"), "[(algo, math type, workspace bytes), ...] for a key, or None.");
  m.def(
      "_algo_cache_insert",
      [](const std::string& key, const std::vector<std::tuple<int, int, std::size_t>>& candidates) {
        std::vector<AlgoCandidate> list;
        for (const auto& [algo, math, workspace] : candidates)
          list.push_back(AlgoCandidate{algo, static_cast<cudnnMathType_t>(math), workspace});
        // Held to the rules a loaded entry meets (and every run checks them again).
        const std::string why = cache_entry_violation(key, list);
        if (!why.empty()) throw knetcnn::value_error("_algo_cache_insert: " + why);
        algo_cache().insert(key, std::move(list));
      },
      py::arg("key"), py::arg("candidates"),
      "Tests only: inserts an entry as a search would; ValueError if its key's options forbid it.");
  m.def(
      "algo_cache_save",
      [](const std::string& path, const std::optional<std::map<int, std::string>>& devices) {
        const DeviceSignature signature = signature_from(devices);
        py::gil_scoped_release release;
        return algo_cache().save(path, cudnnGetVersion(), signature);
      },
      py::arg("path"), py::arg("devices") = py::none(),
      "Writes the cache to a text file; returns the number of entries. `devices` ({ordinal: name}) replaces "
      "the CUDA runtime's device names (for tests and tools).");
  m.def(
      "algo_cache_load",
      [](const std::string& path, const std::optional<std::map<int, std::string>>& devices) {
        const DeviceSignature signature = signature_from(devices);
        AlgoCacheLoadReport r;
        {
          py::gil_scoped_release release;
          r = algo_cache().load(path, cudnnGetVersion(), signature);
        }
        py::dict out;
        out["loaded"] = r.loaded;
        out["skipped"] = r.skipped;
        out["reason"] = r.reason;
        return out;
      },
      py::arg("path"), py::arg("devices") = py::none(),
      "Reads a file written by algo_cache_save: entries from another cuDNN version, or for a device ordinal "
      "that now names another device, are skipped (the report says why).");
}

}  // namespace knetcnn::bindings
