// Winograd F(2x2, 3x3) transforms (see cpu_winograd.hpp). Each task is one (item, channel) plane;
// within it, one row of tiles at a time: the rows a tile row reads are first copied into
// zero-padded row buffers, so that every loop below runs over whole rows without bounds tests and
// GCC vectorizes it (the column steps read the buffers at stride 2).
#include "cpu_winograd.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_parallel.hpp"

namespace knetcnn::cpu {
namespace {

// cells [0, n) of `out` = row[first + k] where that is inside [0, width), else zero.
template <typename T>
void padded_row(const T* row, int64_t width, int64_t first, int64_t n, T* out) {
  const int64_t lo = std::clamp<int64_t>(-first, 0, n), hi = std::clamp<int64_t>(width - first, lo, n);
  std::fill(out, out + lo, T(0));
  if (hi > lo) std::memcpy(out + lo, row + first + lo, (hi - lo) * sizeof(T));
  std::fill(out + hi, out + n, T(0));
}

// Runs plane(n, c, scratch) for every (item, channel), on parallel_for's threads if `parallel`;
// scratch holds `scratch_size` elements, one buffer per range of planes.
template <typename T, typename Plane>
void by_planes(const WinogradTiles& t, int64_t scratch_size, bool parallel, const Plane& plane) {
  const auto planes = [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(scratch_size);
    for (int64_t task = begin; task < end; ++task) plane(task / t.channels, task % t.channels, scratch.data());
  };
  if (parallel)
    parallel_for(t.items * t.channels, std::max<int64_t>(1, t.height * t.width) * 4, planes);
  else
    planes(0, t.items * t.channels);
}

}  // namespace

template <typename T>
void winograd_input(const T* x, const WinogradTiles& t, T* v, bool parallel) {
  const int64_t tiles = t.items * t.tiles_h * t.tiles_w, point_step = t.channels * tiles;
  const int64_t len = 2 * t.tiles_w + 2;  // the columns a row of tiles reads
  by_planes<T>(t, 8 * len, parallel, [&](int64_t n, int64_t c, T* buf) {
    const T* plane = x + (n * t.channels + c) * t.height * t.width;
    T* p[4] = {buf, buf + len, buf + 2 * len, buf + 3 * len};  // the tile row's 4 input rows
    T* r[4] = {buf + 4 * len, buf + 5 * len, buf + 6 * len, buf + 7 * len};  // B^T applied to them
    for (int64_t i = 0; i < t.tiles_h; ++i) {
      for (int k = 0; k < 4; ++k) {
        const int64_t row = 2 * i - t.top + k;
        if (row >= 0 && row < t.height)
          padded_row(plane + row * t.width, t.width, -t.left, len, p[k]);
        else
          std::fill(p[k], p[k] + len, T(0));
      }
      for (int64_t q = 0; q < len; ++q) {
        r[0][q] = p[0][q] - p[2][q];
        r[1][q] = p[1][q] + p[2][q];
        r[2][q] = p[2][q] - p[1][q];
        r[3][q] = p[1][q] - p[3][q];
      }
      T* out = v + c * tiles + (n * t.tiles_h + i) * t.tiles_w;
      for (int k = 0; k < 4; ++k) {  // ... and B on the right: row k of the result, points 4k..4k+3
        const T* s = r[k];
        T *o0 = out + (4 * k) * point_step, *o1 = o0 + point_step, *o2 = o1 + point_step, *o3 = o2 + point_step;
        for (int64_t j = 0; j < t.tiles_w; ++j) {
          const T a = s[2 * j], b = s[2 * j + 1], cc = s[2 * j + 2], d = s[2 * j + 3];
          o0[j] = a - cc;
          o1[j] = b + cc;
          o2[j] = cc - b;
          o3[j] = b - d;
        }
      }
    }
  });
}

template <typename T>
void winograd_output(const T* m_points, const WinogradTiles& t, T* y, bool parallel) {
  const int64_t tiles = t.items * t.tiles_h * t.tiles_w, point_step = t.channels * tiles;
  const int64_t tw = t.tiles_w, len = 2 * tw;
  by_planes<T>(t, 8 * tw + 2 * len, parallel, [&](int64_t n, int64_t c, T* buf) {
    T* plane = y + (n * t.channels + c) * t.height * t.width;
    T* __restrict s0[4] = {buf, buf + tw, buf + 2 * tw, buf + 3 * tw};  // A^T's rows applied to m's
    T* __restrict s1[4] = {buf + 4 * tw, buf + 5 * tw, buf + 6 * tw, buf + 7 * tw};
    T* __restrict top = buf + 8 * tw;  // the tile row's two output rows, whole tiles
    T* __restrict bottom = top + len;
    for (int64_t i = 0; i < t.tiles_h; ++i) {
      const T* m = m_points + c * tiles + (n * t.tiles_h + i) * tw;
      for (int k = 0; k < 4; ++k) {  // A^T on the left: s0 = m0 + m1 + m2, s1 = m1 - m2 - m3 (rows of m)
        const T* __restrict m0 = m + k * point_step;
        const T* __restrict m1 = m0 + 4 * point_step;
        const T* __restrict m2 = m1 + 4 * point_step;
        const T* __restrict m3 = m2 + 4 * point_step;
        T* __restrict a = s0[k];
        T* __restrict b = s1[k];
        for (int64_t j = 0; j < tw; ++j) {
          a[j] = m0[j] + m1[j] + m2[j];
          b[j] = m1[j] - m2[j] - m3[j];
        }
      }
      for (int64_t j = 0; j < tw; ++j) {  // ... and A on the right, the same on columns
        top[2 * j] = s0[0][j] + s0[1][j] + s0[2][j];
        top[2 * j + 1] = s0[1][j] - s0[2][j] - s0[3][j];
        bottom[2 * j] = s1[0][j] + s1[1][j] + s1[2][j];
        bottom[2 * j + 1] = s1[1][j] - s1[2][j] - s1[3][j];
      }
      std::memcpy(plane + 2 * i * t.width, top, t.width * sizeof(T));
      if (2 * i + 1 < t.height) std::memcpy(plane + (2 * i + 1) * t.width, bottom, t.width * sizeof(T));
    }
  });
}

template <typename T>
void winograd_gradient(const T* dy, const WinogradTiles& t, T* g, bool parallel) {
  const int64_t tiles = t.items * t.tiles_h * t.tiles_w, point_step = t.channels * tiles;
  const int64_t len = 2 * t.tiles_w;
  by_planes<T>(t, 6 * len, parallel, [&](int64_t n, int64_t c, T* buf) {
    const T* plane = dy + (n * t.channels + c) * t.height * t.width;
    T* e[2] = {buf, buf + len};  // the tile row's 2 rows of dy
    T* r[4] = {buf + 2 * len, buf + 3 * len, buf + 4 * len, buf + 5 * len};
    for (int64_t i = 0; i < t.tiles_h; ++i) {
      for (int k = 0; k < 2; ++k) {
        const int64_t row = 2 * i + k;
        if (row < t.height)
          padded_row(plane + row * t.width, t.width, 0, len, e[k]);
        else
          std::fill(e[k], e[k] + len, T(0));
      }
      // A on the left: rows e0, e0 + e1, e0 - e1, -e1 ...
      for (int64_t q = 0; q < len; ++q) {
        const T a0 = e[0][q], a1 = e[1][q];
        r[0][q] = a0;
        r[1][q] = a0 + a1;
        r[2][q] = a0 - a1;
        r[3][q] = -a1;
      }
      T* out = g + c * tiles + (n * t.tiles_h + i) * t.tiles_w;
      for (int k = 0; k < 4; ++k) {  // ... and A^T on the right: row k of the result, points 4k..4k+3
        const T* s = r[k];
        T *o0 = out + (4 * k) * point_step, *o1 = o0 + point_step, *o2 = o1 + point_step, *o3 = o2 + point_step;
        for (int64_t j = 0; j < t.tiles_w; ++j) {
          const T a = s[2 * j], b = s[2 * j + 1];
          o0[j] = a;
          o1[j] = a + b;
          o2[j] = a - b;
          o3[j] = -b;
        }
      }
    }
  });
}

template void winograd_input<float>(const float*, const WinogradTiles&, float*, bool);
template void winograd_input<double>(const double*, const WinogradTiles&, double*, bool);
template void winograd_output<float>(const float*, const WinogradTiles&, float*, bool);
template void winograd_output<double>(const double*, const WinogradTiles&, double*, bool);
template void winograd_gradient<float>(const float*, const WinogradTiles&, float*, bool);
template void winograd_gradient<double>(const double*, const WinogradTiles&, double*, bool);

}  // namespace knetcnn::cpu
