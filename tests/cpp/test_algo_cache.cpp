// The algorithm cache: complete keys, LRU bound, stats, clear, thread safety, save/load.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include <unistd.h>

#include "algo_cache.hpp"
#include "errors.hpp"

using namespace knetcnn;

namespace {

ConvProblem base_problem() {
  ConvProblem p;
  p.device = 0;
  p.direction = ConvDirection::Forward;
  p.dtype = DType::Float32;
  p.x = {{2, 3, 8, 8}, {192, 64, 8, 1}};
  p.w = {{4, 3, 3, 3}, {27, 9, 3, 1}};
  p.y = {{2, 4, 6, 6}, {144, 36, 6, 1}};
  p.padding = {0, 0};
  p.stride = {1, 1};
  p.dilation = {1, 1};
  p.group = 1;
  p.mode = 0;
  p.allow_tf32 = false;
  p.policy = AlgoPolicy::Heuristic;
  p.workspace_limit = 256 << 20;
  return p;
}

std::vector<AlgoCandidate> candidates(int algo, std::size_t workspace = 0) {
  return {AlgoCandidate{algo, CUDNN_FMA_MATH, workspace}, AlgoCandidate{0, CUDNN_FMA_MATH, 0}};
}

std::string temp_path(const char* name) {
  return std::string(::testing::TempDir()) + "knetcnn_" + name + "_" + std::to_string(::getpid());
}

std::string fake_signature(int device) { return device == 0 ? "Fake GPU A|sm_90" : device == 1 ? "Fake GPU B|sm_80" : ""; }

}  // namespace

TEST(AlgoCacheKey, EveryFieldChangesTheKey) {
  const ConvProblem base = base_problem();
  const std::string key = conv_algo_key(base);
  EXPECT_EQ(key, conv_algo_key(base_problem())) << "equal problems must give equal keys";
  EXPECT_EQ(key.find(' '), std::string::npos) << "keys must not contain spaces (file format)";
  std::vector<std::pair<const char*, std::function<void(ConvProblem&)>>> changes = {
      {"device", [](ConvProblem& p) { p.device = 1; }},
      {"direction bwd_data", [](ConvProblem& p) { p.direction = ConvDirection::BackwardData; }},
      {"direction bwd_filter", [](ConvProblem& p) { p.direction = ConvDirection::BackwardFilter; }},
      {"dtype", [](ConvProblem& p) { p.dtype = DType::Float64; }},
      {"dtype half", [](ConvProblem& p) { p.dtype = DType::Float16; }},
      {"dtype bf16", [](ConvProblem& p) { p.dtype = DType::BFloat16; }},
      {"x dims", [](ConvProblem& p) { p.x.dims[3] = 9; }},
      {"x strides", [](ConvProblem& p) { p.x.strides = {256, 64, 8, 1}; }},
      {"x strides channels-last", [](ConvProblem& p) { p.x.strides = {192, 1, 24, 3}; }},
      {"w dims", [](ConvProblem& p) { p.w.dims[0] = 5; }},
      {"y dims", [](ConvProblem& p) { p.y.dims[2] = 7; }},
      {"y strides", [](ConvProblem& p) { p.y.strides = {288, 36, 6, 1}; }},
      {"padding", [](ConvProblem& p) { p.padding = {0, 1}; }},
      {"stride", [](ConvProblem& p) { p.stride = {2, 1}; }},
      {"dilation", [](ConvProblem& p) { p.dilation = {1, 2}; }},
      {"group", [](ConvProblem& p) { p.group = 3; }},
      {"mode", [](ConvProblem& p) { p.mode = 1; }},
      {"allow_tf32", [](ConvProblem& p) { p.allow_tf32 = true; }},
      {"policy benchmark", [](ConvProblem& p) { p.policy = AlgoPolicy::Benchmark; }},
      {"policy deterministic", [](ConvProblem& p) { p.policy = AlgoPolicy::Deterministic; }},
      {"workspace limit", [](ConvProblem& p) { p.workspace_limit = 0; }},
      {"x alignment", [](ConvProblem& p) { p.x_align = 2; }},
      {"w alignment", [](ConvProblem& p) { p.w_align = 4; }},
      {"y alignment", [](ConvProblem& p) { p.y_align = 8; }},
  };
  std::set<std::string> keys{key};
  for (auto& [what, change] : changes) {
    ConvProblem p = base_problem();
    change(p);
    const std::string changed = conv_algo_key(p);
    EXPECT_NE(changed, key) << what << " did not change the key";
    EXPECT_TRUE(keys.insert(changed).second) << what << " collides with another change";
  }
}

