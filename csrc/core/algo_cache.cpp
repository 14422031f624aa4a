#include "algo_cache.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <cuda_runtime_api.h>

#include "cudnn_names.hpp"
#include "errors.hpp"

namespace knetcnn {
namespace {

constexpr const char* kFileMagic = "# knetcnn convolution algorithm cache v1";

std::string join(const std::vector<int64_t>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out;
}

std::string join(const std::vector<int>& values) { return join(std::vector<int64_t>(values.begin(), values.end())); }

std::string layout(const TensorLayout& t) { return join(t.dims) + "/" + join(t.strides); }

// The value of "name=" in a key, "" if absent.
std::string key_field(const std::string& key, const std::string& name) {
  const std::string needle = "|" + name + "=";
  const auto start = key.find(needle);
  if (start == std::string::npos) return "";
  const auto begin = start + needle.size();
  const auto end = key.find('|', begin);
  return key.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

std::optional<ConvDirection> direction_from_name(const std::string& name) {
  for (ConvDirection d : {ConvDirection::Forward, ConvDirection::BackwardData, ConvDirection::BackwardFilter})
    if (name == conv_direction_name(d)) return d;
  return std::nullopt;
}

// The device ordinal in a key, or -1 if the field is missing or not a number.
int key_device(const std::string& key) {
  const std::string text = key_field(key, "dev");
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(text);
}

bool known_math_type(int value) {
  return value == CUDNN_DEFAULT_MATH || value == CUDNN_TENSOR_OP_MATH ||
         value == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION || value == CUDNN_FMA_MATH;
}

}  // namespace

const char* conv_direction_name(ConvDirection direction) {
  switch (direction) {
    case ConvDirection::Forward: return "fwd";
    case ConvDirection::BackwardData: return "bwd_data";
    case ConvDirection::BackwardFilter: return "bwd_filter";
  }
  return "?";
}

int conv_algo_count(ConvDirection direction) {
  switch (direction) {
    case ConvDirection::Forward: return CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    case ConvDirection::BackwardData: return CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
    case ConvDirection::BackwardFilter: return CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  }
  return 0;
}

std::string conv_algo_name(ConvDirection direction, int algo) {
  static const char* const fwd[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                    "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  static const char* const bwd_data[] = {"0", "1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  static const char* const bwd_filter[] = {"0", "1", "FFT", "3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  static_assert(sizeof(fwd) / sizeof(*fwd) == CUDNN_CONVOLUTION_FWD_ALGO_COUNT, "forward algorithm names");
  static_assert(sizeof(bwd_data) / sizeof(*bwd_data) == CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, "bwd data names");
  static_assert(sizeof(bwd_filter) / sizeof(*bwd_filter) == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                "bwd filter names");
  if (algo < 0 || algo >= conv_algo_count(direction))
    return std::string("algorithm ") + std::to_string(algo) + " (out of range)";
  switch (direction) {
    case ConvDirection::Forward: return std::string("CUDNN_CONVOLUTION_FWD_ALGO_") + fwd[algo];
    case ConvDirection::BackwardData: return std::string("CUDNN_CONVOLUTION_BWD_DATA_ALGO_") + bwd_data[algo];
    case ConvDirection::BackwardFilter: return std::string("CUDNN_CONVOLUTION_BWD_FILTER_ALGO_") + bwd_filter[algo];
  }
  return "?";
}

std::string conv_algo_key(const ConvProblem& p) {
  std::ostringstream key;
  key << "conv|dev=" << p.device << "|dir=" << conv_direction_name(p.direction) << "|dtype=" << dtype_name(p.dtype)
      << "|compute=" << data_type_name(cudnn_compute_type(p.dtype)) << "|x=" << layout(p.x) << "|w=" << layout(p.w)
      << "|y=" << layout(p.y) << "|pad=" << join(p.padding) << "|stride=" << join(p.stride)
      << "|dil=" << join(p.dilation) << "|group=" << p.group << "|mode=" << (p.mode == 0 ? "conv" : "xcorr")
      << "|tf32=" << (p.allow_tf32 ? 1 : 0) << "|policy=" << algo_policy_name(p.policy)
      << "|deterministic=" << (p.policy == AlgoPolicy::Deterministic ? 1 : 0) << "|ws=" << p.workspace_limit
      << "|align=" << p.x_align << "," << p.w_align << "," << p.y_align;
  return key.str();
}

int pointer_alignment(const void* pointer) {
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  if (address == 0) return 16;
  const std::uintptr_t lowest = address & (~address + 1);
  return static_cast<int>(std::min<std::uintptr_t>(lowest, 16));
}

bool math_type_allowed(DType dtype, bool allow_tf32, cudnnMathType_t math_type) {
  if (dtype == DType::Float32 && !allow_tf32) return math_type == CUDNN_FMA_MATH;
  return true;
}

bool conv_algo_documented_deterministic(ConvDirection direction, int algo) {
  switch (direction) {
    case ConvDirection::Forward: return true;
    case ConvDirection::BackwardData: return algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
    case ConvDirection::BackwardFilter:
      return algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 && algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  }
  return false;
}

std::string candidate_violation(ConvDirection direction, const AlgoCandidate& c, DType dtype, bool allow_tf32,
                                AlgoPolicy policy, std::size_t workspace_limit) {
  const std::string name = conv_algo_name(direction, c.algo) + " " + math_type_name(c.math_type);
  if (c.algo < 0 || c.algo >= conv_algo_count(direction)) return name + ": not an algorithm of " +
                                                                 conv_direction_name(direction);
  if (!known_math_type(static_cast<int>(c.math_type))) return name + ": unknown math type";
  if (!math_type_allowed(dtype, allow_tf32, c.math_type))
    return name + ": may use TF32, which allow_tf32=False forbids for " + dtype_name(dtype);
  if (policy == AlgoPolicy::Deterministic && !conv_algo_documented_deterministic(direction, c.algo))
    return name + ": not deterministic (algo='deterministic')";
  if (c.workspace > workspace_limit)
    return name + ": needs " + std::to_string(c.workspace) + " bytes of workspace, limit " +
           std::to_string(workspace_limit);
  return "";
}

std::string cache_entry_violation(const std::string& key, const std::vector<AlgoCandidate>& candidates) {
  const auto direction = direction_from_name(key_field(key, "dir"));
  if (key.rfind("conv|dev=", 0) != 0 || key_device(key) < 0 || !direction) return "not a convolution key";
  for (const char* field : {"dtype", "tf32", "policy", "ws", "align"})
    if (key_field(key, field).empty())
      return std::string("the key has no '") + field + "' field (written by another knetcnn version)";
  DType dtype = DType::Float32;
  AlgoPolicy policy = AlgoPolicy::Heuristic;
  try {
    dtype = dtype_from_name(key_field(key, "dtype"));
    policy = algo_policy_from_name(key_field(key, "policy"));
  } catch (const ArgumentError&) {
    return "the key names an unknown dtype or policy";
  }
  const std::string tf32 = key_field(key, "tf32"), ws = key_field(key, "ws");
  if ((tf32 != "0" && tf32 != "1") || ws.size() > 20 || ws.find_first_not_of("0123456789") != std::string::npos)
    return "the key's tf32 or ws field is malformed";
  std::size_t limit = 0;
  try {
    limit = static_cast<std::size_t>(std::stoull(ws));
  } catch (const std::exception&) {
    return "the key's ws field is malformed";
  }
  if (candidates.empty()) return "no algorithm";
  for (const AlgoCandidate& c : candidates) {
    const std::string why = candidate_violation(*direction, c, dtype, tf32 == "1", policy, limit);
    if (!why.empty()) return why;
  }
  return "";
}

std::string cuda_device_signature(int device) {
  cudaDeviceProp prop{};
  const cudaError_t pending = cudaPeekAtLastError();
  const cudaError_t status = cudaGetDeviceProperties(&prop, device);
  if (status != cudaSuccess) {
    if (pending == cudaSuccess) cudaGetLastError();  // ours only (cudnn_check.hpp)
    return "";
  }
  return std::string(prop.name) + "|sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
}

// ---- AlgoCache ----

AlgoCache::AlgoCache(std::size_t capacity) : capacity_(capacity) {}

std::optional<std::vector<AlgoCandidate>> AlgoCache::find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

std::optional<std::vector<AlgoCandidate>> AlgoCache::peek(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  return it->second->second;
}

void AlgoCache::insert(const std::string& key, std::vector<AlgoCandidate> candidates) {
  std::lock_guard<std::mutex> lock(mutex_);
  provisional_.erase(key);
  insert_locked(key, std::move(candidates));
}

void AlgoCache::insert_provisional(const std::string& key, std::vector<AlgoCandidate> candidates,
                                   std::size_t retry_free_bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  insert_locked(key, std::move(candidates));
  if (index_.count(key)) provisional_[key] = retry_free_bytes;  // (capacity 0 keeps nothing)
}

std::optional<std::size_t> AlgoCache::provisional(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = provisional_.find(key);
  if (it == provisional_.end()) return std::nullopt;
  return it->second;
}

void AlgoCache::insert_locked(const std::string& key, std::vector<AlgoCandidate> candidates) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->second = std::move(candidates);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.emplace_front(key, std::move(candidates));
  index_[key] = lru_.begin();
  evict_locked();
}

void AlgoCache::erase(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
  provisional_.erase(key);
}

void AlgoCache::evict_locked() {
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    provisional_.erase(lru_.back().first);
    lru_.pop_back();
    ++evictions_;
  }
}

void AlgoCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  lru_.clear();
  index_.clear();
  provisional_.clear();
  hits_ = misses_ = evictions_ = 0;
}

void AlgoCache::set_capacity(std::size_t capacity) {
  std::lock_guard<std::mutex> lock(mutex_);
  capacity_ = capacity;
  evict_locked();
}

AlgoCacheStats AlgoCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return AlgoCacheStats{hits_, misses_, evictions_, lru_.size(), capacity_};
}

