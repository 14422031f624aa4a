// GPU tier: every op against a small CPU reference written here (plain loops), each algorithm
// policy, the workspace limit, the cache bound, the run-time fallback, threads, streams, strided
// arrays, half precision and CUDA graph capture. Each test skips, with the reason, where no GPU
// is usable (GTEST_SKIP), so `make test` runs unchanged on a GPU machine.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <cuda_runtime_api.h>

#include "algo_cache.hpp"
#include "algo_search.hpp"
#include "conv_exec.hpp"
#include "cudnn_check.hpp"
#include "device_memory.hpp"
#include "errors.hpp"
#include "handle_pool.hpp"
#include "pool_exec.hpp"
#include "runtime_info.hpp"
#include "test_hooks.hpp"
#include "workspace.hpp"

using namespace knetcnn;

#define REQUIRE_GPU()                                                     \
  do {                                                                    \
    const std::string reason_ = device_unavailable_reason(0);             \
    if (!reason_.empty()) GTEST_SKIP() << "gpu tier: " << reason_;        \
  } while (0)

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

namespace {

// ---- device buffers ----

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t n) : n_(n) {
    if (cudaMalloc(reinterpret_cast<void**>(&p_), std::max<std::size_t>(n, 1) * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc");
    cudaMemset(p_, 0, std::max<std::size_t>(n, 1) * sizeof(T));
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  std::vector<T> get() const {
    cudaDeviceSynchronize();
    std::vector<T> out(n_);
    cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return out;
  }
  DeviceTensor t(Shape strides = {}) const { return DeviceTensor{reinterpret_cast<std::uintptr_t>(p_), std::move(strides)}; }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

template <typename T>
DType dtype_of();
template <>
DType dtype_of<float>() { return DType::Float32; }
template <>
DType dtype_of<double>() { return DType::Float64; }

template <typename T>
double tolerance() { return sizeof(T) == 4 ? 2e-4 : 1e-10; }

std::vector<double> random_values(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = u(rng);
  return v;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }

template <typename T>
void expect_close(const std::vector<T>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  int reported = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::fabs(static_cast<double>(got[i]) - want[i]) > tol * scale && reported++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", want " << want[i];
}

// ---- the CPU reference (forward terms; spatial axes lifted to 3) ----

struct Lifted {
  int64_t n, c, d[3];
};
Lifted lift3(const Shape& s) {
  Lifted l{s[0], s[1], {1, 1, 1}};
  const int nd = static_cast<int>(s.size()) - 2;
  for (int i = 0; i < nd; ++i) l.d[3 - nd + i] = s[2 + i];
  return l;
}
std::vector<int64_t> lift3v(const std::vector<int64_t>& v, int64_t fill) {
  std::vector<int64_t> out(3, fill);
  for (std::size_t i = 0; i < v.size(); ++i) out[3 - v.size() + i] = v[i];
  return out;
}
int64_t count(const Shape& s) { return element_count(s); }

enum class RefDir { Forward, BackwardData, BackwardFilter };

// Forward: y += alpha * conv(x, w); BackwardData: x += alpha * conv^T(y, w); BackwardFilter:
// w += alpha * d<y, conv(x, w)>/dw. Output positions iterate over `y_shape` (for deconv4 with
// output_padding >= stride: deconv4's x, smaller than cuDNN's forward output: the clipped
// transposed convolution of semantics.md).
void reference_conv(RefDir dir, const Shape& x_shape, const Shape& w_shape, const Shape& y_shape,
                    const ConvGeometry& g, std::vector<double>& x, std::vector<double>& w, std::vector<double>& y,
                    double alpha) {
  const Lifted X = lift3(x_shape), Y = lift3(y_shape), W = lift3(w_shape);
  const auto pad = lift3v(g.padding, 0), str = lift3v(g.stride, 1), dil = lift3v(g.dilation, 1);
  const int64_t groups = g.group, cg = X.c / groups, og = Y.c / groups;
  for (int64_t n = 0; n < Y.n; ++n)
    for (int64_t o = 0; o < Y.c; ++o)
      for (int64_t a = 0; a < Y.d[0]; ++a)
        for (int64_t b = 0; b < Y.d[1]; ++b)
          for (int64_t e = 0; e < Y.d[2]; ++e) {
            const int64_t yi = (((n * Y.c + o) * Y.d[0] + a) * Y.d[1] + b) * Y.d[2] + e;
            for (int64_t c = 0; c < cg; ++c) {
              const int64_t ci = (o / og) * cg + c;
              for (int64_t j0 = 0; j0 < W.d[0]; ++j0)
                for (int64_t j1 = 0; j1 < W.d[1]; ++j1)
                  for (int64_t j2 = 0; j2 < W.d[2]; ++j2) {
                    const int64_t p0 = a * str[0] - pad[0] + j0 * dil[0], p1 = b * str[1] - pad[1] + j1 * dil[1],
                                  p2 = e * str[2] - pad[2] + j2 * dil[2];
                    if (p0 < 0 || p0 >= X.d[0] || p1 < 0 || p1 >= X.d[1] || p2 < 0 || p2 >= X.d[2]) continue;
                    const int64_t k0 = g.mode == 0 ? W.d[0] - 1 - j0 : j0, k1 = g.mode == 0 ? W.d[1] - 1 - j1 : j1,
                                  k2 = g.mode == 0 ? W.d[2] - 1 - j2 : j2;
                    const int64_t xi = (((n * X.c + ci) * X.d[0] + p0) * X.d[1] + p1) * X.d[2] + p2;
                    const int64_t wi = (((o * W.c + c) * W.d[0] + k0) * W.d[1] + k1) * W.d[2] + k2;
                    switch (dir) {
                      case RefDir::Forward: y[yi] += alpha * w[wi] * x[xi]; break;
                      case RefDir::BackwardData: x[xi] += alpha * w[wi] * y[yi]; break;
                      case RefDir::BackwardFilter: w[wi] += alpha * x[xi] * y[yi]; break;
                    }
                  }
            }
          }
}

// Pooling over `in_shape` -> `out_shape` with cuDNN mode `mode` (0/3 max, 1 avg incl., 2 avg excl.).
// Forward: out = alpha * pool(in). Backward: din += alpha * pool^T(dout) (max routes to the first
// maximal in-bounds cell of `in`).
void reference_pool(bool backward, const Shape& in_shape, const Shape& out_shape, const PoolGeometry& g, int mode,
                    const std::vector<double>& in, std::vector<double>& out, std::vector<double>& din,
                    const std::vector<double>& dout, double alpha) {
  const Lifted I = lift3(in_shape), O = lift3(out_shape);
  const auto win = lift3v(g.window, 1), pad = lift3v(g.padding, 0), str = lift3v(g.stride, 1);
  const double cells = static_cast<double>(win[0] * win[1] * win[2]);
  for (int64_t n = 0; n < O.n; ++n)
    for (int64_t c = 0; c < O.c; ++c)
      for (int64_t a = 0; a < O.d[0]; ++a)
        for (int64_t b = 0; b < O.d[1]; ++b)
          for (int64_t e = 0; e < O.d[2]; ++e) {
            const int64_t oi = (((n * O.c + c) * O.d[0] + a) * O.d[1] + b) * O.d[2] + e;
            std::vector<int64_t> inside;
            for (int64_t j0 = 0; j0 < win[0]; ++j0)
              for (int64_t j1 = 0; j1 < win[1]; ++j1)
                for (int64_t j2 = 0; j2 < win[2]; ++j2) {
                  const int64_t p0 = a * str[0] - pad[0] + j0, p1 = b * str[1] - pad[1] + j1,
                                p2 = e * str[2] - pad[2] + j2;
                  if (p0 < 0 || p0 >= I.d[0] || p1 < 0 || p1 >= I.d[1] || p2 < 0 || p2 >= I.d[2]) continue;
                  inside.push_back((((n * I.c + c) * I.d[0] + p0) * I.d[1] + p1) * I.d[2] + p2);
                }
            if (inside.empty()) continue;  // never for valid geometries
            const bool max_mode = mode == 0 || mode == 3;
            const double divisor = mode == 1 ? cells : static_cast<double>(inside.size());
            if (max_mode) {
              int64_t best = inside.front();
              for (int64_t i : inside)
                if (in[i] > in[best]) best = i;
              if (backward)
                din[best] += alpha * dout[oi];
              else
                out[oi] = alpha * in[best];
            } else if (backward) {
              for (int64_t i : inside) din[i] += alpha * dout[oi] / divisor;
            } else {
              double sum = 0;
              for (int64_t i : inside) sum += in[i];
              out[oi] = alpha * sum / divisor;
            }
          }
}

ConvOptions conv_opts(std::vector<int64_t> pad, std::vector<int64_t> stride, std::vector<int64_t> dil, int mode,
                      int group, std::vector<int64_t> output_padding = {}) {
  ConvOptions o;
  o.padding = AxisArg::each(pad);
  o.stride = AxisArg::each(stride);
  o.dilation = AxisArg::each(dil);
  o.output_padding = output_padding.empty() ? AxisArg::all(0) : AxisArg::each(output_padding);
  o.mode = mode;
  o.group = group;
  return o;
}

struct ConvCase {
  const char* name;
  Shape w, x;
  ConvOptions o;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"2-D pad/stride/dilation, convolution", {4, 3, 3, 2}, {2, 3, 9, 8}, conv_opts({1, 0}, {2, 1}, {1, 2}, 0, 1)},
      {"2-D cross-correlation, groups", {6, 2, 3, 3}, {1, 4, 7, 7}, conv_opts({1, 1}, {1, 1}, {1, 1}, 1, 2)},
      {"1-D", {3, 2, 4}, {2, 2, 15}, conv_opts({2}, {3}, {1}, 0, 1)},
      {"3-D", {2, 2, 2, 3, 2}, {1, 2, 5, 6, 4}, conv_opts({1, 0, 1}, {1, 2, 1}, {2, 1, 1}, 1, 1)},
  };
}

std::vector<ConvCase> deconv_cases() {
  return {
      {"2-D stride 2, output_padding 1", {3, 2, 3, 3}, {2, 3, 4, 5}, conv_opts({1, 1}, {2, 2}, {1, 1}, 0, 1, {1, 0})},
      {"2-D output_padding >= stride", {2, 3, 3, 3}, {1, 2, 4, 4}, conv_opts({0, 1}, {1, 1}, {3, 2}, 1, 1, {2, 1})},
      {"1-D groups", {4, 1, 3}, {2, 4, 6}, conv_opts({0}, {2}, {1}, 0, 2, {1})},
      {"3-D output_padding >= stride", {2, 1, 2, 2, 2}, {1, 2, 3, 2, 3}, conv_opts({0, 0, 1}, {1, 2, 1}, {3, 1, 2}, 0, 1, {2, 0, 1})},
  };
}

ExecOptions policy(AlgoPolicy algo, std::optional<std::size_t> limit = std::nullopt) {
  ExecOptions o;
  o.algo = algo;
  o.workspace_limit = limit;
  return o;
}

// ---- per-op checks, shared by several tests ----

template <typename T>
void check_conv_family(const ConvCase& c, const ExecOptions& options, cudaStream_t stream) {
  const ConvGeometry g = conv4_geometry("conv4", c.w, c.x, c.o);
  const double alpha = 1.5;
  std::vector<double> w = random_values(count(g.filter), 1), x = random_values(count(g.input), 2),
                      dy = random_values(count(g.output), 3);
  DeviceArray<T> dw_(cast<T>(w)), dx_(cast<T>(x)), ddy(cast<T>(dy));
  const ExecTarget target{0, stream};
  const double tol = tolerance<T>();
  {  // conv4
    std::vector<double> want(count(g.output), 0.0);
    reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, alpha);
    DeviceArray<T> y(count(g.output));
    conv4_exec(g, dtype_of<T>(), dw_.t(), dx_.t(), y.t(), alpha, 0, target, options);
    expect_close(y.get(), want, tol, std::string("conv4 ") + c.name);
  }
  {  // conv4x with beta: out = alpha * conv^T(dy) + 0.5 * out
    std::vector<double> want(count(g.input), 0.0), start = random_values(count(g.input), 4);
    reference_conv(RefDir::BackwardData, g.input, g.filter, g.output, g, want, w, dy, alpha);
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += 0.5 * start[i];
    DeviceArray<T> out(cast<T>(start));
    conv4x_exec(g, dtype_of<T>(), dw_.t(), ddy.t(), out.t(), alpha, 0.5, target, options);
    expect_close(out.get(), want, tol, std::string("conv4x ") + c.name);
  }
  {  // conv4w
    std::vector<double> want(count(g.filter), 0.0);
    reference_conv(RefDir::BackwardFilter, g.input, g.filter, g.output, g, x, want, dy, alpha);
    DeviceArray<T> out(count(g.filter));
    conv4w_exec(g, dtype_of<T>(), dx_.t(), ddy.t(), out.t(), alpha, 0, target, options);
    expect_close(out.get(), want, tol, std::string("conv4w ") + c.name);
  }
}