TEST(AlgoCacheKey, NamesTheComputeTypeAndDeterminism) {
  ConvProblem p = base_problem();
  p.dtype = DType::Float16;
  p.policy = AlgoPolicy::Deterministic;
  const std::string key = conv_algo_key(p);
  EXPECT_NE(key.find("compute=CUDNN_DATA_FLOAT"), std::string::npos) << key;
  EXPECT_NE(key.find("deterministic=1"), std::string::npos) << key;
  EXPECT_NE(key.find("dil=1,1"), std::string::npos) << key;
  EXPECT_NE(key.find("dev=0"), std::string::npos) << key;
}

TEST(AlgoCache, HitsMissesAndStats) {
  AlgoCache cache(4);
  EXPECT_FALSE(cache.find("a").has_value());
  cache.insert("a", candidates(1));
  auto found = cache.find("a");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(*found, candidates(1));
  EXPECT_TRUE(cache.peek("a").has_value());
  const AlgoCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.size, 1u);
  EXPECT_EQ(s.capacity, 4u);
  cache.insert("a", candidates(2));  // replace
  EXPECT_EQ(cache.find("a")->front().algo, 2);
  EXPECT_EQ(cache.stats().size, 1u);
  cache.erase("a");
  EXPECT_EQ(cache.stats().size, 0u);
}

TEST(AlgoCache, LeastRecentlyUsedIsEvictedAndTheBoundHolds) {
  AlgoCache cache(3);
  for (const char* k : {"k1", "k2", "k3"}) cache.insert(k, candidates(1));
  ASSERT_TRUE(cache.find("k1").has_value());  // k1 is now the most recent; k2 the least
  cache.insert("k4", candidates(1));
  EXPECT_FALSE(cache.peek("k2").has_value());
  EXPECT_TRUE(cache.peek("k1").has_value());
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"k4", "k1", "k3"}));
  for (int i = 0; i < 100; ++i) cache.insert("n" + std::to_string(i), candidates(i % 8));
  EXPECT_EQ(cache.stats().size, 3u);
  EXPECT_EQ(cache.stats().evictions, 101u);
  cache.set_capacity(1);
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"n99"}));
}

TEST(AlgoCache, ClearDropsEntriesAndCounters) {
  AlgoCache cache(8);
  cache.insert("a", candidates(1));
  cache.find("a");
  cache.find("b");
  cache.clear();
  const AlgoCacheStats s = cache.stats();
  EXPECT_EQ(s.size, 0u);
  EXPECT_EQ(s.hits + s.misses + s.evictions, 0u);
  EXPECT_EQ(s.capacity, 8u);
}

TEST(AlgoCache, ConcurrentInsertsAndFindsKeepItConsistent) {
  AlgoCache cache(64);
  constexpr int kThreads = 8, kOps = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < kOps; ++i) {
        const std::string key = "k" + std::to_string((i * 7 + t) % 100);
        if (i % 3 == 0)
          cache.insert(key, candidates(i % 8));
        else
          cache.find(key);
      }
    });
  for (auto& th : threads) th.join();
  const AlgoCacheStats s = cache.stats();
  EXPECT_LE(s.size, 64u);
  EXPECT_EQ(cache.keys().size(), s.size);
  int finds = 0;
  for (int i = 0; i < kOps; ++i) finds += (i % 3 != 0);
  EXPECT_EQ(s.hits + s.misses, static_cast<std::uint64_t>(kThreads * finds));
}

