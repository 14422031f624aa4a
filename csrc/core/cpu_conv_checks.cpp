// The checks that make the CPU convolution kernels safe to call: column counts and coordinates
// that fit 64 bits, scatter targets whose threads cannot collide (cpu_conv.hpp), the direct
// kernel's sizes (cpu_conv_direct.hpp) and the Winograd transforms' tiles (cpu_winograd.hpp).
#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "cpu_conv.hpp"
#include "cpu_conv_direct.hpp"
#include "cpu_winograd.hpp"
#include "errors.hpp"

namespace knetcnn::cpu {
namespace {

void check(bool ok, const char* function, const std::string& what) {
  if (!ok) throw value_error(std::string(function) + ": " + what);
}

int64_t checked_mul(const char* function, int64_t a, int64_t b) {
  int64_t out;
  check(!__builtin_mul_overflow(a, b, &out), function, "sizes overflow 64-bit integers");
  return out;
}

int64_t checked_add(const char* function, int64_t a, int64_t b) {
  int64_t out;
  check(!__builtin_add_overflow(a, b, &out), function, "coordinates overflow 64-bit integers");
  return out;
}

}  // namespace

int64_t column_elements(const char* function, const ConvWindow& w, int64_t items, int64_t channels) {
  check(items >= 0 && channels >= 0, function, "items and channels must be >= 0");
  int64_t total = checked_mul(function, items, channels);
  for (int a = 0; a < 3; ++a) {
    const std::string axis = " on axis " + std::to_string(a);
    check(w.kernel[a] >= 1 && w.stride[a] >= 1 && w.dilation[a] >= 1, function,
          "kernel, stride and dilation must be >= 1" + axis);
    check(w.padding[a] >= 0, function, "padding must be >= 0" + axis);
    check(w.out_begin[a] >= 0 && w.out_begin[a] <= w.out_end[a], function,
          "the output box must satisfy 0 <= out_begin <= out_end" + axis);
    // The largest |coordinate| the kernels compute: out_end*stride + (kernel-1)*dilation + padding + |origin|.
    check(w.origin[a] > INT64_MIN, function, "origin out of range" + axis);
    int64_t reach = checked_mul(function, w.out_end[a], w.stride[a]);
    reach = checked_add(function, reach, checked_mul(function, w.kernel[a] - 1, w.dilation[a]));
    reach = checked_add(function, reach, w.padding[a]);
    checked_add(function, reach, std::llabs(w.origin[a]));
    total = checked_mul(function, total, w.kernel[a]);
    total = checked_mul(function, total, w.out_end[a] - w.out_begin[a]);
  }
  return total;
}

void check_no_self_overlap(const char* function, const char* argument, const std::array<int64_t, 5>& shape,
                           const std::array<int64_t, 5>& strides) {
  std::vector<std::pair<int64_t, int64_t>> axes;  // (|stride|, size) of the axes that step
  for (size_t a = 0; a < shape.size(); ++a) {
    if (shape[a] == 0) return;  // no elements at all
    if (shape[a] > 1) axes.emplace_back(std::llabs(strides[a]), shape[a]);
  }
  // Sorted by stride, each axis must step past everything the smaller-stride axes span.
  std::sort(axes.begin(), axes.end());
  int64_t span = 1;
  for (const auto& [stride, size] : axes) {
    check(stride >= span, function, std::string(argument) + " must not overlap itself (its strides alias)");
    span = checked_add(function, span, checked_mul(function, size - 1, stride));
  }
}

void check_direct_conv(const char* function, const DirectConv& d) {
  check(d.items >= 0 && d.channels >= 0 && d.height >= 0 && d.width >= 0 && d.outputs >= 0 && d.out_h >= 0 &&
            d.out_w >= 0,
        function, "sizes must be >= 0");
  check(d.kh >= 1 && d.kw >= 1 && d.dil_h >= 1 && d.dil_w >= 1 && d.groups >= 1, function,
        "kernel sizes, dilations and groups must be >= 1");
  check(d.channels % d.groups == 0 && d.outputs % d.groups == 0, function,
        "channels (" + std::to_string(d.channels) + ") and outputs (" + std::to_string(d.outputs) +
            ") must be divisible by groups (" + std::to_string(d.groups) + ")");
  auto product = [&](std::initializer_list<int64_t> factors) {
    int64_t out = 1;
    for (int64_t f : factors) out = checked_mul(function, out, f);
    return out;
  };
  product({d.items, d.channels, d.height, d.width});
  product({d.items, d.outputs, d.out_h, d.out_w});
  product({d.outputs, d.channels, d.kh, d.kw});
  // The rows and columns a task reads, and the largest padded copy (all channels, every row read).
  const int64_t rows = checked_add(function, d.out_h, product({d.kh - 1, d.dil_h}));
  const int64_t cols = checked_add(function, d.out_w, product({d.kw - 1, d.dil_w}));
  product({d.channels, rows, cols});
  // Coordinates (row - pad + tap * dil) stay far from 64-bit overflow.
  constexpr int64_t limit = int64_t(1) << 61;
  check(d.pad_h > -limit && d.pad_h < limit && d.pad_w > -limit && d.pad_w < limit && rows < limit && cols < limit,
        function, "padding or dilation overflows 64-bit coordinates");
}

int64_t winograd_tile_count(const char* function, const WinogradTiles& t, bool covering) {
  check(t.items >= 0 && t.channels >= 0 && t.height >= 0 && t.width >= 0 && t.tiles_h >= 0 && t.tiles_w >= 0,
        function, "sizes must be >= 0");
  check(t.top >= 0 && t.top <= 2 && t.left >= 0 && t.left <= 2, function, "top and left must be in [0, 2]");
  const int64_t tiles = checked_mul(function, checked_mul(function, t.items, t.tiles_h), t.tiles_w);
  checked_mul(function, checked_mul(function, tiles, t.channels), kWinogradPoints);  // the points' matrix
  checked_mul(function, checked_mul(function, checked_mul(function, t.height, t.width), t.channels), t.items);
  if (covering) {
    check(t.tiles_h == (t.height + 1) / 2 && t.tiles_w == (t.width + 1) / 2 && t.top == 0 && t.left == 0, function,
          "the tiles must cover the array exactly: " + std::to_string((t.height + 1) / 2) + " x " +
              std::to_string((t.width + 1) / 2) + " tiles from (0, 0), got " + std::to_string(t.tiles_h) + " x " +
              std::to_string(t.tiles_w) + " from (" + std::to_string(t.top) + ", " + std::to_string(t.left) + ")");
  }
  return tiles;
}

}  // namespace knetcnn::cpu