template <typename T>
void check_deconv_family(const ConvCase& c, const ExecOptions& options) {
  const ConvGeometry g = deconv4_geometry("deconv4", c.w, c.x, c.o);
  const double alpha = 0.75;
  // Forward terms: g.input = deconv4's result, g.output = deconv4's x.
  std::vector<double> w = random_values(count(g.filter), 5), x = random_values(count(g.output), 6),
                      dy = random_values(count(g.input), 7);
  DeviceArray<T> dw_(cast<T>(w)), dx_(cast<T>(x)), ddy(cast<T>(dy));
  const ExecTarget target{0, nullptr};
  const double tol = tolerance<T>();
  {  // deconv4(w, x) = conv^T(x)
    std::vector<double> want(count(g.input), 0.0), xx = x;
    reference_conv(RefDir::BackwardData, g.input, g.filter, g.output, g, want, w, xx, alpha);
    DeviceArray<T> y(count(g.input));
    deconv4_exec(g, dtype_of<T>(), dw_.t(), dx_.t(), y.t(), alpha, 0, target, options);
    expect_close(y.get(), want, tol, std::string("deconv4 ") + c.name);
  }
  {  // deconv4w(w, x, dy) = conv4w(w, dy, x)
    std::vector<double> want(count(g.filter), 0.0), xx = x;
    reference_conv(RefDir::BackwardFilter, g.input, g.filter, g.output, g, dy, want, xx, alpha);
    DeviceArray<T> out(count(g.filter));
    deconv4w_exec(g, dtype_of<T>(), dx_.t(), ddy.t(), out.t(), alpha, 0, target, options);
    expect_close(out.get(), want, tol, std::string("deconv4w ") + c.name);
  }
  {  // deconv4x(w, x, dy) = conv4(w, dy), with beta
    std::vector<double> want(count(g.output), 0.0), start = random_values(count(g.output), 8), ww = w;
    reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, dy, ww, want, alpha);
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += -1.0 * start[i];
    DeviceArray<T> out(cast<T>(start));
    deconv4x_exec(g, dtype_of<T>(), dw_.t(), ddy.t(), out.t(), alpha, -1.0, target, options);
    expect_close(out.get(), want, tol, std::string("deconv4x ") + c.name);
  }
}

PoolOptions pool_opts(std::vector<int64_t> window, std::vector<int64_t> pad, std::vector<int64_t> stride, int mode) {
  PoolOptions o;
  o.window = AxisArg::each(window);
  o.padding = AxisArg::each(pad);
  o.stride = AxisArg::each(stride);
  o.mode = mode;
  return o;
}

template <typename T>
void check_pool_family(const Shape& xs, const PoolOptions& o, double alpha, const ExecOptions& options) {
  const PoolGeometry g = pool_geometry("pool", xs, o);
  const std::string name = "mode " + std::to_string(o.mode) + " alpha " + std::to_string(alpha) + " rank " +
                           std::to_string(xs.size() - 2);
  std::vector<double> x = random_values(count(g.input), 11), dy = random_values(count(g.output), 12);
  DeviceArray<T> dx_(cast<T>(x)), ddy(cast<T>(dy));
  const ExecTarget target{0, nullptr};
  const double tol = tolerance<T>();
  std::vector<double> unused;
  // pool
  std::vector<double> y(count(g.output), 0.0);
  reference_pool(false, g.input, g.output, g, o.mode, x, y, unused, unused, alpha);
  DeviceArray<T> dy_pool(count(g.output));
  pool_exec(g, dtype_of<T>(), dx_.t(), dy_pool.t(), alpha, 0, target, options);
  expect_close(dy_pool.get(), y, tol, "pool " + name);
  // poolx, given pool's own (scaled) output as y
  std::vector<double> dx(count(g.input), 0.0);
  reference_pool(true, g.input, g.output, g, o.mode, x, y, dx, dy, alpha);
  DeviceArray<T> out(count(g.input));
  poolx_exec(g, dtype_of<T>(), dx_.t(), dy_pool.t(), ddy.t(), out.t(), alpha, 0, target, options);
  expect_close(out.get(), dx, tol, "poolx " + name);

  // unpool over the same keywords: geometry in forward terms, input = unpool's result.
  const PoolGeometry u = unpool_geometry("unpool", xs, o);
  const double cells = unpool_scale(u, 1.0);
  std::vector<double> ux = random_values(count(u.output), 13), udy = random_values(count(u.input), 14);
  DeviceArray<T> dux(cast<T>(ux)), dudy(cast<T>(udy));
  std::vector<double> want(count(u.input), 0.0);
  reference_pool(true, u.input, u.output, u, u.cudnn_mode, unused, unused, want, ux, cells / alpha);
  DeviceArray<T> uy(count(u.input));
  unpool_exec(u, dtype_of<T>(), dux.t(), uy.t(), alpha, 0, target, options);
  expect_close(uy.get(), want, tol, "unpool " + name);
  std::vector<double> wantx(count(u.output), 0.0);
  reference_pool(false, u.input, u.output, u, u.cudnn_mode, udy, wantx, unused, unused, cells / alpha);
  DeviceArray<T> ux_out(count(u.output));
  unpoolx_exec(u, dtype_of<T>(), dudy.t(), ux_out.t(), alpha, 0, target, options);
  expect_close(ux_out.get(), wantx, tol, "unpoolx " + name);
}

std::string conv_key(const char* op, const ConvGeometry& g, DType dtype, const ExecOptions& options) {
  return plan_conv(op, g, dtype, options, 0, resolve_workspace_limit(0, options.workspace_limit)).key;
}

}  // namespace

TEST(GpuConv, Conv4FamilyMatchesReferenceFloatAndDouble) {
  REQUIRE_GPU();
  for (const ConvCase& c : conv_cases()) {
    check_conv_family<float>(c, ExecOptions{}, nullptr);
    check_conv_family<double>(c, ExecOptions{}, nullptr);
  }
}

TEST(GpuConv, Deconv4FamilyMatchesReferenceIncludingOutputPaddingBeyondStride) {
  REQUIRE_GPU();
  for (const ConvCase& c : deconv_cases()) {
    check_deconv_family<float>(c, ExecOptions{});
    check_deconv_family<double>(c, ExecOptions{});
  }
}

TEST(GpuPool, EveryModeAndScalingMatchesReference) {
  REQUIRE_GPU();
  for (int mode = 0; mode < 4; ++mode)
    for (double alpha : {1.0, 2.0, 0.5}) {
      check_pool_family<float>({2, 3, 7, 6}, pool_opts({3, 2}, {1, 0}, {2, 2}, mode), alpha, ExecOptions{});
      check_pool_family<double>({1, 2, 9}, pool_opts({3}, {1}, {2}, mode), alpha, ExecOptions{});
      check_pool_family<float>({1, 2, 4, 5, 4}, pool_opts({2, 2, 2}, {0, 1, 0}, {2, 2, 2}, mode), alpha,
                               ExecOptions{});
    }
}

TEST(GpuPolicy, EveryPolicyMatchesReference) {
  REQUIRE_GPU();
  for (AlgoPolicy p : {AlgoPolicy::Heuristic, AlgoPolicy::Benchmark, AlgoPolicy::Deterministic}) {
    check_conv_family<float>(conv_cases()[0], policy(p), nullptr);
    check_deconv_family<double>(deconv_cases()[1], policy(p));
    check_pool_family<float>({2, 3, 7, 6}, pool_opts({3, 3}, {1, 1}, {2, 2}, 0), 1.0, policy(p));
  }
}

