#include "device_memory.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "cudnn_check.hpp"
#include "errors.hpp"
#include "test_hooks.hpp"

// cudaStreamGetDevice appeared in CUDA runtime 12.8; the wheels allow any 12.x runtime. A weak
// reference keeps the module loadable on older runtimes, where it is null and the check is
// skipped. Every other runtime function the core calls is in CUDA 12.0 (the newest is
// cudaStreamGetId, 12.0; the stream-ordered allocator and its pools are 11.2).
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

struct Pools {
  std::mutex mutex;
  std::map<int, cudaMemPool_t> pools;
  std::map<int, std::size_t> retention;  // wanted release threshold per device (0: the floor)
  std::map<int, std::size_t> applied;    // threshold last set on the pool
  std::map<int, std::size_t> total;      // the device's memory, measured once
};

// Never destroyed: pools (and their memory) live until the process ends.
Pools& pools() {
  static Pools* p = new Pools();
  return *p;
}

std::size_t wanted_threshold_locked(Pools& p, int device) {
  auto it = p.retention.find(device);
  return std::max(kMinPoolRetention, it == p.retention.end() ? 0 : it->second);
}

// The pool for `device` (current), created on first use; applies the wanted release threshold.
// Eager only: never called while the stream captures.
cudaMemPool_t knetcnn_pool(int device) {
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mutex);
  cudaMemPool_t& pool = p.pools[device];
  const std::string context = "knetcnn's memory pool on device " + std::to_string(device);
  RelaxedCaptureMode relaxed;
  if (!pool) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t created = nullptr;
    KNETCNN_CUDA_CTX(cudaMemPoolCreate(&created, &props), context);
    pool = created;
    p.applied[device] = 0;
    // No hidden cross-stream waits: with this policy on (the default) an allocation on one stream
    // may be made to wait, inside the GPU, for another stream's pending free, so that unrelated
    // threads' streams (the caller's, not ours) would wait on each other. Off, a pending free is
    // reused on another stream only once it is known complete (or ordered by the caller's own
    // events); otherwise the pool maps more memory, which the release threshold bounds.
    int off = 0;
    KNETCNN_CUDA_CTX(cudaMemPoolSetAttribute(created, cudaMemPoolReuseAllowInternalDependencies, &off), context);
  }
  const std::size_t wanted = wanted_threshold_locked(p, device);
  if (p.applied[device] != wanted) {
    unsigned long long threshold = wanted;
    KNETCNN_CUDA_CTX(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold), context);
    p.applied[device] = wanted;
  }
  return pool;
}

// ---- frees the runtime refused (pool path), retried on the same stream ----

struct PendingFree {
  int device = 0;
  void* pointer = nullptr;
  unsigned long long stream_id = 0;
};

struct PendingFrees {
  std::mutex mutex;
  std::vector<PendingFree> list;
  std::atomic<std::size_t> count{0};   // list.size(), readable without the mutex
  std::atomic<std::size_t> failed{0};  // every refused free, retried or not
};

PendingFrees& pending_frees() {
  static PendingFrees* f = new PendingFrees();
  return *f;
}

// A refused free: counted, and kept for a retry on the same stream where the stream is known.
void record_failed_free(int device, void* pointer, cudaStream_t stream, bool retry) {
  PendingFrees& f = pending_frees();
  ++f.failed;
  if (!retry) return;
  unsigned long long id = 0;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaStreamGetId(stream, &id);
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    return;  // no stream to order the free after: the block stays with the pool, counted
  }
  std::lock_guard<std::mutex> lock(f.mutex);
  f.list.push_back(PendingFree{device, pointer, id});
  f.count = f.list.size();
}