TEST(AlgoCache, SaveLoadRoundTripKeepsOrderAndValues) {
  AlgoCache cache(16);
  ConvProblem p0 = base_problem(), p1 = base_problem(), p2 = base_problem();
  p1.device = 1;
  p2.direction = ConvDirection::BackwardFilter;
  p2.policy = AlgoPolicy::Benchmark;
  p2.allow_tf32 = true;  // TENSOR_OP math on fp32 data is only a valid choice with TF32 allowed
  cache.insert(conv_algo_key(p0), candidates(1, 1024));
  cache.insert(conv_algo_key(p1), candidates(7, 0));
  cache.insert(conv_algo_key(p2), {AlgoCandidate{5, CUDNN_TENSOR_OP_MATH, 999}});
  const std::string path = temp_path("roundtrip");
  EXPECT_EQ(cache.save(path, 92800, fake_signature), 3u);

  AlgoCache loaded(16);
  const AlgoCacheLoadReport r = loaded.load(path, 92800, fake_signature);
  EXPECT_EQ(r.loaded, 3u);
  EXPECT_EQ(r.skipped, 0u);
  EXPECT_EQ(r.reason, "");
  EXPECT_EQ(loaded.keys(), cache.keys());
  for (const std::string& k : cache.keys()) EXPECT_EQ(*loaded.peek(k), *cache.peek(k)) << k;
  std::remove(path.c_str());
}

TEST(AlgoCache, LoadSkipsOtherCudnnVersionsAndOtherDevices) {
  AlgoCache cache(16);
  ConvProblem p0 = base_problem(), p1 = base_problem();
  p1.device = 1;
  cache.insert(conv_algo_key(p0), candidates(1));
  cache.insert(conv_algo_key(p1), candidates(2));
  const std::string path = temp_path("skips");
  cache.save(path, 92800, fake_signature);

  AlgoCache other_version(16);
  const AlgoCacheLoadReport v = other_version.load(path, 91000, fake_signature);
  EXPECT_EQ(v.loaded, 0u);
  EXPECT_EQ(v.skipped, 2u);
  EXPECT_NE(v.reason.find("cuDNN 92800"), std::string::npos) << v.reason;

  AlgoCache swapped(16);  // device 1 is now another GPU
  const AlgoCacheLoadReport d = swapped.load(path, 92800, [](int device) {
    return device == 0 ? std::string("Fake GPU A|sm_90") : std::string("Fake GPU C|sm_89");
  });
  EXPECT_EQ(d.loaded, 1u);
  EXPECT_EQ(d.skipped, 1u);
  EXPECT_NE(d.reason.find("device 1"), std::string::npos) << d.reason;
  EXPECT_TRUE(swapped.peek(conv_algo_key(p0)).has_value());

  AlgoCache no_gpu(16);  // no device at all (this machine)
  const AlgoCacheLoadReport n = no_gpu.load(path, 92800, [](int) { return std::string(); });
  EXPECT_EQ(n.loaded, 0u);
  EXPECT_NE(n.reason.find("absent"), std::string::npos) << n.reason;
  std::remove(path.c_str());
}