std::vector<std::string> AlgoCache::keys() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const Entry& e : lru_) out.push_back(e.first);
  return out;
}

// File format (text, one record per line):
//   # knetcnn convolution algorithm cache v1
//   cudnn <cudnnGetVersion()>
//   device <ordinal> <name>|sm_<major><minor>        (one per ordinal the entries use)
//   entry <key> <algo>:<math type>:<workspace bytes>[,<algo>:<math type>:<workspace bytes>...]
// Entries are written from most to least recently used; provisional ones are left out.
std::size_t AlgoCache::save(const std::string& path, std::size_t cudnn_version, const DeviceSignature& signature) const {
  std::vector<Entry> entries;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Entry& e : lru_)
      if (!provisional_.count(e.first)) entries.push_back(e);
  }
  std::map<int, std::string> devices;
  for (const Entry& e : entries) {
    const int device = key_device(e.first);
    if (!devices.count(device)) devices[device] = signature(device);
  }
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    if (!out) throw value_error("save_cache: cannot write '" + path + "'");
    out << kFileMagic << "\n" << "cudnn " << cudnn_version << "\n";
    for (const auto& [device, name] : devices) out << "device " << device << " " << name << "\n";
    for (const Entry& e : entries) {
      out << "entry " << e.first << " ";
      for (std::size_t i = 0; i < e.second.size(); ++i)
        out << (i ? "," : "") << e.second[i].algo << ":" << static_cast<int>(e.second[i].math_type) << ":"
            << e.second[i].workspace;
      out << "\n";
    }
    out.flush();
    if (!out) throw value_error("save_cache: writing '" + path + "' failed");
  }
  // Replace the file in one step, so that a reader never sees half of it.
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw value_error("save_cache: cannot replace '" + path + "'");
  }
  return entries.size();
}