// Retries the refused frees made on `stream` (same cudaStreamGetId): the stream is in order, so
// the work that used those blocks precedes this free. In relaxed mode, on an eager stream.
void retry_pending_frees(int device, cudaStream_t stream) {
  PendingFrees& f = pending_frees();
  if (f.count.load() == 0) return;
  unsigned long long id = 0;
  cudaError_t pending = cudaPeekAtLastError();
  cudaError_t status = cudaStreamGetId(stream, &id);
  if (status != cudaSuccess) {
    clear_own_cuda_error(status, pending);
    return;
  }
  std::vector<void*> mine;
  {
    std::lock_guard<std::mutex> lock(f.mutex);
    auto keep = std::partition(f.list.begin(), f.list.end(), [&](const PendingFree& e) {
      return !(e.device == device && e.stream_id == id);
    });
    for (auto it = keep; it != f.list.end(); ++it) mine.push_back(it->pointer);
    f.list.erase(keep, f.list.end());
    f.count = f.list.size();
  }
  for (void* pointer : mine) {
    pending = cudaPeekAtLastError();
    status = cudaFreeAsync(pointer, stream);
    if (status != cudaSuccess) {
      clear_own_cuda_error(status, pending);
      std::lock_guard<std::mutex> lock(f.mutex);
      f.list.push_back(PendingFree{device, pointer, id});
      f.count = f.list.size();
    }
  }
}

// ---- idle buffers of devices without memory pools ----

struct HeldBuffer {
  int device = 0;
  void* pointer = nullptr;
  std::size_t bytes = 0;
  cudaEvent_t event = nullptr;       // recorded after the last use
  unsigned long long stream_id = 0;  // the stream of the last use
};

struct HeldBuffers {
  std::mutex mutex;
  std::list<HeldBuffer> idle;  // front: most recently given back
};

// Never destroyed: freeing device memory during process teardown is not safe.
HeldBuffers& held() {
  static HeldBuffers* h = new HeldBuffers();
  return *h;
}

// Whether the last use recorded in `event` has completed (no waiting).
bool event_done(cudaEvent_t event) {
  if (!event) return true;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaEventQuery(event);
  clear_own_cuda_error(status, pending);
  return status == cudaSuccess;
}

// The smallest idle buffer of `device` holding `bytes` that may be used on stream `stream_id`
// now: one last used on that stream (stream order protects it), else one whose last use has
// completed, else (`any`) any, which the caller must order with cudaStreamWaitEvent.
bool take_idle(int device, std::size_t bytes, unsigned long long stream_id, bool any, HeldBuffer* out) {
  HeldBuffers& h = held();
  std::lock_guard<std::mutex> lock(h.mutex);
  for (int pass = 0; pass < (any ? 3 : 2); ++pass) {
    auto best = h.idle.end();
    for (auto it = h.idle.begin(); it != h.idle.end(); ++it) {
      if (it->device != device || it->bytes < bytes) continue;
      if (best != h.idle.end() && best->bytes <= it->bytes) continue;
      const bool fits = pass == 0 ? it->stream_id == stream_id : pass == 1 ? event_done(it->event) : true;
      if (fits) best = it;
    }
    if (best != h.idle.end()) {
      *out = *best;
      h.idle.erase(best);
      return true;
    }
  }
  return false;
}

// Frees a buffer whose last use has completed; `device` is current, relaxed mode is on.
bool free_held(const HeldBuffer& b) {
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaFree(b.pointer);
  clear_own_cuda_error(status, pending);
  if (status != cudaSuccess) return false;
  if (b.event) cudaEventDestroy(b.event);
  return true;
}

// Frees idle buffers of `device` (current) beyond `keep`, oldest first, whose last use has
// completed, unless a blocking stream of the device captures (cudaFree may synchronize).
void free_idle_done(int device, std::size_t keep) {
  std::vector<HeldBuffer> victims;
  {
    HeldBuffers& h = held();
    std::lock_guard<std::mutex> lock(h.mutex);
    std::size_t mine = 0;
    for (const HeldBuffer& b : h.idle) mine += b.device == device;
    for (auto it = h.idle.end(); mine > keep && it != h.idle.begin();) {
      --it;
      if (it->device != device || !event_done(it->event)) continue;
      victims.push_back(*it);
      it = h.idle.erase(it);
      --mine;
    }
  }
  if (victims.empty()) return;
  std::vector<HeldBuffer> kept;
  if (blocking_capture_on_current_device()) {
    kept = std::move(victims);
  } else {
    for (const HeldBuffer& b : victims)
      if (!free_held(b)) kept.push_back(b);
  }
  if (!kept.empty()) {
    HeldBuffers& h = held();
    std::lock_guard<std::mutex> lock(h.mutex);
    h.idle.insert(h.idle.end(), kept.begin(), kept.end());
  }
}