TEST(GpuPolicy, DeterministicRepeatsAreBitIdentical) {
  REQUIRE_GPU();
  // Backward-filter and max-pool backward are where cuDNN's fast algorithms use atomics.
  const ConvGeometry g = conv4_geometry("conv4", {16, 8, 3, 3}, {8, 8, 32, 32}, conv_opts({1, 1}, {1, 1}, {1, 1}, 0, 1));
  DeviceArray<float> x(cast<float>(random_values(count(g.input), 21))),
      dy(cast<float>(random_values(count(g.output), 22)));
  const ExecOptions det = policy(AlgoPolicy::Deterministic);
  std::vector<std::vector<float>> runs;
  for (int i = 0; i < 3; ++i) {
    DeviceArray<float> dw(count(g.filter));
    conv4w_exec(g, DType::Float32, x.t(), dy.t(), dw.t(), 1, 0, ExecTarget{}, det);
    runs.push_back(dw.get());
  }
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * 4), 0);
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * 4), 0);
  // Bit-identical runs could also come from a non-deterministic algorithm that happened to agree:
  // what ran must be one cuDNN documents as deterministic.
  const auto entry = algo_cache().peek(conv_key("conv4w", g, DType::Float32, det));
  ASSERT_TRUE(entry.has_value());
  for (const AlgoCandidate& c : *entry)
    EXPECT_TRUE(conv_algo_documented_deterministic(ConvDirection::BackwardFilter, c.algo))
        << conv_algo_name(ConvDirection::BackwardFilter, c.algo);

  const PoolGeometry pg = pool_geometry("pool", {4, 8, 16, 16}, pool_opts({3, 3}, {1, 1}, {1, 1}, 0));
  DeviceArray<float> px(cast<float>(random_values(count(pg.input), 23))), py(count(pg.output)),
      pdy(cast<float>(random_values(count(pg.output), 24)));
  pool_exec(pg, DType::Float32, px.t(), py.t(), 1, 0, ExecTarget{}, det);
  std::vector<std::vector<float>> pruns;
  for (int i = 0; i < 3; ++i) {
    DeviceArray<float> pdx(count(pg.input));
    test_hooks::reset_thread_record();
    poolx_exec(pg, DType::Float32, px.t(), py.t(), pdy.t(), pdx.t(), 1, 0, ExecTarget{}, det);
    // The pooling descriptor cuDNN got, read back: max pooling ran as MAX_DETERMINISTIC.
    EXPECT_EQ(test_hooks::thread_record().last_pooling_mode, static_cast<int>(CUDNN_POOLING_MAX_DETERMINISTIC));
    pruns.push_back(pdx.get());
  }
  EXPECT_EQ(std::memcmp(pruns[0].data(), pruns[1].data(), pruns[0].size() * 4), 0);
  EXPECT_EQ(std::memcmp(pruns[0].data(), pruns[2].data(), pruns[0].size() * 4), 0);
}

TEST(GpuPolicy, BenchmarkSearchesOnceThenHitsTheCache) {
  REQUIRE_GPU();
  const ConvGeometry g = conv4_geometry("conv4", {8, 4, 3, 3}, {2, 4, 12, 12}, conv_opts({1, 1}, {1, 1}, {1, 1}, 0, 1));
  const ExecOptions bench = policy(AlgoPolicy::Benchmark);
  DeviceArray<float> w(cast<float>(random_values(count(g.filter), 31))),
      x(cast<float>(random_values(count(g.input), 32))), y(count(g.output));
  conv4_exec(g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, bench);
  const std::string key = conv_key("conv4", g, DType::Float32, bench);
  ASSERT_TRUE(algo_cache().peek(key).has_value()) << key;
  const AlgoCacheStats before = algo_cache().stats();
  conv4_exec(g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, bench);
  EXPECT_EQ(algo_cache().stats().hits, before.hits + 1);
  EXPECT_EQ(algo_cache().stats().misses, before.misses);
  for (const AlgoCandidate& c : *algo_cache().peek(key)) EXPECT_EQ(c.math_type, CUDNN_FMA_MATH);  // no TF32
}

TEST(GpuWorkspace, LimitIsRespected) {
  REQUIRE_GPU();
  const ConvGeometry g = conv4_geometry("conv4", {16, 8, 5, 5}, {4, 8, 32, 32}, conv_opts({2, 2}, {1, 1}, {1, 1}, 0, 1));
  DeviceArray<float> w(cast<float>(random_values(count(g.filter), 41))),
      x(cast<float>(random_values(count(g.input), 42))), y(count(g.output)),
      dy(cast<float>(random_values(count(g.output), 43))), dx(count(g.input)), dw(count(g.filter));
  for (std::size_t limit : {std::size_t{0}, std::size_t{64} << 10}) {
    for (AlgoPolicy p : {AlgoPolicy::Heuristic, AlgoPolicy::Benchmark}) {
      const ExecOptions o = policy(p, limit);
      test_hooks::reset_thread_record();
      conv4_exec(g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, o);
      conv4x_exec(g, DType::Float32, w.t(), dy.t(), dx.t(), 1, 0, ExecTarget{}, o);
      conv4w_exec(g, DType::Float32, x.t(), dy.t(), dw.t(), 1, 0, ExecTarget{}, o);
      // What was actually allocated (search and run), not only what the entries record.
      EXPECT_LE(test_hooks::thread_record().largest_workspace, limit) << algo_policy_name(p);
      for (const char* op : {"conv4", "conv4x", "conv4w"}) {
        const auto entry = algo_cache().peek(conv_key(op, g, DType::Float32, o));
        ASSERT_TRUE(entry.has_value()) << op;
        for (const AlgoCandidate& c : *entry) EXPECT_LE(c.workspace, limit) << op << " " << c.algo;
      }
    }
  }
  check_conv_family<float>(conv_cases()[0], policy(AlgoPolicy::Heuristic, 0), nullptr);
}

TEST(GpuCache, BoundHoldsAndClearFreesWorkspaces) {
  REQUIRE_GPU();
  const std::size_t old_capacity = algo_cache().stats().capacity;
  algo_cache().clear();
  algo_cache().set_capacity(2);
  DeviceArray<float> w(4 * 3 * 3 * 3), x(2 * 3 * 16 * 16), y(2 * 4 * 16 * 16);
  for (int pad = 0; pad < 4; ++pad) {
    const ConvGeometry g = conv4_geometry("conv4", {4, 3, 3, 3}, {2, 3, 14 + pad, 14}, conv_opts({1, 1}, {1, 1}, {1, 1}, 0, 1));
    conv4_exec(g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, ExecOptions{});
  }
  EXPECT_EQ(algo_cache().stats().size, 2u);
  EXPECT_GE(algo_cache().stats().evictions, 2u);
  algo_cache().set_capacity(old_capacity);
  // release_workspaces never synchronizes a device: the caller does, so that every asynchronous
  // free has been seen complete and the pool can give everything back.
  CUDA_OK(cudaDeviceSynchronize());
  release_workspaces();
  EXPECT_EQ(workspace_stats().bytes, 0u);
}

TEST(GpuFallback, AFailingCachedCandidateFallsBackAndIsDropped) {
  REQUIRE_GPU();
  // CUDNN_CONVOLUTION_FWD_ALGO_DIRECT and CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD are listed
  // by cuDNN but not implemented: planted first, they must fail (NOT_SUPPORTED) and fall back.
  const ConvCase c = conv_cases()[0];
  const ConvGeometry g = conv4_geometry("conv4", c.w, c.x, c.o);
  const ExecOptions o;
  const std::string fwd = conv_key("conv4", g, DType::Float32, o), bwd = conv_key("conv4w", g, DType::Float32, o);
  algo_cache().insert(fwd, {AlgoCandidate{CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, CUDNN_FMA_MATH, 0},
                            AlgoCandidate{CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_FMA_MATH, 0}});
  algo_cache().insert(bwd, {AlgoCandidate{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, CUDNN_FMA_MATH, 0},
                            AlgoCandidate{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_FMA_MATH, 0}});
  check_conv_family<float>(c, o, nullptr);
  ASSERT_TRUE(algo_cache().peek(fwd).has_value());
  EXPECT_EQ(algo_cache().peek(fwd)->front().algo, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
  EXPECT_EQ(algo_cache().peek(fwd)->size(), 1u);
  EXPECT_EQ(algo_cache().peek(bwd)->front().algo, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1);
  // A cached list where nothing works is stale: it is dropped and the search runs again.
  algo_cache().insert(fwd, {AlgoCandidate{CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, CUDNN_FMA_MATH, 0}});
  check_conv_family<float>(c, o, nullptr);
  ASSERT_TRUE(algo_cache().peek(fwd).has_value());
  EXPECT_NE(algo_cache().peek(fwd)->front().algo, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT);
}

TEST(GpuThreads, SeveralThreadsOnTheirOwnStreams) {
  REQUIRE_GPU();
  std::vector<std::thread> threads;
  std::vector<std::string> failures(4);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t, &failures] {
      cudaStream_t stream = nullptr;
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      const ConvCase c = conv_cases()[t % 2];
      const ConvGeometry g = conv4_geometry("conv4", c.w, c.x, c.o);
      std::vector<double> w = random_values(count(g.filter), 50 + t), x = random_values(count(g.input), 60 + t);
      std::vector<double> want(count(g.output), 0.0);
      reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
      DeviceArray<float> dw(cast<float>(w)), dx(cast<float>(x)), y(count(g.output));
      for (int i = 0; i < 20; ++i) {
        try {
          conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream},
                     policy(i % 2 ? AlgoPolicy::Heuristic : AlgoPolicy::Deterministic));
        } catch (const std::exception& e) {
          failures[t] = e.what();
          break;
        }
      }
      cudaStreamSynchronize(stream);
      const std::vector<float> got = y.get();
      for (std::size_t i = 0; i < got.size() && failures[t].empty(); ++i)
        if (std::fabs(got[i] - want[i]) > 1e-3) failures[t] = "thread " + std::to_string(t) + " wrong result";
      cudaStreamDestroy(stream);
    });
  for (auto& th : threads) th.join();
  for (const std::string& f : failures) EXPECT_EQ(f, "");
  EXPECT_GE(cudnn_handles_created(), 1);
}