AlgoCacheLoadReport AlgoCache::load(const std::string& path, std::size_t cudnn_version,
                                    const DeviceSignature& signature) {
  std::ifstream in(path);
  if (!in) throw value_error("load_cache: cannot read '" + path + "'");
  auto bad = [&](int line_number, const std::string& why) {
    return value_error("load_cache: '" + path + "' line " + std::to_string(line_number) + ": " + why);
  };
  std::string line;
  int number = 1;
  if (!std::getline(in, line) || line != kFileMagic) throw bad(1, "not a knetcnn algorithm cache file");
  std::size_t file_version = 0;
  std::map<int, std::string> devices;
  std::vector<Entry> entries;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "cudnn") {
      if (!(fields >> file_version)) throw bad(number, "the cuDNN version is not a number");
    } else if (tag == "device") {
      int device = -1;
      if (!(fields >> device) || device < 0) throw bad(number, "the device ordinal is not a number");
      std::string name;
      std::getline(fields >> std::ws, name);
      devices[device] = name;
    } else if (tag == "entry") {
      std::string key, list;
      if (!(fields >> key >> list)) throw bad(number, "an entry needs a key and a list of algorithms");
      const auto direction = direction_from_name(key_field(key, "dir"));
      if (key.rfind("conv|dev=", 0) != 0 || key_device(key) < 0 || !direction) throw bad(number, "the key is not a convolution key");
      std::vector<AlgoCandidate> candidates;
      std::istringstream items(list);
      std::string item;
      while (std::getline(items, item, ',')) {
        AlgoCandidate c;
        int math = 0;
        char colon1 = 0, colon2 = 0;
        std::istringstream parts(item);
        if (!(parts >> c.algo >> colon1 >> math >> colon2 >> c.workspace) || colon1 != ':' || colon2 != ':' ||
            c.algo < 0 || c.algo >= conv_algo_count(*direction) || !known_math_type(math))
          throw bad(number, "'" + item + "' is not <algorithm>:<math type>:<workspace bytes> for " +
                                conv_direction_name(*direction));
        c.math_type = static_cast<cudnnMathType_t>(math);
        candidates.push_back(c);
      }
      if (candidates.empty()) throw bad(number, "an entry needs at least one algorithm");
      entries.emplace_back(key, std::move(candidates));
    } else if (tag[0] != '#') {
      throw bad(number, "unknown record '" + tag + "'");
    }
  }
  AlgoCacheLoadReport report;
  if (file_version != cudnn_version) {
    report.skipped = entries.size();
    report.reason = "the file was written with cuDNN " + std::to_string(file_version) + ", this is cuDNN " +
                    std::to_string(cudnn_version) + ": its choices may not hold";
    return report;
  }
  std::map<int, bool> device_matches;
  std::string mismatches, violations;
  std::size_t violating = 0;
  for (const auto& [device, name] : devices) {
    const std::string now = signature(device);
    device_matches[device] = !now.empty() && now == name;
    if (!device_matches[device])
      mismatches += (mismatches.empty() ? "" : "; ") + std::string("device ") + std::to_string(device) + " was '" +
                    name + "', is now " + (now.empty() ? std::string("absent") : "'" + now + "'");
  }
  // Oldest first, so that the file's most recently used entry ends up most recent here too.
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    const int device = key_device(it->first);
    if (!device_matches.count(device) || !device_matches[device]) {
      ++report.skipped;
      continue;
    }
    // Entries are choices a search would make under their key's options: refuse any other.
    const std::string why = cache_entry_violation(it->first, it->second);
    if (!why.empty()) {
      ++report.skipped;
      if (violating++ < 5) violations += (violations.empty() ? "" : "; ") + why;
      continue;
    }
    insert(it->first, it->second);
    ++report.loaded;
  }
  if (report.skipped) {
    const std::size_t device_skips = report.skipped - violating;
    if (device_skips)
      report.reason = mismatches.empty() ? "entries name a device the file does not describe" : mismatches;
    if (violating)
      report.reason += (report.reason.empty() ? "" : "; ") + std::to_string(violating) +
                       " entries break their own key's rules: " + violations + (violating > 5 ? "; ..." : "");
  }
  return report;
}

AlgoCache& algo_cache() {
  static AlgoCache* cache = new AlgoCache();
  return *cache;
}

}  // namespace knetcnn