// Sizes idle buffers are made in, so that slowly varying requests reuse them: powers of two from
// 4 KiB below 1 MiB, whole MiB above.
std::size_t held_size(std::size_t bytes) {
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  if (bytes >= kMiB) return bytes > std::numeric_limits<std::size_t>::max() - kMiB ? bytes : (bytes + kMiB - 1) / kMiB * kMiB;
  std::size_t size = 4096;
  while (size < bytes) size *= 2;
  return size;
}

thread_local int t_free_failures = 0;  // test_hooks::inject_free_failures

std::string stream_name(cudaStream_t stream) {
  if (stream == nullptr) return "0 (the legacy default stream)";
  if (stream == cudaStreamLegacy) return "cudaStreamLegacy";
  if (stream == cudaStreamPerThread) return "cudaStreamPerThread";
  return hex(stream);
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

CaptureState stream_capture_state(cudaStream_t stream, cudaError_t* error) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t result = cudaStreamIsCapturing(stream, &status);
  if (error) *error = result;
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

void check_capture_usable(CaptureState state, cudaError_t query_error, cudaStream_t stream, int device,
                          const std::string& what) {
  if (state == CaptureState::None || state == CaptureState::Active) return;
  const std::string where = what + ": stream=" + stream_name(stream) + " on device " + std::to_string(device);
  if (state == CaptureState::Invalidated)
    throw CudaError(static_cast<int>(cudaErrorStreamCaptureInvalidated), "cudaErrorStreamCaptureInvalidated",
                    where + ": its CUDA graph capture was invalidated by an earlier error (cudaStreamIsCapturing "
                            "gives cudaStreamCaptureStatusInvalidated), so nothing can run on it; end the capture "
                            "with cudaStreamEndCapture (which reports the error) before using the stream again");
  if (query_error == cudaSuccess) query_error = cudaErrorUnknown;  // Unknown always carries an error
  const char* name = cudaGetErrorName(query_error);
  if (query_error == cudaErrorStreamCaptureImplicit)
    throw CudaError(static_cast<int>(query_error), name ? name : "cudaErrorStreamCaptureImplicit",
                    where + ": a blocking stream of the device is capturing a CUDA graph (cudaStreamIsCapturing "
                            "gives cudaErrorStreamCaptureImplicit), and work on the legacy default stream would "
                            "join that capture and invalidate it. Nothing was enqueued. Pass the capturing stream, "
                            "a stream created with cudaStreamNonBlocking or the per-thread default stream, or call "
                            "after the capture ends");
  throw CudaError(static_cast<int>(query_error), name ? name : "?",
                  where + ": cudaStreamIsCapturing failed with " + (name ? name : "?") +
                      ", so whether the stream captures a CUDA graph is unknown and nothing was enqueued; pass a "
                      "live CUDA stream of device " + std::to_string(device) + " (or 0 for its default stream)");
}

bool blocking_capture_on_current_device() {
  cudaError_t error = cudaSuccess;
  return stream_capture_state(cudaStreamLegacy, &error) != CaptureState::None;
}

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
  if (test_hooks::memory_pools_disabled()) return false;
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
    : bytes_(bytes), device_(device), stream_(stream) {
  if (bytes == 0) return;
  const std::string context = std::string(what) + ", " + std::to_string(bytes) + " bytes on device " +
                              std::to_string(device);
  if (test_hooks::take_injected_allocation_failure())
    throw CudaError(static_cast<int>(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation",
                    "allocation failed (injected by test_hooks) [" + context + "]");
  test_hooks::ThreadRecord& record = test_hooks::thread_record();
  ++record.scratch_allocations;
  record.largest_scratch = std::max(record.largest_scratch, bytes);
  if (memory_pools_supported(device)) {
    if (capture == CaptureState::None) {
      RelaxedCaptureMode relaxed;  // another thread's global-mode capture must not refuse these
      retry_pending_frees(device, stream);
      const cudaMemPool_t pool = knetcnn_pool(device);
      KNETCNN_CUDA_CTX(cudaMallocFromPoolAsync(&pointer_, bytes, pool, stream), context);
      kind_ = Kind::Pool;
    } else {
      // A graph memory node: the graph owns this memory (see the header).
      KNETCNN_CUDA_CTX(cudaMallocAsync(&pointer_, bytes, stream), context);
      kind_ = Kind::Graph;
    }
    return;
  }
  if (capture != CaptureState::None)
    throw CudaError(static_cast<int>(cudaErrorStreamCaptureUnsupported), "cudaErrorStreamCaptureUnsupported",
                    context + ": device " + std::to_string(device) +
                        " has no stream-ordered allocator (cudaDevAttrMemoryPoolsSupported is 0), so this buffer "
                        "cannot be allocated while the stream captures a CUDA graph (cudaMalloc and synchronizing "
                        "are not allowed there)");
  KNETCNN_CUDA_CTX(cudaStreamGetId(stream, &stream_id_), context);
  RelaxedCaptureMode relaxed;
  HeldBuffer b;
  bool found = take_idle(device, bytes, stream_id_, false, &b);
  if (!found) {
    const std::size_t size = held_size(bytes);
    void* fresh = nullptr;
    cudaError_t pending = cudaPeekAtLastError();
    cudaError_t status = cudaMalloc(&fresh, size);
    clear_own_cuda_error(status, pending);
    if (status == cudaErrorMemoryAllocation) {
      free_idle_done(device, 0);  // idle memory of this device back to the driver, then once more
      pending = cudaPeekAtLastError();
      status = cudaMalloc(&fresh, size);
      clear_own_cuda_error(status, pending);
      if (status == cudaErrorMemoryAllocation && take_idle(device, bytes, stream_id_, true, &b)) {
        // Memory is short: a buffer still in use on another stream, ordered after that use.
        found = true;
        if (b.event) {
          pending = cudaPeekAtLastError();
          const cudaError_t waited = cudaStreamWaitEvent(stream, b.event, 0);
          if (waited != cudaSuccess) {
            clear_own_cuda_error(waited, pending);
            std::lock_guard<std::mutex> lock(held().mutex);
            held().idle.push_back(b);  // not ordered: not ours to use
            check_cuda(waited, "cudaStreamWaitEvent", context);
          }
        }
      }
    }
    if (!found) {
      if (status != cudaSuccess) check_cuda(status, "cudaMalloc", context);
      b = HeldBuffer{device, fresh, size, nullptr, stream_id_};
      pending = cudaPeekAtLastError();
      status = cudaEventCreateWithFlags(&b.event, cudaEventDisableTiming);
      if (status != cudaSuccess) {
        clear_own_cuda_error(status, pending);
        const cudaError_t freed = cudaFree(fresh);
        clear_own_cuda_error(freed, pending);
        check_cuda(status, "cudaEventCreateWithFlags", context);
      }
    }
  }
  pointer_ = b.pointer;
  held_bytes_ = b.bytes;
  event_ = b.event;
  kind_ = Kind::Held;
}

DeviceScratch::~DeviceScratch() {
  if (!pointer_) return;
  const cudaError_t pending = cudaPeekAtLastError();
  switch (kind_) {
    case Kind::Pool: {
      RelaxedCaptureMode relaxed;
      const bool injected = t_free_failures > 0 && t_free_failures-- > 0;
      const cudaError_t status = injected ? cudaErrorStreamCaptureUnsupported : cudaFreeAsync(pointer_, stream_);
      clear_own_cuda_error(status, pending);
      if (status != cudaSuccess) record_failed_free(device_, pointer_, stream_, true);
      break;
    }
    case Kind::Graph: {
      const cudaError_t status = cudaFreeAsync(pointer_, stream_);
      clear_own_cuda_error(status, pending);
      if (status != cudaSuccess) record_failed_free(device_, pointer_, stream_, false);  // the capture owns it
      break;
    }
    case Kind::Held: {
      RelaxedCaptureMode relaxed;
      // Mark the last use; where that fails, wait for the stream instead (its own, not capturing).
      cudaError_t status = cudaEventRecord(event_, stream_);
      if (status != cudaSuccess) status = cudaStreamSynchronize(stream_);
      clear_own_cuda_error(status, pending);
      if (status != cudaSuccess) {
        record_failed_free(device_, pointer_, stream_, false);  // its last use cannot be known: never reused
        break;
      }
      {
        HeldBuffers& h = held();
        std::lock_guard<std::mutex> lock(h.mutex);
        h.idle.push_front(HeldBuffer{device_, pointer_, held_bytes_, event_, stream_id_});
      }
      free_idle_done(device_, kMaxIdleBuffers);
      break;
    }
    case Kind::None: break;
  }
}

std::size_t pool_retention_for(std::size_t limit, std::size_t total_memory) {
  const std::size_t doubled = limit > std::numeric_limits<std::size_t>::max() / 2
                                  ? std::numeric_limits<std::size_t>::max()
                                  : 2 * limit;
  return std::max(kMinPoolRetention, std::min(doubled, total_memory / 4));
}

void retain_pool_bytes(int device, std::size_t bytes) {
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mutex);
  auto known = p.total.find(device);
  if (known == p.total.end()) {
    std::size_t free_bytes = 0, total_bytes = 0;
    RelaxedCaptureMode relaxed;  // a query, harmless to any capture
    const cudaError_t pending = cudaPeekAtLastError();
    const cudaError_t status = cudaMemGetInfo(&free_bytes, &total_bytes);
    clear_own_cuda_error(status, pending);
    if (status != cudaSuccess) return;  // not raised; measured at the next call
    known = p.total.emplace(device, total_bytes).first;
  }
  std::size_t& wanted = p.retention[device];
  wanted = std::max(wanted, pool_retention_for(bytes, known->second));
}

std::size_t pool_release_threshold(int device) {
  cudaMemPool_t pool = nullptr;
  {
    Pools& p = pools();
    std::lock_guard<std::mutex> lock(p.mutex);
    auto it = p.pools.find(device);
    if (it == p.pools.end() || !it->second) return 0;
    pool = it->second;
  }
  unsigned long long threshold = 0;
  RelaxedCaptureMode relaxed;
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  clear_own_cuda_error(status, pending);
  return status == cudaSuccess ? static_cast<std::size_t>(threshold) : 0;
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
  if (!list.empty()) {
    RelaxedCaptureMode relaxed;  // an attribute read, harmless to another thread's capture
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
  }
  {
    HeldBuffers& h = held();
    std::lock_guard<std::mutex> lock(h.mutex);
    for (const HeldBuffer& b : h.idle) {
      ++stats.idle_buffers;
      stats.idle_bytes += b.bytes;
    }
  }
  stats.failed_frees = pending_frees().failed.load();
  stats.pending_frees = pending_frees().count.load();
  return stats;
}

void check_release_allowed(const std::string& what) {
  std::set<int> devices;
  {
    Pools& p = pools();
    std::lock_guard<std::mutex> lock(p.mutex);
    for (const auto& [device, pool] : p.pools)
      if (pool) devices.insert(device);
  }
  {
    HeldBuffers& h = held();
    std::lock_guard<std::mutex> lock(h.mutex);
    for (const HeldBuffer& b : h.idle) devices.insert(b.device);
  }
  for (int device : devices) {
    std::unique_ptr<DeviceGuard> guard;
    try {
      guard = std::make_unique<DeviceGuard>(device);
    } catch (const CudaError&) {
      continue;  // no device to ask: nothing of it can be released either
    }
    for (cudaStream_t stream : {cudaStreamLegacy, cudaStreamPerThread}) {
      cudaError_t error = cudaSuccess;
      const CaptureState state = stream_capture_state(stream, &error);
      if (state == CaptureState::None) continue;
      const bool legacy = stream == cudaStreamLegacy;
      const cudaError_t code = state == CaptureState::Unknown     ? error
                               : state == CaptureState::Invalidated ? cudaErrorStreamCaptureInvalidated
                                                                    : cudaErrorStreamCaptureUnsupported;
      const char* name = cudaGetErrorName(code);
      throw CudaError(static_cast<int>(code), name ? name : "?",
                      what + ": a CUDA graph capture is in progress on device " + std::to_string(device) + " (" +
                          (legacy ? "a blocking stream captures: cudaStreamIsCapturing(cudaStreamLegacy) gives "
                                    "cudaErrorStreamCaptureImplicit"
                                  : "this thread's per-thread default stream captures") +
                          "). Releasing memory is not allowed then (a capture may still use it, and freeing may "
                          "synchronize the device): nothing was released; call it after cudaStreamEndCapture. (A "
                          "capture on a non-blocking stream cannot be seen: never call it during one.)");
    }
  }
}

void release_device_memory() {
  // Idle buffers of devices without pools: each after its own last use, never a device sync.
  std::list<HeldBuffer> all, kept;
  {
    HeldBuffers& h = held();
    std::lock_guard<std::mutex> lock(h.mutex);
    all.swap(h.idle);
  }
  for (const HeldBuffer& b : all) {
    bool freed = false;
    try {
      DeviceGuard guard(b.device);
      RelaxedCaptureMode relaxed;
      const cudaError_t pending = cudaPeekAtLastError();
      const cudaError_t status = b.event ? cudaEventSynchronize(b.event) : cudaSuccess;
      clear_own_cuda_error(status, pending);
      freed = status == cudaSuccess && free_held(b);
    } catch (...) {
      freed = false;  // (the guard could not switch devices) kept for the next release
    }
    if (!freed) kept.push_back(b);
  }
  if (!kept.empty()) {
    HeldBuffers& h = held();
    std::lock_guard<std::mutex> lock(h.mutex);
    h.idle.splice(h.idle.end(), kept);
  }
  // Pools: the release thresholds back to the floor, and their unused memory released.
  std::vector<cudaMemPool_t> list;
  {
    Pools& p = pools();
    std::lock_guard<std::mutex> lock(p.mutex);
    p.retention.clear();
    RelaxedCaptureMode relaxed;
    for (const auto& [device, pool] : p.pools) {
      if (!pool) continue;
      list.push_back(pool);
      unsigned long long threshold = kMinPoolRetention;
      const cudaError_t pending = cudaPeekAtLastError();
      const cudaError_t status = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
      clear_own_cuda_error(status, pending);
      if (status == cudaSuccess) p.applied[device] = kMinPoolRetention;
    }
  }
  RelaxedCaptureMode relaxed;
  for (cudaMemPool_t pool : list) {
    // What is free now goes back to the driver; blocks whose asynchronous free the host has not
    // yet seen complete count as outstanding and stay until a later trim or synchronization.
    const cudaError_t pending = cudaPeekAtLastError();
    const cudaError_t status = cudaMemPoolTrimTo(pool, 0);
    clear_own_cuda_error(status, pending);
  }
}

namespace test_hooks {

void adopt_idle_buffer(int device, void* pointer, std::size_t bytes) {
  HeldBuffers& h = held();
  std::lock_guard<std::mutex> lock(h.mutex);
  h.idle.push_front(HeldBuffer{device, pointer, bytes, nullptr, 0});
}

void forget_idle_buffers() {
  HeldBuffers& h = held();
  std::lock_guard<std::mutex> lock(h.mutex);
  h.idle.clear();
}

void inject_free_failures(int count) { t_free_failures = count; }

}  // namespace test_hooks

}  // namespace knetcnn