TEST(GpuStreams, NonDefaultStreamAndStridedArrays) {
  REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreate(&stream));
  check_conv_family<float>(conv_cases()[1], ExecOptions{}, stream);
  // x stored with a row pitch of 12 (not 8) and y written every other element in W: strided
  // convolution input; pooling input/output with innermost stride 2 (copied through temporaries).
  const ConvGeometry g = conv4_geometry("conv4", {2, 3, 3, 3}, {2, 3, 6, 8}, conv_opts({1, 1}, {1, 1}, {1, 1}, 1, 1));
  std::vector<double> w = random_values(count(g.filter), 71), x = random_values(count(g.input), 72);
  std::vector<double> padded(2 * 3 * 6 * 12, 0.0);
  for (int64_t i = 0; i < count(g.input); ++i) padded[(i / 8) * 12 + i % 8] = x[i];
  std::vector<double> want(count(g.output), 0.0);
  reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
  DeviceArray<float> dw(cast<float>(w)), dx(cast<float>(padded)), y(count(g.output) * 2);
  const Shape y_strides{2 * 2 * 6 * 8, 2 * 6 * 8, 2 * 8, 2};
  conv4_exec(g, DType::Float32, dw.t(), dx.t({3 * 6 * 12, 6 * 12, 12, 1}), y.t(y_strides), 1, 0,
             ExecTarget{0, stream}, ExecOptions{});
  std::vector<float> got = y.get(), picked;
  for (std::size_t i = 0; i < got.size(); i += 2) picked.push_back(got[i]);
  expect_close(picked, want, 2e-4, "conv4 with strided x and y");

  const PoolGeometry pg = pool_geometry("pool", {1, 2, 4, 6}, pool_opts({2, 2}, {0, 0}, {2, 2}, 1));
  std::vector<double> px = random_values(count(pg.input), 73), spread(count(pg.input) * 2, 0.0);
  for (int64_t i = 0; i < count(pg.input); ++i) spread[2 * i] = px[i];
  std::vector<double> pwant(count(pg.output), 0.0), unused;
  reference_pool(false, pg.input, pg.output, pg, 1, px, pwant, unused, unused, 1.0);
  DeviceArray<float> dpx(cast<float>(spread)), dpy(count(pg.output) * 2);
  pool_exec(pg, DType::Float32, dpx.t({96, 48, 12, 2}), dpy.t({24, 12, 6, 2}), 1, 0, ExecTarget{0, stream},
            ExecOptions{});
  std::vector<float> pgot = dpy.get(), ppicked;
  for (std::size_t i = 0; i < pgot.size(); i += 2) ppicked.push_back(pgot[i]);
  expect_close(ppicked, pwant, 2e-4, "pool with innermost stride 2");
  // poolx with y packed but dy (and dx) stored with a row pitch of 5: cudnnPoolingBackward needs
  // y/dy and x/dx pairwise in one layout, so they go through packed copies.
  const PoolGeometry mg = pool_geometry("pool", {1, 2, 4, 6}, pool_opts({2, 2}, {0, 0}, {2, 2}, 0));
  std::vector<double> mx = random_values(count(mg.input), 74), mdy = random_values(count(mg.output), 75);
  std::vector<double> my(count(mg.output), 0.0), mdx(count(mg.input), 0.0);
  reference_pool(false, mg.input, mg.output, mg, 0, mx, my, unused, unused, 1.0);
  reference_pool(true, mg.input, mg.output, mg, 0, mx, my, mdx, mdy, 1.0);
  std::vector<double> pitched_dy(2 * 2 * 5, 0.0);
  for (int64_t i = 0; i < count(mg.output); ++i) pitched_dy[(i / 3) * 5 + i % 3] = mdy[i];
  DeviceArray<float> dmx(cast<float>(mx)), dmy(cast<float>(my)), dmdy(cast<float>(pitched_dy)),
      dmdx(2 * 4 * 8);
  // dx with a row pitch of 8 (x is packed, pitch 6).
  poolx_exec(mg, DType::Float32, dmx.t(), dmy.t(), dmdy.t({20, 10, 5, 1}), dmdx.t({64, 32, 8, 1}), 1, 0,
             ExecTarget{0, stream}, ExecOptions{});
  const std::vector<float> pitched_dx = dmdx.get();
  std::vector<float> mgot;
  for (int64_t i = 0; i < count(mg.input); ++i) mgot.push_back(pitched_dx[(i / 6) * 8 + i % 6]);
  expect_close(mgot, mdx, 2e-4, "poolx with dy and dx in other layouts than y and x");
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaStreamDestroy(stream));
}

namespace {

uint16_t to_half(float f) {  // round to nearest even; normal range only (test data is in [-1, 1])
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000;
  const int32_t exponent = static_cast<int32_t>((b >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = b & 0x7fffff;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  uint32_t h = sign | (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}
float from_half(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent == 0) return sign ? -0.0f : 0.0f;
  const uint32_t b = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint16_t to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fff + ((b >> 16) & 1);
  return static_cast<uint16_t>(b >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

}  // namespace

TEST(GpuHalf, Float16AndBfloat16ConvAndPoolMatchReference) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float16, DType::BFloat16}) {
    auto encode = [&](const std::vector<double>& v) {
      std::vector<uint16_t> out;
      for (double d : v) out.push_back(dtype == DType::Float16 ? to_half(static_cast<float>(d)) : to_bf16(static_cast<float>(d)));
      return out;
    };
    auto decode = [&](const std::vector<uint16_t>& v) {
      std::vector<float> out;
      for (uint16_t h : v) out.push_back(dtype == DType::Float16 ? from_half(h) : from_bf16(h));
      return out;
    };
    auto rounded = [&](const std::vector<double>& v) {
      std::vector<double> out;
      for (float f : decode(encode(v))) out.push_back(f);
      return out;
    };
    const double tol = dtype == DType::Float16 ? 5e-3 : 3e-2;
    const ConvGeometry g = conv4_geometry("conv4", {8, 4, 3, 3}, {2, 4, 9, 9}, conv_opts({1, 1}, {1, 1}, {1, 1}, 0, 1));
    std::vector<double> w = rounded(random_values(count(g.filter), 81)), x = rounded(random_values(count(g.input), 82));
    std::vector<double> want(count(g.output), 0.0);
    reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
    DeviceArray<uint16_t> dw(encode(w)), dx(encode(x)), y(count(g.output));
    conv4_exec(g, dtype, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{}, ExecOptions{});
    expect_close(decode(y.get()), want, tol, std::string("conv4 ") + dtype_name(dtype));

    const PoolGeometry pg = pool_geometry("pool", {2, 3, 6, 6}, pool_opts({2, 2}, {0, 0}, {2, 2}, 2));
    std::vector<double> px = rounded(random_values(count(pg.input), 83)), pwant(count(pg.output), 0.0), unused;
    reference_pool(false, pg.input, pg.output, pg, 2, px, pwant, unused, unused, 1.0);
    DeviceArray<uint16_t> dpx(encode(px)), dpy(count(pg.output));
    pool_exec(pg, dtype, dpx.t(), dpy.t(), 1, 0, ExecTarget{}, ExecOptions{});
    expect_close(decode(dpy.get()), pwant, tol, std::string("pool ") + dtype_name(dtype));
  }
}

TEST(GpuCapture, BenchmarkSearchIsRefusedButCachedChoicesRunInAGraph) {
  REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const ConvCase c = conv_cases()[0];
  const ConvGeometry g = conv4_geometry("conv4", c.w, c.x, c.o);
  std::vector<double> w = random_values(count(g.filter), 91), x = random_values(count(g.input), 92);
  std::vector<double> want(count(g.output), 0.0);
  reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
  DeviceArray<float> dw(cast<float>(w)), dx(cast<float>(x)), y(count(g.output));
  const ExecOptions bench = policy(AlgoPolicy::Benchmark, std::size_t{123457});  // a key not yet cached

  // 1. An uncached benchmark search during capture is refused, and the capture stays valid.
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream}, bench);
    ADD_FAILURE() << "benchmark search ran during capture";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code_name(), "cudaErrorStreamCaptureUnsupported");
    EXPECT_NE(std::string(e.what()).find("before capturing"), std::string::npos) << e.what();
  }
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  if (graph) cudaGraphDestroy(graph);

  // 2. Warm up outside capture, then capture the call and replay the graph.
  conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream}, bench);
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemset(reinterpret_cast<void*>(y.t().data), 0, count(g.output) * sizeof(float)));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream}, bench);
  graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  expect_close(y.get(), want, 2e-4, "conv4 replayed from a CUDA graph");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  // 3. During capture a stale cached list cannot be replaced by a benchmark search: the error
  //    names the call, every algorithm tried and why.
  algo_cache().insert(conv_key("conv4", g, DType::Float32, bench),
                      {AlgoCandidate{CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, CUDNN_FMA_MATH, 0}});
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream}, bench);
    ADD_FAILURE() << "a failing algorithm ran";
  } catch (const CudnnError& e) {
    const std::string message = e.what();
    // The cached size is re-queried before running: for an algorithm cuDNN does not implement,
    // that query (or the run) fails with a NOT_SUPPORTED or BAD_PARAM status.
    EXPECT_TRUE(e.status_name().rfind("CUDNN_STATUS_NOT_SUPPORTED", 0) == 0 ||
                e.status_name().rfind("CUDNN_STATUS_BAD_PARAM", 0) == 0)
        << message;
    EXPECT_NE(message.find("failed with every candidate algorithm"), std::string::npos) << message;
    EXPECT_NE(message.find("CUDNN_CONVOLUTION_FWD_ALGO_DIRECT"), std::string::npos) << message;
    EXPECT_NE(message.find("conv4: w (4, 3, 3, 2)"), std::string::npos) << message;
    EXPECT_NE(message.find("algo=benchmark"), std::string::npos) << message;
    // The cache does not change during capture, and the message says how to get a good choice.
    EXPECT_NE(message.find("Run this call once before capturing"), std::string::npos) << message;
  }
  graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess) << "the refused call broke the capture";
  cudaGetLastError();
  if (graph) cudaGraphDestroy(graph);
  const std::string key = conv_key("conv4", g, DType::Float32, bench);
  ASSERT_TRUE(algo_cache().peek(key).has_value()) << "a stale entry was erased during capture";
  EXPECT_EQ(algo_cache().peek(key)->front().algo, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT);
  // Outside capture the stale entry is dropped and benchmarked again.
  conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream}, bench);
  CUDA_OK(cudaStreamSynchronize(stream));
  expect_close(y.get(), want, 2e-4, "conv4 after the stale entry was replaced");
  ASSERT_TRUE(algo_cache().peek(key).has_value());
  EXPECT_NE(algo_cache().peek(key)->front().algo, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT);
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST(GpuErrors, HostMemoryAndMissingDevicesAreRefused) {
  REQUIRE_GPU();
  const ConvGeometry g = conv4_geometry("conv4", {4, 3, 3, 3}, {2, 3, 8, 8}, conv_opts({1, 1}, {1, 1}, {1, 1}, 0, 1));
  std::vector<float> host(count(g.input));
  DeviceArray<float> w(count(g.filter)), y(count(g.output));
  try {
    conv4_exec(g, DType::Float32, w.t(), DeviceTensor{reinterpret_cast<std::uintptr_t>(host.data()), {}}, y.t(), 1, 0,
               ExecTarget{}, ExecOptions{});
    FAIL() << "host memory was accepted";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
  // A device ordinal past the last one: DeviceUnavailable says so before anything runs.
  int count_devices = 0;
  cudaGetDeviceCount(&count_devices);
  DeviceArray<float> x(count(g.input));
  try {
    conv4_exec(g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{count_devices, nullptr}, ExecOptions{});
    FAIL() << "a device ordinal past the last was accepted";
  } catch (const DeviceUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

// ---- workspaces, graph capture, alignment and error hygiene (review fixes) ----

namespace {

// The first algorithm of cuDNN's heuristic ranking for `g` (fp32, no TF32) that needs a workspace.
std::optional<AlgoCandidate> algorithm_with_workspace(const ConvGeometry& g) {
  DeviceGuard guard(0);
  cudnnHandle_t handle = cudnn_handle(0, nullptr);
  ConvDescriptors d = make_conv_descriptors(g, DType::Float32, false);
  const ConvDescriptorRefs refs{d.input, d.filter, d.convolution, d.output};
  SearchRequest r;
  r.direction = ConvDirection::Forward;
  r.policy = AlgoPolicy::Heuristic;
  r.dtype = DType::Float32;
  r.workspace_limit = kDefaultWorkspaceCap;
  for (const AlgoCandidate& c : search_conv_algorithms(handle, r, refs, ConvPointers{}, "test").candidates)
    if (c.workspace > 0) return c;
  return std::nullopt;
}

// A forward problem with an algorithm that needs a sizeable workspace.
struct GemmCase {
  ConvGeometry g = conv4_geometry("conv4", {16, 8, 3, 3}, {8, 8, 32, 32}, conv_opts({1, 1}, {1, 1}, {1, 1}, 1, 1));
  std::vector<double> w = random_values(count(g.filter), 101), x = random_values(count(g.input), 102);
  std::vector<double> want;
  std::optional<AlgoCandidate> algo = algorithm_with_workspace(g);
  GemmCase() {
    want.assign(count(g.output), 0.0);
    reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
  }
  // Plants that algorithm with a recorded workspace of 0 bytes: every run must ask cuDNN for the
  // real size (and allocate it) rather than trust the record.
  std::string plant(const ExecOptions& o) const {
    const std::string key = conv_key("conv4", g, DType::Float32, o);
    algo_cache().insert(key, {AlgoCandidate{algo->algo, algo->math_type, 0}});
    return key;
  }
};

#define REQUIRE_WORKSPACE_ALGORITHM(c) \
  if (!(c).algo) GTEST_SKIP() << "cuDNN ranks no algorithm that needs a workspace for this problem"

bool close_to(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  if (got.size() != want.size()) return false;
  double scale = 1;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::fabs(got[i] - want[i]) > tol * scale) return false;
  return true;
}

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

}  // namespace

TEST(GpuWorkspace, PerThreadDefaultStreamsNeverShareAWorkspace) {
  REQUIRE_GPU();
  // cudaStreamPerThread is one handle but a different stream in every thread: workspaces keyed on
  // the handle were shared by kernels running concurrently. Each thread checks its own result.
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);
  const ExecOptions o;
  const std::string key = c.plant(o);
  std::vector<std::string> failures(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      try {
        DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x));
        std::vector<std::unique_ptr<DeviceArray<float>>> ys;
        for (int i = 0; i < 16; ++i) {
          ys.push_back(std::make_unique<DeviceArray<float>>(count(c.g.output)));
          conv4_exec(c.g, DType::Float32, w.t(), x.t(), ys.back()->t(), 1, 0, ExecTarget{0, cudaStreamPerThread}, o);
        }
        cudaStreamSynchronize(cudaStreamPerThread);
        for (auto& y : ys)
          if (!close_to(y->get(), c.want, 2e-4)) failures[t] = "thread " + std::to_string(t) + ": wrong result";
      } catch (const std::exception& e) {
        failures[t] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (const std::string& f : failures) EXPECT_EQ(f, "");
  // The planted entry ran (its real workspace was asked for) and stays cached.
  ASSERT_TRUE(algo_cache().peek(key).has_value());
  EXPECT_EQ(algo_cache().peek(key)->front().algo, c.algo->algo);
  // Stats never wait for a workspace in use, and clearing releases the memory.
  EXPECT_GT(workspace_stats().bytes, 0u);
  release_workspaces();
  EXPECT_EQ(workspace_stats().bytes, 0u);
}

TEST(GpuCapture, AGraphOwnsItsWorkspaceAndKeepsTheCacheEntry) {
  REQUIRE_GPU();
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);
  const ExecOptions o;
  cudaStream_t stream = nullptr, other = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output));
  // A fresh stream: before the fix it had a 0-byte buffer, every cached candidate needing
  // workspace was skipped and the good entry erased.
  const std::string key = c.plant(o);
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{0, stream}, o);
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(algo_cache().peek(key).has_value()) << "the capture erased a good entry";
  EXPECT_EQ(algo_cache().peek(key)->front().algo, c.algo->algo);
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  // Eager work between capture and replay, on the capture stream and another one, with larger
  // problems, and a cache clear: none of it may touch the graph's workspace.
  const ConvGeometry big = conv4_geometry("conv4", {32, 8, 5, 5}, {16, 8, 64, 64}, conv_opts({2, 2}, {1, 1}, {1, 1}, 1, 1));
  DeviceArray<float> bw(count(big.filter)), bx(count(big.input)), by(count(big.output));
  for (cudaStream_t s : {stream, other}) conv4_exec(big, DType::Float32, bw.t(), bx.t(), by.t(), 1, 0, ExecTarget{0, s}, o);
  CUDA_OK(cudaStreamSynchronize(other));
  CUDA_OK(cudaStreamSynchronize(stream));
  release_workspaces();
  for (int replay = 0; replay < 2; ++replay) {
    CUDA_OK(cudaMemset(reinterpret_cast<void*>(y.t().data), 0, count(c.g.output) * sizeof(float)));
    CUDA_OK(cudaGraphLaunch(exec, stream));
    conv4_exec(big, DType::Float32, bw.t(), bx.t(), by.t(), 1, 0, ExecTarget{0, other}, o);  // concurrent
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaStreamSynchronize(other));
    expect_close(y.get(), c.want, 2e-4, "conv4 replayed from a graph after eager work and clear_cache");
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  CUDA_OK(cudaStreamDestroy(stream));
  CUDA_OK(cudaStreamDestroy(other));
}