TEST(AlgoCache, MalformedFilesAreValueErrorsNamingTheLine) {
  const std::string path = temp_path("bad");
  auto write = [&](const std::string& text) {
    std::ofstream out(path);
    out << text;
  };
  auto expect_error = [&](const std::string& text, const char* needle) {
    write(text);
    AlgoCache cache(4);
    try {
      cache.load(path, 92800, fake_signature);
      FAIL() << "expected an ArgumentError for: " << text;
    } catch (const ArgumentError& e) {
      EXPECT_EQ(e.kind(), ArgumentError::Kind::Value);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string head = "# knetcnn convolution algorithm cache v1\ncudnn 92800\ndevice 0 Fake GPU A|sm_90\n";
  const std::string key = conv_algo_key(base_problem());
  expect_error("hello\n", "line 1");
  expect_error(head + "entry " + key + " 99:3:0\n", "line 4");           // algorithm out of range
  expect_error(head + "entry " + key + " 1:7:0\n", "line 4");            // unknown math type
  expect_error(head + "entry " + key + " 1-3-0\n", "line 4");            // not a:b:c
  expect_error(head + "entry notakey 1:3:0\n", "not a convolution key");
  expect_error(head + "bogus\n", "unknown record");
  AlgoCache cache(4);
  try {
    cache.load(path + ".missing", 92800, fake_signature);
    FAIL() << "expected an ArgumentError for a missing file";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read"), std::string::npos);
  }
  std::remove(path.c_str());
}

TEST(AlgoNames, EveryAlgorithmHasItsHeaderName) {
  EXPECT_EQ(conv_algo_name(ConvDirection::Forward, 1), "CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM");
  EXPECT_EQ(conv_algo_name(ConvDirection::BackwardData, 5), "CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED");
  EXPECT_EQ(conv_algo_name(ConvDirection::BackwardFilter, 6), "CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING");
  EXPECT_EQ(conv_algo_name(ConvDirection::BackwardFilter, 3), "CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3");
  EXPECT_NE(conv_algo_name(ConvDirection::Forward, 8).find("out of range"), std::string::npos);
  EXPECT_EQ(conv_algo_count(ConvDirection::Forward), CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
}

TEST(AlgoCacheKey, PointerAlignmentIsCappedAt16) {
  auto at = [](std::uintptr_t address) { return pointer_alignment(reinterpret_cast<const void*>(address)); };
  EXPECT_EQ(at(0x7f0000000000), 16);  // cudaMalloc's 256-byte alignment counts as 16
  EXPECT_EQ(at(0x7f0000000010), 16);
  EXPECT_EQ(at(0x7f0000000008), 8);
  EXPECT_EQ(at(0x7f0000000004), 4);
  EXPECT_EQ(at(0x7f0000000002), 2);  // a float16 view starting one element in
  EXPECT_EQ(at(0x7f0000000001), 1);
  EXPECT_EQ(at(0), 16);
  ConvProblem p = base_problem();
  EXPECT_NE(conv_algo_key(p).find("|align=16,16,16"), std::string::npos) << conv_algo_key(p);
}

TEST(AlgoCachePolicy, CandidatesAreHeldToTheirOptions) {
  const AlgoCandidate fma{1, CUDNN_FMA_MATH, 100}, tensor_op{1, CUDNN_TENSOR_OP_MATH, 100};
  const auto fwd = ConvDirection::Forward;
  EXPECT_EQ(candidate_violation(fwd, fma, DType::Float32, false, AlgoPolicy::Heuristic, 100), "");
  EXPECT_NE(candidate_violation(fwd, tensor_op, DType::Float32, false, AlgoPolicy::Heuristic, 100).find("TF32"),
            std::string::npos);
  EXPECT_EQ(candidate_violation(fwd, tensor_op, DType::Float32, true, AlgoPolicy::Heuristic, 100), "");
  EXPECT_EQ(candidate_violation(fwd, tensor_op, DType::Float16, false, AlgoPolicy::Heuristic, 100), "");
  EXPECT_NE(candidate_violation(fwd, fma, DType::Float32, false, AlgoPolicy::Heuristic, 99).find("limit 99"),
            std::string::npos);
  EXPECT_NE(candidate_violation(fwd, AlgoCandidate{8, CUDNN_FMA_MATH, 0}, DType::Float32, false,
                                AlgoPolicy::Heuristic, 0)
                .find("not an algorithm"),
            std::string::npos);
  // cuDNN documents these as non-deterministic (atomic adds); every forward algorithm is not.
  for (int a = 0; a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++a)
    EXPECT_TRUE(conv_algo_documented_deterministic(fwd, a)) << a;
  EXPECT_FALSE(conv_algo_documented_deterministic(ConvDirection::BackwardData, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0));
  EXPECT_TRUE(conv_algo_documented_deterministic(ConvDirection::BackwardData, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1));
  EXPECT_FALSE(conv_algo_documented_deterministic(ConvDirection::BackwardFilter, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0));
  EXPECT_FALSE(conv_algo_documented_deterministic(ConvDirection::BackwardFilter, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3));
  EXPECT_TRUE(conv_algo_documented_deterministic(ConvDirection::BackwardFilter, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1));
  const AlgoCandidate bwd0{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_FMA_MATH, 0};
  EXPECT_NE(candidate_violation(ConvDirection::BackwardFilter, bwd0, DType::Float32, false, AlgoPolicy::Deterministic, 0)
                .find("not deterministic"),
            std::string::npos);
  EXPECT_EQ(candidate_violation(ConvDirection::BackwardFilter, bwd0, DType::Float32, false, AlgoPolicy::Heuristic, 0), "");
}

TEST(AlgoCache, LoadSkipsEntriesTheirOwnKeyForbids) {
  ConvProblem fp32 = base_problem(), det = base_problem(), small = base_problem(), ok = base_problem();
  det.direction = ConvDirection::BackwardFilter;
  det.policy = AlgoPolicy::Deterministic;
  small.workspace_limit = 1000;
  ok.dtype = DType::Float16;
  const std::string path = temp_path("forbidden");
  {
    std::ofstream out(path);
    out << "# knetcnn convolution algorithm cache v1\ncudnn 92800\ndevice 0 Fake GPU A|sm_90\n";
    // TENSOR_OP math (1) for fp32 without allow_tf32: TF32 would slip in.
    out << "entry " << conv_algo_key(fp32) << " 1:1:0\n";
    // BWD_FILTER_ALGO_3 is non-deterministic, under algo='deterministic'.
    out << "entry " << conv_algo_key(det) << " 1:3:0,3:3:0\n";
    // More workspace than the key's own limit.
    out << "entry " << conv_algo_key(small) << " 1:3:4096\n";
    // A key from an older knetcnn (no alignment field): it could never be hit.
    std::string old = conv_algo_key(base_problem());
    old.resize(old.find("|align="));
    out << "entry " << old << " 1:3:0\n";
    // Fine: fp16 with tensor-op math.
    out << "entry " << conv_algo_key(ok) << " 1:1:0\n";
  }
  AlgoCache cache(16);
  const AlgoCacheLoadReport r = cache.load(path, 92800, fake_signature);
  EXPECT_EQ(r.loaded, 1u);
  EXPECT_EQ(r.skipped, 4u);
  EXPECT_TRUE(cache.peek(conv_algo_key(ok)).has_value());
  EXPECT_FALSE(cache.peek(conv_algo_key(fp32)).has_value());
  EXPECT_FALSE(cache.peek(conv_algo_key(det)).has_value());
  EXPECT_NE(r.reason.find("4 entries break their own key's rules"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("TF32"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("not deterministic"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("limit 1000"), std::string::npos) << r.reason;
  EXPECT_EQ(cache_entry_violation(conv_algo_key(ok), {AlgoCandidate{1, CUDNN_TENSOR_OP_MATH, 0}}), "");
  EXPECT_NE(cache_entry_violation(conv_algo_key(ok), {}), "");
  std::remove(path.c_str());
}

// Review #7: a benchmark that could not time anything leaves cuDNN's heuristic ranking as a
// provisional entry: used like any entry, replaced by the real search, never saved.
TEST(AlgoCache, ProvisionalEntriesAreUsedButMarkedAndNeverSaved) {
  AlgoCache cache(2);
  ConvProblem bench = base_problem();
  bench.policy = AlgoPolicy::Benchmark;
  const std::string key = conv_algo_key(bench), other = conv_algo_key(base_problem());
  cache.insert_provisional(key, candidates(1), 12345);
  ASSERT_TRUE(cache.find(key).has_value());  // used like any entry (a hit, not a fresh search)
  EXPECT_EQ(cache.stats().hits, 1u);
  ASSERT_TRUE(cache.provisional(key).has_value());
  EXPECT_EQ(*cache.provisional(key), 12345u);
  EXPECT_FALSE(cache.provisional(other).has_value());

  cache.insert(other, candidates(2));
  const std::string path = temp_path("provisional");
  EXPECT_EQ(cache.save(path, 92800, fake_signature), 1u);  // only the ordinary entry
  AlgoCache loaded(4);
  EXPECT_EQ(loaded.load(path, 92800, fake_signature).loaded, 1u);
  EXPECT_EQ(loaded.keys(), std::vector<std::string>{other});
  std::remove(path.c_str());

  // The real search's result makes it ordinary; erase, eviction and clear forget the mark.
  cache.insert(key, candidates(3));
  EXPECT_FALSE(cache.provisional(key).has_value());
  cache.insert_provisional(key, candidates(1), 7);
  cache.erase(key);
  EXPECT_FALSE(cache.provisional(key).has_value());
  cache.insert_provisional(key, candidates(1), 7);
  ConvProblem third = base_problem();
  third.device = 1;
  cache.insert(other, candidates(2));              // key is now the least recently used
  cache.insert(conv_algo_key(third), candidates(2));  // evicts it
  EXPECT_FALSE(cache.peek(key).has_value());
  EXPECT_FALSE(cache.provisional(key).has_value());
  cache.insert_provisional(key, candidates(1), 7);
  cache.clear();
  EXPECT_FALSE(cache.provisional(key).has_value());
  // A cache of capacity 0 keeps nothing, provisional or not.
  AlgoCache none(0);
  none.insert_provisional(key, candidates(1), 7);
  EXPECT_FALSE(none.provisional(key).has_value());
}
