#include "device_memory.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "cudnn_check.hpp"
#include "errors.hpp"

// cudaStreamGetDevice appeared in CUDA runtime 12.8; the wheels allow any 12.x runtime. A weak
// reference keeps the module loadable on older runtimes, where it is null and the check is
// skipped.
extern "C" cudaError_t cudaStreamGetDevice(cudaStream_t stream, int* device) __attribute__((weak));

namespace knetcnn {
namespace {

std::string hex(const void* p) {
  std::ostringstream out;
  out << "0x" << std::hex << reinterpret_cast<std::uintptr_t>(p);
  return out.str();
}

// ---- the driver's primary-context query, through the runtime's entry-point table ----

using PrimaryCtxGetState = int (*)(int device, unsigned int* flags, int* active);  // CUresult(CUdevice, ...)
using DeviceGet = int (*)(int* device, int ordinal);                               // CUresult(CUdevice*, int)

struct DriverQueries {
  PrimaryCtxGetState get_state = nullptr;
  DeviceGet device_get = nullptr;
};

void* driver_entry_point(const char* symbol) {
  void* function = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaGetDriverEntryPoint(symbol, &function, cudaEnableDefault, &found);
  clear_own_cuda_error(status, pending);
  return status == cudaSuccess && found == cudaDriverEntryPointSuccess ? function : nullptr;
}

const DriverQueries& driver_queries() {
  static const DriverQueries queries = [] {
    DriverQueries q;
    q.get_state = reinterpret_cast<PrimaryCtxGetState>(driver_entry_point("cuDevicePrimaryCtxGetState"));
    q.device_get = reinterpret_cast<DeviceGet>(driver_entry_point("cuDeviceGet"));
    return q;
  }();
  return queries;
}

// ---- knetcnn's stream-ordered pools ----

constexpr std::size_t kMinPoolRetention = std::size_t{64} << 20;

struct Pools {
  std::mutex mutex;
  std::map<int, cudaMemPool_t> pools;
  std::map<int, std::size_t> retention;  // wanted release threshold per device
  std::map<int, std::size_t> applied;    // threshold last set on the pool
};

// Never destroyed: pools (and their memory) live until the process ends.
Pools& pools() {
  static Pools* p = new Pools();
  return *p;
}

// The pool for `device` (current), created on first use; applies a raised retention bound.
// Eager only: never called while the stream captures.
cudaMemPool_t knetcnn_pool(int device) {
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mutex);
  cudaMemPool_t& pool = p.pools[device];
  const std::string context = "knetcnn's memory pool on device " + std::to_string(device);
  if (!pool) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    RelaxedCaptureMode relaxed;
    cudaMemPool_t created = nullptr;
    KNETCNN_CUDA_CTX(cudaMemPoolCreate(&created, &props), context);
    pool = created;
    p.applied[device] = 0;
  }
  const std::size_t wanted = std::max(kMinPoolRetention, p.retention[device]);
  if (p.applied[device] < wanted) {
    unsigned long long threshold = wanted;
    KNETCNN_CUDA_CTX(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold), context);
    p.applied[device] = wanted;
  }
  return pool;
}

}  // namespace

int primary_context_active(int device) {
  const DriverQueries& q = driver_queries();
  if (!q.get_state || !q.device_get) return -1;
  int handle = 0;
  if (q.device_get(&handle, device) != 0) return -1;  // CUDA_SUCCESS is 0
  unsigned int flags = 0;
  int active = 0;
  if (q.get_state(handle, &flags, &active) != 0) return -1;
  return active ? 1 : 0;
}

DeviceGuard::DeviceGuard(int device) {
  KNETCNN_CUDA_CTX(cudaGetDevice(&previous_), "the caller's current device");
  if (previous_ != device) {
    KNETCNN_CUDA_CTX(cudaSetDevice(device), "device " + std::to_string(device));
    switched_ = true;
  }
}

int DeviceGuard::restores() const {
  if (!switched_) return -1;
  // Unknown (no driver query): restore, as before; the cost is at worst the context the caller's
  // view needs anyway.
  return primary_context_active(previous_) == 0 ? 0 : 1;
}