TEST(GpuCapture, AMissingHandleIsRefusedWithoutBreakingTheCapture) {
  REQUIRE_GPU();
  // A new thread whose first call comes during a capture, with no pooled handle to take (the
  // pool is emptied for the test): cudnnCreate cannot run then, so the call is refused with a
  // clear error and the capture stays valid.
  const GemmCase c;
  const int created = cudnn_handles_created();
  const std::vector<cudnnHandle_t> pooled = test_hooks::take_pooled_handles(0);
  std::string outcome;
  std::thread([&] {
    cudaStream_t stream = nullptr;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output));
    cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    try {
      conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{0, stream}, ExecOptions{});
      outcome = "ran";
    } catch (const CudaError& e) {
      outcome = std::string(e.what()).find("before capturing") != std::string::npos ? "refused" : e.what();
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (ended != cudaSuccess || !graph) outcome += " but the capture was invalidated";
    if (graph) cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }).join();
  test_hooks::restore_pooled_handles(0, pooled);
  EXPECT_EQ(outcome, "refused");
  EXPECT_EQ(cudnn_handles_created(), created) << "a handle was created during the capture";
}

TEST(GpuAlignment, MisalignedPointersFallBackAndAreKeyedApart) {
  REQUIRE_GPU();
  const ConvGeometry g = conv4_geometry("conv4", {8, 4, 3, 3}, {2, 4, 16, 16}, conv_opts({1, 1}, {1, 1}, {1, 1}, 1, 1));
  std::vector<double> w = random_values(count(g.filter), 111), x = random_values(count(g.input), 112);
  std::vector<double> want(count(g.output), 0.0);
  reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
  // x starts one float into its buffer: 4-byte aligned, where vectorized kernels want 16.
  std::vector<double> shifted(x.size() + 1, 0.0);
  std::copy(x.begin(), x.end(), shifted.begin() + 1);
  DeviceArray<float> dw(cast<float>(w)), dx(cast<float>(shifted)), y(count(g.output));
  const DeviceTensor x_view{dx.t().data + sizeof(float), {}};
  for (AlgoPolicy p : {AlgoPolicy::Heuristic, AlgoPolicy::Benchmark}) {
    const ExecOptions o = policy(p);
    conv4_exec(g, DType::Float32, dw.t(), x_view, y.t(), 1, 0, ExecTarget{}, o);
    expect_close(y.get(), want, 2e-4, std::string("conv4 on a 4-byte-aligned x, ") + algo_policy_name(p));
    std::string key = conv_key("conv4", g, DType::Float32, o);
    const std::string aligned = key;
    key.replace(key.find("|align=16,16,16"), 15, "|align=4,16,16");
    EXPECT_TRUE(algo_cache().peek(key).has_value()) << key;
    // The aligned call is a separate entry, free to use the vectorized algorithms.
    conv4_exec(g, DType::Float32, dw.t(), DeviceTensor{dx.t().data, {}}, y.t(), 1, 0, ExecTarget{}, o);
    EXPECT_TRUE(algo_cache().peek(aligned).has_value()) << aligned;
  }
}

TEST(GpuErrors, WorkspaceOutOfMemoryIsACudaErrorAndKeepsTheEntry) {
  REQUIRE_GPU();
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);
  // Teardown, whatever fails below: the limit of 4x the device raised the pool's release
  // threshold; later tests must find it back at the floor.
  struct Reset {
    ~Reset() {
      try {
        release_workspaces();
      } catch (...) {
      }
    }
  } reset;
  std::size_t free_bytes = 0, total_bytes = 0;
  CUDA_OK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const ExecOptions o = policy(AlgoPolicy::Heuristic, 4 * total_bytes);
  const std::string key = conv_key("conv4", c.g, DType::Float32, o);
  // A recorded workspace twice the GPU's memory (the run takes the larger of record and query).
  algo_cache().insert(key, {AlgoCandidate{c.algo->algo, c.algo->math_type, 2 * total_bytes}});
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output));
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  try {
    conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, o);
    FAIL() << "a workspace twice the GPU's memory was allocated";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code_name(), "cudaErrorMemoryAllocation") << e.what();
    EXPECT_NE(std::string(e.what()).find("workspace_limit"), std::string::npos) << e.what();
  }
  // Memory was short, the entry is not stale: kept. And our failed allocation left no error behind.
  EXPECT_TRUE(algo_cache().peek(key).has_value());
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess);
  algo_cache().erase(key);
  if (memory_pools_supported(0)) {
    // The threshold followed the limit only up to a quarter of the device, and clearing resets it.
    EXPECT_EQ(pool_release_threshold(0), pool_retention_for(4 * total_bytes, total_bytes));
    EXPECT_LE(pool_release_threshold(0), total_bytes / 4);
    release_workspaces();
    EXPECT_EQ(pool_release_threshold(0), kMinPoolRetention);
  }
}

TEST(GpuErrors, ACallersPendingCudaErrorIsLeftAlone) {
  REQUIRE_GPU();
  // A non-sticky error the caller's library has not read yet (a failed huge cudaMalloc).
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, std::size_t{1} << 60), cudaErrorMemoryAllocation);
  ASSERT_EQ(cudaPeekAtLastError(), cudaErrorMemoryAllocation);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  {
    DeviceGuard guard(0);
    EXPECT_EQ(stream_capture_state(stream), CaptureState::None);
    DeviceScratch scratch(4096, 0, stream, CaptureState::None, "test");
    Workspace workspace(0, stream, 1 << 20, CaptureState::None);
    check_stream_device(stream, 0);
    EXPECT_EQ(primary_context_active(0), 1);  // the driver query works where a driver is
  }
  (void)workspace_stats();
  release_workspaces();
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation) << "knetcnn cleared an error it did not cause";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  cudaStreamDestroy(stream);
}

TEST(GpuDevices, GuardRestoresAnActiveDeviceAndChecksStreams) {
  REQUIRE_GPU();
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  std::thread([] {
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);  // device 0: an active primary context
    {
      DeviceGuard guard(1);
      EXPECT_EQ(guard.restores(), 1);
    }
    int current = -1;
    cudaGetDevice(&current);
    EXPECT_EQ(current, 0);
  }).join();
  // A stream of device 1 with arrays on device 0.
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  const GemmCase c;
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output));
  try {
    conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{0, stream}, ExecOptions{});
    ADD_FAILURE() << "a stream of device 1 was accepted for device 0";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("belongs to device 1"), std::string::npos) << e.what();
  }
  cudaStreamDestroy(stream);
}

