// The convolution-algorithm cache: which cuDNN algorithm (and math type, and workspace size) to
// run for one complete problem description, so that the search runs once per configuration.
//
// The key is a canonical text of everything that can change cuDNN's answer: device ordinal,
// direction, data and compute types, every tensor's dims and strides as handed to cuDNN, padding,
// stride, dilation, group count, convolution mode, math policy (allow_tf32), search policy (which
// also says whether only deterministic algorithms qualify), the workspace limit, and the
// alignment of each tensor's address up to 16 bytes (vectorized kernels refuse misaligned
// pointers with CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, so a choice made for aligned arrays
// need not run on misaligned views). (CuPy's key
// forgot dilation, CUDA.jl's the device; see architecture.md.) The value is the ordered list of
// candidates the search accepted: the first is run, the others are the run-time fallbacks.
//
// Bounded LRU, thread-safe (one mutex), with stats, clear, and save/load to a text file tied to
// the cuDNN version and, per device ordinal, the device's name and compute capability.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <cudnn.h>

#include "dtype.hpp"
#include "exec_options.hpp"
#include "geometry.hpp"

namespace knetcnn {

enum class ConvDirection { Forward, BackwardData, BackwardFilter };
const char* conv_direction_name(ConvDirection direction);  // "fwd", "bwd_data", "bwd_filter"
int conv_algo_count(ConvDirection direction);               // CUDNN_CONVOLUTION_*_ALGO_COUNT
// "CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM" and so on.
std::string conv_algo_name(ConvDirection direction, int algo);

struct AlgoCandidate {
  int algo = 0;
  cudnnMathType_t math_type = CUDNN_DEFAULT_MATH;
  std::size_t workspace = 0;  // bytes this algorithm needs with this math type
  bool operator==(const AlgoCandidate& o) const {
    return algo == o.algo && math_type == o.math_type && workspace == o.workspace;
  }
};

// One tensor as cuDNN is given it: dims and element strides (lifted to >= 4-D, size-1 strides
// normalized; see descriptors.hpp).
struct TensorLayout {
  Shape dims, strides;
};

// Everything a convolution algorithm choice depends on. Tensors are in forward terms: x the
// input, w the filter, y the output (for backward-data the data gradient has x's layout and the
// incoming gradient y's; for backward-filter the filter gradient has w's).
struct ConvProblem {
  int device = 0;
  ConvDirection direction = ConvDirection::Forward;
  DType dtype = DType::Float32;
  TensorLayout x, w, y;
  std::vector<int> padding, stride, dilation;  // lifted, as in the convolution descriptor
  int group = 1;
  int mode = 0;  // 0 CUDNN_CONVOLUTION, 1 CUDNN_CROSS_CORRELATION
  bool allow_tf32 = false;
  AlgoPolicy policy = AlgoPolicy::Heuristic;
  std::size_t workspace_limit = 0;
  int x_align = 16, w_align = 16, y_align = 16;  // pointer_alignment of x, w, y
};

// The canonical key text: no spaces, one field per '|'.
std::string conv_algo_key(const ConvProblem& problem);

// min(the largest power of two dividing the address, 16); 16 for null.
int pointer_alignment(const void* pointer);

// The precision policy: may an algorithm run with this math type? fp32 without allow_tf32 takes
// only CUDNN_FMA_MATH (DEFAULT and TENSOR_OP math may use TF32 on Ampere and later).
bool math_type_allowed(DType dtype, bool allow_tf32, cudnnMathType_t math_type);
// False for the algorithms cuDNN's API reference documents as non-deterministic (atomic adds):
// CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 and CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 / _3. (A search
// also reads cuDNN's per-problem determinism flag; this is what a loaded entry can be checked
// against.)
bool conv_algo_documented_deterministic(ConvDirection direction, int algo);
// Why `c` may not run under these options ("" if it may): an algorithm out of range, a math type
// the precision policy forbids, a documented non-deterministic algorithm under algo='deterministic',
// or a workspace above the limit.
std::string candidate_violation(ConvDirection direction, const AlgoCandidate& c, DType dtype, bool allow_tf32,
                                AlgoPolicy policy, std::size_t workspace_limit);
// The same for every candidate of a cache entry, with the options read from its key (which must
// carry every field conv_algo_key writes). "" if the entry is acceptable.
std::string cache_entry_violation(const std::string& key, const std::vector<AlgoCandidate>& candidates);

struct AlgoCacheStats {
  std::uint64_t hits = 0, misses = 0, evictions = 0;
  std::size_t size = 0, capacity = 0;
};

// What load() did: how many entries it took, how many it skipped, and why.
struct AlgoCacheLoadReport {
  std::size_t loaded = 0, skipped = 0;
  std::string reason;  // why entries were skipped, "" if none were
};

// Names the device behind an ordinal ("NVIDIA H100 80GB HBM3|sm_90"), "" if there is none.
using DeviceSignature = std::function<std::string(int device)>;
// The real one: the CUDA runtime's device name and compute capability.
std::string cuda_device_signature(int device);

class AlgoCache {
 public:
  explicit AlgoCache(std::size_t capacity = 1024);

  // Counts a hit or a miss; a hit becomes the most recently used entry.
  std::optional<std::vector<AlgoCandidate>> find(const std::string& key);
  // The entry without counting or reordering anything (for inspection).
  std::optional<std::vector<AlgoCandidate>> peek(const std::string& key) const;
  // Inserts or replaces; evicts the least recently used entries beyond the capacity.
  void insert(const std::string& key, std::vector<AlgoCandidate> candidates);
  // Inserts or replaces a provisional entry: a choice made without the search its key asks for
  // (algo='benchmark' that lacked the memory, or that a capture on the device forbade: cuDNN's
  // heuristic ranking instead). It is used like any entry, so a short-memory call does not search
  // again each time, and replaced by the real search at a call that finds `retry_free_bytes` of
  // free device memory (and no capture in the way). insert() makes an entry ordinary again;
  // save() leaves provisional entries out (they are not what their key promises).
  void insert_provisional(const std::string& key, std::vector<AlgoCandidate> candidates,
                          std::size_t retry_free_bytes);
  // For a provisional entry, the free memory its real search needs; nullopt otherwise.
  std::optional<std::size_t> provisional(const std::string& key) const;
  void erase(const std::string& key);
  // Drops every entry and resets the counters.
  void clear();
  void set_capacity(std::size_t capacity);
  AlgoCacheStats stats() const;
  // Keys from most to least recently used (for tests and save()).
  std::vector<std::string> keys() const;

  // Writes every entry; returns how many. `cudnn_version` is cudnnGetVersion().
  std::size_t save(const std::string& path, std::size_t cudnn_version, const DeviceSignature& signature) const;
  // Reads entries written by save(). Nothing is loaded from a file of another cuDNN version;
  // an entry is skipped where its device ordinal now names another device (or none), or where
  // cache_entry_violation objects (a math type or algorithm its own key's options forbid, a key
  // from another knetcnn version). A file that is not a knetcnn cache, or a malformed line, is a
  // ValueError naming the line.
  AlgoCacheLoadReport load(const std::string& path, std::size_t cudnn_version, const DeviceSignature& signature);

 private:
  using Entry = std::pair<std::string, std::vector<AlgoCandidate>>;
  void evict_locked();
  void insert_locked(const std::string& key, std::vector<AlgoCandidate> candidates);

  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // front: most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  std::unordered_map<std::string, std::size_t> provisional_;  // keys of provisional entries
  std::size_t capacity_;
  std::uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

// The process-wide cache the execution core uses.
AlgoCache& algo_cache();

}  // namespace knetcnn