DeviceGuard::~DeviceGuard() {
  if (restores() != 1) return;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaSetDevice(previous_);
  clear_own_cuda_error(status, pending);
}

CaptureState stream_capture_state(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t result = cudaStreamIsCapturing(stream, &status);
  if (result != cudaSuccess) {
    clear_own_cuda_error(result, pending);
    return CaptureState::Unknown;
  }
  switch (status) {
    case cudaStreamCaptureStatusNone: return CaptureState::None;
    case cudaStreamCaptureStatusActive: return CaptureState::Active;
    case cudaStreamCaptureStatusInvalidated: return CaptureState::Invalidated;
  }
  return CaptureState::Unknown;
}

bool capture_forbids_sync(CaptureState state) { return state != CaptureState::None; }

std::string search_refusal_reason(AlgoPolicy policy, CaptureState state) {
  if (policy != AlgoPolicy::Benchmark || state == CaptureState::None) return "";
  const char* what = state == CaptureState::Active        ? "is capturing a CUDA graph"
                     : state == CaptureState::Invalidated ? "is in an invalidated CUDA graph capture"
                                                          : "cannot be queried for CUDA graph capture";
  return std::string("algo='benchmark' must time cuDNN's algorithms, but the stream ") + what +
         " (cudaStreamIsCapturing), where running and synchronizing is not allowed. Run this call "
         "once before capturing (the choice is cached and reused during capture), or capture under "
         "knetcnn.options(algo='heuristic')";
}

RelaxedCaptureMode::RelaxedCaptureMode() {
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaThreadExchangeStreamCaptureMode(&previous_);
  clear_own_cuda_error(status, pending);
  exchanged_ = status == cudaSuccess;
}

RelaxedCaptureMode::~RelaxedCaptureMode() {
  if (exchanged_) cudaThreadExchangeStreamCaptureMode(&previous_);
}

bool is_special_stream(cudaStream_t stream) {
  return stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread;
}

void check_stream_device(cudaStream_t stream, int device) {
  if (is_special_stream(stream) || cudaStreamGetDevice == nullptr) return;
  int stream_device = -1;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaStreamGetDevice(stream, &stream_device);
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    throw value_error("stream=" + hex(stream) + ": cudaStreamGetDevice failed with " + cudaGetErrorName(status) +
                      ": pass a live CUDA stream of device " + std::to_string(device) +
                      " (or 0 for the default stream)");
  }
  if (stream_device != device)
    throw value_error("stream=" + hex(stream) + " belongs to device " + std::to_string(stream_device) +
                      ", but the arrays are on device " + std::to_string(device) + ": pass a stream of device " +
                      std::to_string(device) + " (or 0 for its default stream)");
}

void check_not_null(const char* role, const void* pointer) {
  if (pointer == nullptr)
    throw value_error(std::string(role) + " is a null device pointer: pass the address of a device array");
}

void check_device_pointer(const char* role, const void* pointer, int device) {
  cudaPointerAttributes attributes{};
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaPointerGetAttributes(&attributes, pointer);
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    throw value_error(std::string(role) + " = " + hex(pointer) +
                      " is not a pointer the CUDA runtime knows (" + cudaGetErrorName(status) +
                      "): pass the address of a device array");
  }
  if (attributes.type == cudaMemoryTypeUnregistered)
    throw value_error(std::string(role) + " = " + hex(pointer) +
                      " is ordinary host memory, which the GPU cannot read: pass a device array");
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != device)
    throw value_error(std::string(role) + " = " + hex(pointer) + " is on device " +
                      std::to_string(attributes.device) + ", but the call runs on device " +
                      std::to_string(device) + ": all arrays of one call must be on one device");
}

bool memory_pools_supported(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, bool> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(device);
  if (it != known.end()) return it->second;
  int value = 0;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaDeviceGetAttribute(&value, cudaDevAttrMemoryPoolsSupported, device);
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    return false;  // not remembered: a later call may find the device
  }
  return known[device] = (value != 0);
}