// ---- second review: capture modes, transient failures, memory, strided pooling ----

namespace {

// Every algorithm cuDNN's heuristic ranks for the forward problem `g` (fp32, no TF32).
std::vector<AlgoCandidate> heuristic_candidates(const ConvGeometry& g) {
  DeviceGuard guard(0);
  cudnnHandle_t handle = cudnn_handle(0, nullptr);
  ConvDescriptors d = make_conv_descriptors(g, DType::Float32, false);
  const ConvDescriptorRefs refs{d.input, d.filter, d.convolution, d.output};
  SearchRequest r;
  r.direction = ConvDirection::Forward;
  r.policy = AlgoPolicy::Heuristic;
  r.dtype = DType::Float32;
  r.workspace_limit = kDefaultWorkspaceCap;
  return search_conv_algorithms(handle, r, refs, ConvPointers{}, "test").candidates;
}

// Element offsets of a C-order walk over `shape` laid out with `strides`.
std::vector<int64_t> offsets(const Shape& shape, const Shape& strides) {
  std::vector<int64_t> out;
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t k = 0; k < count(shape); ++k) {
    int64_t offset = 0;
    for (std::size_t a = 0; a < shape.size(); ++a) offset += index[a] * strides[a];
    out.push_back(offset);
    for (int a = static_cast<int>(shape.size()) - 1; a >= 0; --a) {
      if (++index[a] < shape[a]) break;
      index[a] = 0;
    }
  }
  return out;
}

// A strided view with `values` at its elements and a sentinel everywhere else in its buffer, so
// that a write outside the view shows.
template <typename T>
class StridedArray {
 public:
  static constexpr double kSentinel = 7.0;
  StridedArray(const Shape& shape, const Shape& strides, const std::vector<double>& values)
      : strides_(strides.empty() ? packed_strides(shape) : strides), at_(offsets(shape, strides_)) {
    std::vector<double> host(static_cast<std::size_t>(last_offset(shape, strides_) + 1), kSentinel);
    for (std::size_t i = 0; i < at_.size(); ++i) host[at_[i]] = values[i];
    buffer_ = std::make_unique<DeviceArray<T>>(cast<T>(host));
  }
  DeviceTensor t() const { return buffer_->t(strides_); }
  std::vector<T> values() const {
    const std::vector<T> all = buffer_->get();
    std::vector<T> out;
    for (int64_t i : at_) out.push_back(all[i]);
    return out;
  }
  int stray_writes() const {
    const std::vector<T> all = buffer_->get();
    std::vector<bool> inside(all.size(), false);
    for (int64_t i : at_) inside[i] = true;
    int stray = 0;
    for (std::size_t i = 0; i < all.size(); ++i) stray += !inside[i] && static_cast<double>(all[i]) != kSentinel;
    return stray;
  }
  std::size_t span_bytes() const { return buffer_->get().size() * sizeof(T); }

 private:
  Shape strides_;
  std::vector<int64_t> at_;
  std::unique_ptr<DeviceArray<T>> buffer_;
};

std::vector<double> plus_scaled(std::vector<double> a, const std::vector<double>& b, double beta) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] += beta * b[i];
  return a;
}

}  // namespace

TEST(GpuFallback, AnExecutionFailureFallsBackOnlyWhenOverwritingAndNeverErasesTheEntry) {
  REQUIRE_GPU();
  // Review #3: transient failures (EXECUTION_FAILED, cuDNN's allocation failures) must not erase
  // or trim a good entry; only NOT_SUPPORTED / BAD_PARAM do, and never during capture. The
  // failures are injected at the launch (test_hooks), so nothing runs for them.
  const ConvCase c = conv_cases()[1];
  const ConvGeometry g = conv4_geometry("conv4", c.w, c.x, c.o);
  const ExecOptions o = policy(AlgoPolicy::Heuristic, std::size_t{12345678});  // a key of its own
  const std::string key = conv_key("conv4", g, DType::Float32, o);
  std::vector<AlgoCandidate> ranked = heuristic_candidates(g);
  if (ranked.size() < 2) GTEST_SKIP() << "cuDNN ranks fewer than two algorithms for this problem";
  ranked.resize(2);
  std::vector<double> w = random_values(count(g.filter), 201), x = random_values(count(g.input), 202),
                      start = random_values(count(g.output), 203);
  std::vector<double> want(count(g.output), 0.0);
  reference_conv(RefDir::Forward, g.input, g.filter, g.output, g, x, w, want, 1.0);
  DeviceArray<float> dw(cast<float>(w)), dx(cast<float>(x));
  auto launches = [] { return test_hooks::thread_record().conv_launches; };

  // beta == 0: the output is overwritten anyway, so the next candidate runs; the entry stays whole.
  algo_cache().insert(key, ranked);
  {
    DeviceArray<float> y(count(g.output));
    test_hooks::reset_thread_record();
    test_hooks::inject_execution_failures(1, CUDNN_STATUS_EXECUTION_FAILED);
    conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{}, o);
    EXPECT_EQ(launches(), 2);
    expect_close(y.get(), want, 2e-4, "conv4 after an injected EXECUTION_FAILED");
    EXPECT_EQ(*algo_cache().peek(key), ranked) << "a transient failure changed the entry";
  }
  // beta != 0: a half-run kernel may have updated the output: raised at once, not retried.
  {
    DeviceArray<float> y(cast<float>(start));
    test_hooks::reset_thread_record();
    test_hooks::inject_execution_failures(1, CUDNN_STATUS_EXECUTION_FAILED);
    try {
      conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0.5, ExecTarget{}, o);
      ADD_FAILURE() << "an accumulating call moved on after EXECUTION_FAILED";
    } catch (const CudnnError& e) {
      EXPECT_EQ(e.status_name(), "CUDNN_STATUS_EXECUTION_FAILED") << e.what();
    }
    EXPECT_EQ(launches(), 1);
    expect_close(y.get(), start, 1e-6, "the accumulating output (the injected failure ran nothing)");
    EXPECT_EQ(*algo_cache().peek(key), ranked);
  }
  // An allocation failure inside cuDNN: nothing ran, so any beta moves on; the entry stays whole.
  {
    DeviceArray<float> y(cast<float>(start));
    test_hooks::inject_execution_failures(1, CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED);
    conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0.5, ExecTarget{}, o);
    expect_close(y.get(), plus_scaled(want, start, 0.5), 2e-4, "conv4 beta=0.5 after an allocation failure");
    EXPECT_EQ(*algo_cache().peek(key), ranked);
  }
  // NOT_SUPPORTED will recur: the entry is trimmed to what runs...
  {
    DeviceArray<float> y(count(g.output));
    test_hooks::inject_execution_failures(1, CUDNN_STATUS_NOT_SUPPORTED);
    conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{}, o);
    expect_close(y.get(), want, 2e-4, "conv4 after an injected NOT_SUPPORTED");
    EXPECT_EQ(*algo_cache().peek(key), std::vector<AlgoCandidate>{ranked[1]});
  }
  // ... but not during capture, where a failure may be the capture's own doing.
  {
    algo_cache().insert(key, ranked);
    cudaStream_t stream = nullptr;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    DeviceArray<float> y(count(g.output));
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    test_hooks::inject_execution_failures(1, CUDNN_STATUS_NOT_SUPPORTED);
    conv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{0, stream}, o);
    cudaGraph_t graph = nullptr;
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    EXPECT_EQ(*algo_cache().peek(key), ranked) << "the entry changed during capture";
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    expect_close(y.get(), want, 2e-4, "conv4 captured after an injected NOT_SUPPORTED");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    CUDA_OK(cudaStreamDestroy(stream));
  }
  test_hooks::inject_execution_failures(0, CUDNN_STATUS_SUCCESS);
  algo_cache().erase(key);
}

TEST(GpuCapture, AGlobalModeCaptureSurvivesEagerCallsOnAnotherThread) {
  REQUIRE_GPU();
  // Review #1: while thread A captures in cudaStreamCaptureModeGlobal, thread B's eager call
  // (workspace from the pool and back, the statistics) must neither be refused nor invalidate
  // A's capture. B's kernels and a pooled cuDNN handle are warmed up on a thread that ends first,
  // so that what is tested is knetcnn's own allocator calls.
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);
  const ExecOptions o;
  const std::string key = c.plant(o);
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output)), captured(256);
  std::thread([&] {
    DeviceArray<float> warm(count(c.g.output));
    conv4_exec(c.g, DType::Float32, w.t(), x.t(), warm.t(), 1, 0, ExecTarget{}, o);
    cudaDeviceSynchronize();
  }).join();
  cudaStream_t capturing = nullptr, eager_stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&capturing, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&eager_stream, cudaStreamNonBlocking));
  std::atomic<int> phase{0};
  std::string failure;
  std::thread eager([&] {
    while (phase.load() < 1) std::this_thread::yield();
    try {
      for (int i = 0; i < 3; ++i) conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{0, eager_stream}, o);
      (void)workspace_stats();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    phase = 2;
  });
  CUDA_OK(cudaStreamBeginCapture(capturing, cudaStreamCaptureModeGlobal));
  CUDA_OK(cudaMemsetAsync(reinterpret_cast<void*>(captured.t().data), 0, 256 * sizeof(float), capturing));
  phase = 1;
  while (phase.load() < 2) std::this_thread::yield();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(capturing, &graph);
  eager.join();
  EXPECT_EQ(ended, cudaSuccess) << "an eager call on another thread invalidated the global-mode capture: "
                                << cudaGetErrorName(ended);
  cudaGetLastError();
  EXPECT_EQ(failure, "");
  if (graph) cudaGraphDestroy(graph);
  CUDA_OK(cudaStreamSynchronize(eager_stream));
  expect_close(y.get(), c.want, 2e-4, "conv4 run eagerly during another thread's capture");
  EXPECT_EQ(stream_pool_stats().pending_frees, 0u) << "a workspace free was refused";
  CUDA_OK(cudaStreamDestroy(capturing));
  CUDA_OK(cudaStreamDestroy(eager_stream));
}

TEST(GpuCapture, AHandleCreatedDuringAGlobalCaptureElsewhereLeavesItValid) {
  REQUIRE_GPU();
  // handle_pool.hpp: outside capture cudnnCreate runs in relaxed mode, so that another thread's
  // global-mode capture neither refuses it nor is invalidated. With no pooled handle, a fresh
  // thread's first call has to create one while the capture is open.
  const GemmCase c;
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output)), captured(256);
  const std::vector<cudnnHandle_t> pooled = test_hooks::take_pooled_handles(0);
  cudaStream_t capturing = nullptr, eager_stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&capturing, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&eager_stream, cudaStreamNonBlocking));
  std::atomic<int> phase{0};
  std::string failure;
  std::thread eager([&] {
    while (phase.load() < 1) std::this_thread::yield();
    try {
      conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{0, eager_stream}, ExecOptions{});
    } catch (const std::exception& e) {
      failure = e.what();
    }
    phase = 2;
  });
  CUDA_OK(cudaStreamBeginCapture(capturing, cudaStreamCaptureModeGlobal));
  CUDA_OK(cudaMemsetAsync(reinterpret_cast<void*>(captured.t().data), 0, 256 * sizeof(float), capturing));
  phase = 1;
  while (phase.load() < 2) std::this_thread::yield();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(capturing, &graph);
  eager.join();
  test_hooks::restore_pooled_handles(0, pooled);
  EXPECT_EQ(ended, cudaSuccess) << cudaGetErrorName(ended);
  cudaGetLastError();
  EXPECT_EQ(failure, "");
  if (graph) cudaGraphDestroy(graph);
  CUDA_OK(cudaStreamSynchronize(eager_stream));
  expect_close(y.get(), c.want, 2e-4, "conv4 on a thread whose handle was made during a capture elsewhere");
  CUDA_OK(cudaStreamDestroy(capturing));
  CUDA_OK(cudaStreamDestroy(eager_stream));
}

TEST(GpuCapture, TheLegacyStreamIsRefusedWhileABlockingStreamCaptures) {
  REQUIRE_GPU();
  // Review #2: cudaStreamIsCapturing(legacy) gives cudaErrorStreamCaptureImplicit while a blocking
  // stream captures; using the legacy stream would join and invalidate that capture.
  const PoolGeometry g = pool_geometry("pool", {1, 2, 4, 4}, pool_opts({2, 2}, {0, 0}, {2, 2}, 1));
  DeviceArray<float> x(cast<float>(random_values(count(g.input), 211))), y(count(g.output)), captured(256);
  pool_exec(g, DType::Float32, x.t(), y.t(), 1, 0, ExecTarget{}, ExecOptions{});  // eager: a handle
  {
    DeviceGuard guard(0);  // knetcnn holds memory on device 0, so clear_cache has something to check
    DeviceScratch scratch(4096, 0, nullptr, CaptureState::None, "test");
  }
  CUDA_OK(cudaDeviceSynchronize());
  cudaStream_t blocking = nullptr;
  CUDA_OK(cudaStreamCreate(&blocking));  // synchronizes with the legacy stream
  CUDA_OK(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeThreadLocal));
  CUDA_OK(cudaMemsetAsync(reinterpret_cast<void*>(captured.t().data), 0, 256 * sizeof(float), blocking));
  std::string call, clear;
  std::thread([&] {
    try {
      pool_exec(g, DType::Float32, x.t(), y.t(), 1, 0, ExecTarget{0, nullptr}, ExecOptions{});
      call = "ran";
    } catch (const CudaError& e) {
      call = e.code_name();
    }
    try {
      release_workspaces();
      clear = "released";
    } catch (const CudaError& e) {
      clear = e.code_name();
    }
  }).join();
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaSuccess) << "the blocking stream's capture was invalidated";
  cudaGetLastError();
  EXPECT_EQ(call, "cudaErrorStreamCaptureImplicit");
  EXPECT_EQ(clear, "cudaErrorStreamCaptureImplicit");
  if (graph) cudaGraphDestroy(graph);
  CUDA_OK(cudaStreamDestroy(blocking));
  pool_exec(g, DType::Float32, x.t(), y.t(), 1, 0, ExecTarget{}, ExecOptions{});  // usable again
  CUDA_OK(cudaDeviceSynchronize());
}

TEST(GpuCapture, AnInvalidatedCaptureStopsTheCallAndKeepsTheCache) {
  REQUIRE_GPU();
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);
  const ExecOptions o;
  const std::string key = c.plant(o);
  const std::vector<AlgoCandidate> planted = *algo_cache().peek(key);
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output));
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  // Synchronizing a capturing stream is illegal and invalidates its capture.
  EXPECT_NE(cudaStreamSynchronize(stream), cudaSuccess);
  cudaGetLastError();
  if (stream_capture_state(stream) != CaptureState::Invalidated) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream, &graph);
    cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    GTEST_SKIP() << "this driver did not invalidate the capture";
  }
  try {
    conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{0, stream}, o);
    ADD_FAILURE() << "a call ran on an invalidated capture";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code_name(), "cudaErrorStreamCaptureInvalidated") << e.what();
    EXPECT_NE(std::string(e.what()).find("cudaStreamEndCapture"), std::string::npos) << e.what();
  }
  ASSERT_TRUE(algo_cache().peek(key).has_value()) << "the invalidated capture erased a good entry";
  EXPECT_EQ(*algo_cache().peek(key), planted);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  if (graph) cudaGraphDestroy(graph);
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST(GpuPolicy, ABenchmarkShortOfMemoryRunsTheHeuristicChoiceAndBenchmarksLater) {
  REQUIRE_GPU();
  // Review #7: where the benchmark's workspace cannot be allocated (injected here) the call takes
  // cuDNN's heuristic ranking, cached as provisional (used, not saved); a later call with the
  // memory free benchmarks and replaces it.
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);  // so the benchmark wants a workspace
  const ExecOptions bench = policy(AlgoPolicy::Benchmark, kDefaultWorkspaceCap + 1);  // a key of its own
  const std::string key = conv_key("conv4", c.g, DType::Float32, bench);
  algo_cache().erase(key);
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x)), y(count(c.g.output));
  test_hooks::inject_allocation_failures(1);  // the first allocation: the benchmark's workspace
  conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, bench);
  test_hooks::inject_allocation_failures(0);
  expect_close(y.get(), c.want, 2e-4, "conv4 with a benchmark short of memory");
  ASSERT_TRUE(algo_cache().peek(key).has_value());
  ASSERT_TRUE(algo_cache().provisional(key).has_value());
  EXPECT_GT(*algo_cache().provisional(key), 0u);
  const std::string path = ::testing::TempDir() + "knetcnn_provisional_" + std::to_string(::getpid());
  algo_cache().save(path, cudnnGetVersion(), cuda_device_signature);
  std::ifstream saved(path);
  std::stringstream text;
  text << saved.rdbuf();
  EXPECT_EQ(text.str().find(key), std::string::npos) << "a provisional entry was saved";
  std::remove(path.c_str());
  // Memory is there now: this call benchmarks and the entry becomes an ordinary one.
  CUDA_OK(cudaMemset(reinterpret_cast<void*>(y.t().data), 0, count(c.g.output) * sizeof(float)));
  conv4_exec(c.g, DType::Float32, w.t(), x.t(), y.t(), 1, 0, ExecTarget{}, bench);
  expect_close(y.get(), c.want, 2e-4, "conv4 benchmarked after memory came back");
  ASSERT_TRUE(algo_cache().peek(key).has_value());
  EXPECT_FALSE(algo_cache().provisional(key).has_value());
  algo_cache().erase(key);
}

TEST(GpuWorkspace, ARefusedFreeIsCountedAndRetriedOnItsOwnStream) {
  REQUIRE_GPU();
  if (!memory_pools_supported(0)) GTEST_SKIP() << "device 0 has no memory pools";
  // Review #1: a free the runtime refuses is no longer swallowed: counted, and retried at the next
  // allocation on the same stream (stream order makes that safe).
  cudaStream_t stream = nullptr, other = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  {
    DeviceGuard guard(0);
    const PoolStats before = stream_pool_stats();
    {
      DeviceScratch scratch(1 << 20, 0, stream, CaptureState::None, "test");
      test_hooks::inject_free_failures(1);
    }
    EXPECT_EQ(stream_pool_stats().failed_frees, before.failed_frees + 1);
    EXPECT_EQ(stream_pool_stats().pending_frees, before.pending_frees + 1);
    { DeviceScratch elsewhere(4096, 0, other, CaptureState::None, "test"); }
    EXPECT_EQ(stream_pool_stats().pending_frees, before.pending_frees + 1) << "retried on another stream";
    { DeviceScratch again(4096, 0, stream, CaptureState::None, "test"); }
    EXPECT_EQ(stream_pool_stats().pending_frees, before.pending_frees);
  }
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaStreamDestroy(stream));
  CUDA_OK(cudaStreamDestroy(other));
}

TEST(GpuWorkspace, WithoutMemoryPoolsManyStreamsShareIdleBuffersWithoutDeviceSyncs) {
  REQUIRE_GPU();
  // Review #11 and #4: devices without memory pools (simulated: test_hooks) used to keep one
  // buffer per stream for 8 streams and evict with a device synchronization. Now idle buffers
  // are recycled on events; with more streams than kMaxIdleBuffers every result must still be
  // right, the idle set stays bounded, and clearing frees it.
  const GemmCase c;
  REQUIRE_WORKSPACE_ALGORITHM(c);
  struct PoolsOff {
    PoolsOff() { test_hooks::set_memory_pools_disabled(true); }
    ~PoolsOff() {
      cudaDeviceSynchronize();
      try {
        release_workspaces();
      } catch (...) {
      }
      test_hooks::set_memory_pools_disabled(false);
    }
  } off;
  const ExecOptions o;
  c.plant(o);
  DeviceArray<float> w(cast<float>(c.w)), x(cast<float>(c.x));
  const int n = static_cast<int>(kMaxIdleBuffers) + 4;
  std::vector<cudaStream_t> streams(n);
  std::vector<std::unique_ptr<DeviceArray<float>>> ys;
  for (int i = 0; i < n; ++i) {
    CUDA_OK(cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking));
    ys.push_back(std::make_unique<DeviceArray<float>>(count(c.g.output)));
  }
  test_hooks::reset_thread_record();
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < n; ++i)
      conv4_exec(c.g, DType::Float32, w.t(), x.t(), ys[i]->t(), 1, 0, ExecTarget{0, streams[i]}, o);
  EXPECT_GT(test_hooks::thread_record().largest_workspace, 0u);
  for (int i = 0; i < n; ++i) {
    CUDA_OK(cudaStreamSynchronize(streams[i]));
    expect_close(ys[i]->get(), c.want, 2e-4, "conv4 on stream " + std::to_string(i) + " without memory pools");
  }
  // One more call gives back a buffer and trims the idle set to its bound (all uses are done).
  conv4_exec(c.g, DType::Float32, w.t(), x.t(), ys[0]->t(), 1, 0, ExecTarget{0, streams[0]}, o);
  CUDA_OK(cudaStreamSynchronize(streams[0]));
  EXPECT_LE(stream_pool_stats().idle_buffers, kMaxIdleBuffers);
  // During capture such a device cannot allocate: refused, the capture intact.
  CUDA_OK(cudaStreamBeginCapture(streams[1], cudaStreamCaptureModeThreadLocal));
  try {
    conv4_exec(c.g, DType::Float32, w.t(), x.t(), ys[1]->t(), 1, 0, ExecTarget{0, streams[1]}, o);
    ADD_FAILURE() << "a workspace was allocated during capture without memory pools";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.code_name(), "cudaErrorStreamCaptureUnsupported") << e.what();
  }
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(streams[1], &graph), cudaSuccess);
  if (graph) cudaGraphDestroy(graph);
  release_workspaces();
  EXPECT_EQ(stream_pool_stats().idle_bytes, 0u);
  for (cudaStream_t s : streams) CUDA_OK(cudaStreamDestroy(s));
}