bool is_out_of_memory(int cuda_error_code) { return cuda_error_code == static_cast<int>(cudaErrorMemoryAllocation); }

DeviceScratch::DeviceScratch(std::size_t bytes, int device, cudaStream_t stream, CaptureState capture, const char* what)
    : bytes_(bytes), stream_(stream) {
  if (bytes == 0) return;
  const std::string context = std::string(what) + ", " + std::to_string(bytes) + " bytes on device " +
                              std::to_string(device);
  if (memory_pools_supported(device)) {
    stream_ordered_ = true;
    if (capture == CaptureState::None) {
      const cudaMemPool_t pool = knetcnn_pool(device);
      KNETCNN_CUDA_CTX(cudaMallocFromPoolAsync(&pointer_, bytes, pool, stream), context);
    } else {
      // A graph memory node: the graph owns this memory (see the header).
      KNETCNN_CUDA_CTX(cudaMallocAsync(&pointer_, bytes, stream), context);
    }
    return;
  }
  if (capture != CaptureState::None)
    throw CudaError(static_cast<int>(cudaErrorStreamCaptureUnsupported), "cudaErrorStreamCaptureUnsupported",
                    context + ": device " + std::to_string(device) +
                        " has no stream-ordered allocator (cudaDevAttrMemoryPoolsSupported is 0), so this buffer "
                        "cannot be allocated while the stream captures a CUDA graph (cudaMalloc and synchronizing "
                        "are not allowed there)");
  RelaxedCaptureMode relaxed;
  KNETCNN_CUDA_CTX(cudaMalloc(&pointer_, bytes), context);
}

DeviceScratch::~DeviceScratch() {
  if (!pointer_) return;
  const cudaError_t pending = cudaPeekAtLastError();
  cudaError_t status = cudaSuccess;
  if (stream_ordered_) {
    status = cudaFreeAsync(pointer_, stream_);
  } else {
    RelaxedCaptureMode relaxed;
    status = cudaStreamSynchronize(stream_);  // the work using the buffer must finish first
    const cudaError_t freed = cudaFree(pointer_);
    if (status == cudaSuccess) status = freed;
  }
  clear_own_cuda_error(status, pending);
}

void retain_pool_bytes(int device, std::size_t bytes) {
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mutex);
  std::size_t& wanted = p.retention[device];
  // Twice the largest workspace: one in use while the next call's is taken.
  const std::size_t doubled = bytes > std::numeric_limits<std::size_t>::max() / 2 ? bytes : 2 * bytes;
  wanted = std::max(wanted, doubled);
}

PoolStats stream_pool_stats() {
  std::vector<cudaMemPool_t> list;
  {
    Pools& p = pools();
    std::lock_guard<std::mutex> lock(p.mutex);
    for (const auto& [device, pool] : p.pools)
      if (pool) list.push_back(pool);
  }
  PoolStats stats;
  for (cudaMemPool_t pool : list) {
    unsigned long long reserved = 0;
    const cudaError_t pending = cudaPeekAtLastError();
    const cudaError_t status = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    clear_own_cuda_error(status, pending);
    if (status == cudaSuccess && reserved > 0) {
      ++stats.pools;
      stats.reserved += static_cast<std::size_t>(reserved);
    }
  }
  return stats;
}

void trim_stream_pools() {
  std::vector<std::pair<int, cudaMemPool_t>> list;
  {
    Pools& p = pools();
    std::lock_guard<std::mutex> lock(p.mutex);
    for (const auto& [device, pool] : p.pools)
      if (pool) list.emplace_back(device, pool);
  }
  for (const auto& [device, pool] : list) {
    const cudaError_t pending = cudaPeekAtLastError();
    DeviceGuard guard(device);
    RelaxedCaptureMode relaxed;
    // Frees still pending on a stream keep their memory until observed complete.
    cudaError_t status = cudaDeviceSynchronize();
    const cudaError_t trimmed = cudaMemPoolTrimTo(pool, 0);
    if (status == cudaSuccess) status = trimmed;
    clear_own_cuda_error(status, pending);
  }
}

}  // namespace knetcnn