TEST(GpuPool, BetaAndStridedResultsForPoolUnpoolAndUnpoolx) {
  REQUIRE_GPU();
  // Results into strided views (innermost stride 2, padded batch stride) with beta != 0, and
  // nothing written outside the views. unpool's result is a view into a buffer far larger than its
  // elements: review #9, nothing may be sized by that span.
  const double alpha = 1.5, beta = -0.5;
  for (int mode : {1, 2}) {
    const PoolOptions o = pool_opts({2, 2}, {0, 1}, {2, 2}, mode);
    const PoolGeometry g = pool_geometry("pool", {2, 3, 6, 5}, o);
    const std::string name = "mode " + std::to_string(mode);
    std::vector<double> unused;
    {  // pool: x strided (row pitch 8), y strided (innermost 2, batch stride 1000)
      const std::vector<double> x = random_values(count(g.input), 221), start = random_values(count(g.output), 222);
      std::vector<double> want(count(g.output), 0.0);
      reference_pool(false, g.input, g.output, g, mode, x, want, unused, unused, alpha);
      const Shape& ys = g.output;
      StridedArray<float> dx(g.input, {3 * 6 * 8, 6 * 8, 8, 1}, x),
          dy(ys, {1000, ys[2] * ys[3] * 2, ys[3] * 2, 2}, start);
      pool_exec(g, DType::Float32, dx.t(), dy.t(), alpha, beta, ExecTarget{}, ExecOptions{});
      expect_close(dy.values(), plus_scaled(want, start, beta), 2e-4, "pool beta strided " + name);
      EXPECT_EQ(dy.stray_writes(), 0) << name;
    }
    const PoolGeometry u = unpool_geometry("unpool", {2, 3, 3, 3}, o);
    const double cells = unpool_scale(u, 1.0);
    {  // unpool: result a view with batch stride 1 << 16 (the buffer is ~256 KiB, the result ~1 KiB)
      const std::vector<double> x = random_values(count(u.output), 223), start = random_values(count(u.input), 224);
      std::vector<double> want(count(u.input), 0.0);
      reference_pool(true, u.input, u.output, u, u.cudnn_mode, unused, unused, want, x, cells / alpha);
      const Shape& r = u.input;
      StridedArray<float> dx(u.output, {}, x);
      StridedArray<float> dy(r, {int64_t{1} << 16, r[2] * r[3], r[3], 1}, start);
      test_hooks::reset_thread_record();
      unpool_exec(u, DType::Float32, dx.t(), dy.t(), alpha, beta, ExecTarget{}, ExecOptions{});
      expect_close(dy.values(), plus_scaled(want, start, beta), 2e-4, "unpool beta strided " + name);
      EXPECT_EQ(dy.stray_writes(), 0) << name;
      EXPECT_LE(test_hooks::thread_record().largest_scratch, count(r) * sizeof(float))
          << "a temporary sized by the view's span (" << dy.span_bytes() << " bytes)";
    }
    {  // unpoolx: dy strided (innermost 2), dx strided (row pitch) with beta
      const std::vector<double> dy = random_values(count(u.input), 225), start = random_values(count(u.output), 226);
      std::vector<double> want(count(u.output), 0.0);
      reference_pool(false, u.input, u.output, u, u.cudnn_mode, dy, want, unused, unused, cells / alpha);
      const Shape& i = u.input;
      const Shape& s = u.output;
      StridedArray<float> ddy(i, {i[1] * i[2] * i[3] * 2, i[2] * i[3] * 2, i[3] * 2, 2}, dy),
          ddx(s, {s[1] * s[2] * 5, s[2] * 5, 5, 1}, start);
      unpoolx_exec(u, DType::Float32, ddy.t(), ddx.t(), alpha, beta, ExecTarget{}, ExecOptions{});
      expect_close(ddx.values(), plus_scaled(want, start, beta), 2e-4, "unpoolx beta strided " + name);
      EXPECT_EQ(ddx.stray_writes(), 0) << name;
    }
  }
  {  // poolx (max, alpha != 1: y recomputed) with beta and a strided dx
    const PoolGeometry g = pool_geometry("pool", {1, 2, 4, 6}, pool_opts({2, 2}, {0, 0}, {2, 2}, 0));
    std::vector<double> x = random_values(count(g.input), 227), dy = random_values(count(g.output), 228),
                        start = random_values(count(g.input), 229);
    std::vector<double> y(count(g.output), 0.0), want(count(g.input), 0.0), unused;
    reference_pool(false, g.input, g.output, g, 0, x, y, unused, unused, alpha);
    reference_pool(true, g.input, g.output, g, 0, x, y, want, dy, alpha);
    DeviceArray<float> dx_(cast<float>(x)), dy_(cast<float>(y)), ddy(cast<float>(dy));
    StridedArray<float> out(g.input, {2 * 4 * 9, 4 * 9, 9, 1}, start);
    poolx_exec(g, DType::Float32, dx_.t(), dy_.t(), ddy.t(), out.t(), alpha, beta, ExecTarget{}, ExecOptions{});
    expect_close(out.values(), plus_scaled(want, start, beta), 2e-4, "poolx beta strided");
    EXPECT_EQ(out.stray_writes(), 0);
  }
}

TEST(GpuConv, OutputPaddingBeyondStrideWithAStridedInput) {
  REQUIRE_GPU();
  // pad_to copies a strided x into the zero-padded temporary (deconv4 and deconv4w).
  const ConvCase c = deconv_cases()[1];
  const ConvGeometry g = deconv4_geometry("deconv4", c.w, c.x, c.o);
  ASSERT_NE(cudnn_conv_forward_shape(g), g.output) << "the case must go through the padded temporary";
  const std::vector<double> w = random_values(count(g.filter), 231), x = random_values(count(g.output), 232),
                            dy = random_values(count(g.input), 233);
  const Shape& xs = g.output;
  const Shape pitched{xs[1] * xs[2] * (xs[3] + 3), xs[2] * (xs[3] + 3), xs[3] + 3, 1};
  DeviceArray<float> dw(cast<float>(w)), ddy(cast<float>(dy));
  StridedArray<float> dx(xs, pitched, x);
  {
    std::vector<double> want(count(g.input), 0.0), xx = x, ww = w;
    reference_conv(RefDir::BackwardData, g.input, g.filter, g.output, g, want, ww, xx, 1.0);
    DeviceArray<float> y(count(g.input));
    deconv4_exec(g, DType::Float32, dw.t(), dx.t(), y.t(), 1, 0, ExecTarget{}, ExecOptions{});
    expect_close(y.get(), want, 2e-4, "deconv4 with a strided x and output_padding >= stride");
  }
  {
    std::vector<double> want(count(g.filter), 0.0), xx = x, dd = dy;
    reference_conv(RefDir::BackwardFilter, g.input, g.filter, g.output, g, dd, want, xx, 1.0);
    DeviceArray<float> out(count(g.filter));
    deconv4w_exec(g, DType::Float32, dx.t(), ddy.t(), out.t(), 1, 0, ExecTarget{}, ExecOptions{});
    expect_close(out.get(), want, 2e-4, "deconv4w with a strided x and output_padding >= stride");
  }
}

TEST(GpuHalf, Bfloat16AndFloat16GoThroughTransformTensorWithStridesAndBeta) {
  REQUIRE_GPU();
  // Pooling packs an innermost-strided input and writes a strided result through a temporary:
  // both are cudnnTransformTensor, here in bfloat16 and float16 (with beta on the way out).
  const PoolGeometry g = pool_geometry("pool", {2, 3, 6, 6}, pool_opts({2, 2}, {0, 0}, {2, 2}, 2));
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    auto encode = [&](double v) { return dtype == DType::Float16 ? to_half(static_cast<float>(v)) : to_bf16(static_cast<float>(v)); };
    auto decode = [&](uint16_t h) { return dtype == DType::Float16 ? from_half(h) : from_bf16(h); };
    std::vector<double> x = random_values(count(g.input), 241), start = random_values(count(g.output), 242);
    for (double& v : x) v = decode(encode(v));
    for (double& v : start) v = decode(encode(v));
    std::vector<double> want(count(g.output), 0.0), unused;
    reference_pool(false, g.input, g.output, g, 2, x, want, unused, unused, 1.0);
    want = plus_scaled(want, start, 0.5);
    const std::vector<int64_t> xo = offsets(g.input, {216, 72, 12, 2}), yo = offsets(g.output, {54, 18, 6, 2});
    std::vector<uint16_t> hx(2 * 216, encode(0)), hy(2 * 54, encode(0));
    for (std::size_t i = 0; i < xo.size(); ++i) hx[xo[i]] = encode(x[i]);
    for (std::size_t i = 0; i < yo.size(); ++i) hy[yo[i]] = encode(start[i]);
    DeviceArray<uint16_t> dx(hx), dy(hy);
    pool_exec(g, dtype, dx.t({216, 72, 12, 2}), dy.t({54, 18, 6, 2}), 1, 0.5, ExecTarget{}, ExecOptions{});
    const std::vector<uint16_t> got = dy.get();
    std::vector<float> picked;
    for (int64_t i : yo) picked.push_back(decode(got[i]));
    expect_close(picked, want, dtype == DType::Float16 ? 5e-3 : 3e-2, std::string("strided pool beta ") + dtype_name(dtype));
    for (std::size_t i = 1; i < got.size(); i += 2) EXPECT_EQ(got[i], encode(0)) << "a write between the elements";
  }
}

TEST(GpuDevices, AGuardLeavesTheThreadOnItsDeviceWhenTheCallersContextIsInactive) {
  REQUIRE_GPU();
  // DeviceGuard::restores() == 0: the caller's device has no active primary context. A primary
  // context belongs to the process, not a thread, so a fresh thread of a process that used
  // device 0 still sees it active, and on one GPU the guard never switches: this needs two GPUs
  // and a fresh process (gtest's threadsafe death-test style re-runs this test in one).
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs (see the comment)";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        int code = 0;
        if (primary_context_active(0) != 0) code = 2;  // the child has touched no device
        {
          DeviceGuard guard(1);
          if (guard.restores() != 0) code = 3;
        }
        int current = -1;
        cudaGetDevice(&current);
        if (current != 1) code = 4;
        if (primary_context_active(0) != 0) code = 5;  // restoring would have created it
        std::exit(code);
      },
      ::testing::ExitedWithCode(0), "");
}
