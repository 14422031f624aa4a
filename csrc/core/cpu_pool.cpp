#include "cpu_pool.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_parallel.hpp"
#include "cpu_pool_rows.hpp"

namespace knetcnn::cpu {
namespace {

// One spatial axis, lifted: the in-bounds input range [begin, end) of every output index.
struct Axis {
  int64_t in = 1, out = 1, window = 1;
  std::vector<int64_t> begin, end;
};

// The geometry with its spatial axes lifted to three (leading axes of size 1), and the (batch,
// channel) planes the kernels run over independently.
struct Lifted {
  int64_t planes = 0;
  Axis axis[3];
  int64_t in_plane = 1, out_plane = 1, window_cells = 1;
};

Lifted lift(const PoolGeometry& g, int64_t planes) {
  Lifted l;
  l.planes = planes;
  const int lead = 3 - g.spatial_dims;
  for (int a = 0; a < 3; ++a) {
    Axis& axis = l.axis[a];
    int64_t pad = 0, stride = 1;
    if (a >= lead) {
      const int i = a - lead;
      axis.in = g.input[2 + i];
      axis.out = g.output[2 + i];
      axis.window = g.window[i];
      pad = g.padding[i];
      stride = g.stride[i];
    }
    for (int64_t o = 0; o < axis.out; ++o) {
      const int64_t start = o * stride - pad;
      axis.begin.push_back(std::max<int64_t>(start, 0));
      axis.end.push_back(std::min(start + axis.window, axis.in));
    }
    l.in_plane *= axis.in;
    l.out_plane *= axis.out;
    l.window_cells *= axis.window;
  }
  return l;
}

// A window's in-bounds cells: rows [row0, row1) of the plane seen as (in_z * in_y, in_x) rows,
// stepping `row_step` rows between z slices, and columns [x0, x1).
struct Window {
  int64_t z_count, y0, y_count, x0, x_count;
};

// Visits a window's in-bounds cells in row-major order: g(offset into the plane).
template <typename G>
inline void for_each_cell(const Lifted& l, const Window& w, G&& g) {
  const int64_t in_x = l.axis[2].in, in_y = l.axis[1].in;
  for (int64_t z = 0; z < w.z_count; ++z) {
    for (int64_t y = 0; y < w.y_count; ++y) {
      const int64_t row = (w.y0 + z * in_y + y) * in_x + w.x0;
      for (int64_t x = 0; x < w.x_count; ++x) g(row + x);
    }
  }
}

// The first cell holding a window's largest value, NaN-blind (NaN compares false, so it is
// picked only as the first cell), and whether the window holds NaN. Branch-free: maxima of
// random data are unpredictable.
template <typename T>
struct FastMax {
  T best;
  int64_t at = -1;
  bool nan = false;
  void see(T v, int64_t offset) {
    const bool first = at < 0, greater = v > best;
    best = (first || greater) ? v : best;
    at = (first || greater) ? offset : at;
    nan |= v != v;
  }
};

// The careful scan for the rare windows holding NaN: the first non-NaN maximum and the first NaN.
template <typename T>
struct NanAwareMax {
  T best = 0;
  int64_t at = -1, nan_at = -1;
  void see(T v, int64_t offset) {
    if (std::isnan(v)) {
      if (nan_at < 0) nan_at = offset;
    } else if (at < 0 || v > best) {
      best = v;
      at = offset;
    }
  }
};

// Where a max window's value and gradient come from: the first maximum, or (maxpoolingNanOpt=1)
// the first NaN; -1 for a window of only NaNs with maxpoolingNanOpt=0.
template <typename T>
inline int64_t max_source(const Lifted& l, const T* plane, const Window& w, int nan_opt, T* value) {
  FastMax<T> fast;
  for_each_cell(l, w, [&](int64_t at) { fast.see(plane[at], at); });
  if (!fast.nan) {
    *value = fast.best;
    return fast.at;
  }
  NanAwareMax<T> scan;
  for_each_cell(l, w, [&](int64_t at) { scan.see(plane[at], at); });
  const int64_t from = (nan_opt == 1) ? scan.nan_at : scan.at;
  if (from >= 0) *value = plane[from];
  return from;
}

bool is_max_mode(int mode) { return mode == 0 || mode == 3; }

// Average divisor: prod(window) with padding counted (mode 1), else the in-bounds cells.
template <typename T>
inline T divisor(const Lifted& l, const Window& w, int mode) {
  return static_cast<T>(mode == 1 ? l.window_cells : w.z_count * w.y_count * w.x_count);
}

// One output row of windows (fixed output z and y): the in-bounds input rows they cover, in
// row-major order, and the output columns [lo, hi) whose windows lie inside x along x, where
// each window's cells are `window_x` consecutive-by-stride columns (the fast loops below; the
// windows outside [lo, hi) touch padding and take the per-window path).
struct RowOfWindows {
  std::vector<int64_t> rows;  // offsets of input rows within the plane
  int64_t oz = 0, oy = 0, lo = 0, hi = 0;
};

struct XAxis {
  int64_t stride, pad, window, out, lo, hi;
};

XAxis x_axis(const PoolGeometry& g, const Lifted& l) {
  const Axis& ax = l.axis[2];
  const int last = g.spatial_dims - 1;
  XAxis a{g.stride[last], g.padding[last], ax.window, ax.out, 0, 0};
  a.lo = std::min((a.pad + a.stride - 1) / a.stride, a.out);  // first window starting at or after 0
  const int64_t last_inside = ax.in - a.window + a.pad;  // start + pad of the last window ending inside
  a.hi = last_inside < 0 ? a.lo : std::clamp(last_inside / a.stride + 1, a.lo, a.out);
  return a;
}

// Calls f(row, first_window_index) for every output row of windows of a plane.
template <typename F>
inline void for_each_window_row(const Lifted& l, const XAxis& xa, RowOfWindows& r, F&& f) {
  const Axis &az = l.axis[0], &ay = l.axis[1], &ax = l.axis[2];
  for (r.oz = 0; r.oz < az.out; ++r.oz) {
    for (r.oy = 0; r.oy < ay.out; ++r.oy) {
      r.rows.clear();
      for (int64_t z = az.begin[r.oz]; z < az.end[r.oz]; ++z)
        for (int64_t y = ay.begin[r.oy]; y < ay.end[r.oy]; ++y) r.rows.push_back((z * ay.in + y) * ax.in);
      r.lo = xa.lo;
      r.hi = xa.hi;
      f(r, (r.oz * ay.out + r.oy) * ax.out);
    }
  }
}

// The per-window path for output column ox of a row (windows touching padding along x).
inline Window window_at(const Lifted& l, const RowOfWindows& r, int64_t ox) {
  const Axis &az = l.axis[0], &ay = l.axis[1], &ax = l.axis[2];
  return Window{az.end[r.oz] - az.begin[r.oz], az.begin[r.oz] * ay.in + ay.begin[r.oy], ay.end[r.oy] - ay.begin[r.oy],
                ax.begin[ox], ax.end[ox] - ax.begin[ox]};
}

// Offset in the plane of cell (row k, column j) of window `lo`, the first interior window of r;
// window lo + i has it at + i * stride.
inline int64_t interior_cell(const XAxis& xa, const RowOfWindows& r, size_t k, int64_t j) {
  return r.rows[k] + r.lo * xa.stride + j - xa.pad;
}

// Per-thread scratch for one row of windows.
template <typename T>
struct RowScratch {
  std::vector<T> best, share;
  std::vector<rows::Mask<T>> nan, done;
  explicit RowScratch(int64_t n) : best(n), share(n), nan(n), done(n) {}
};

// best[lo + i] = the NaN-blind first maximum of interior window lo + i of row r, nan[lo + i]
// whether it holds NaN.
template <typename T>
inline void interior_max(const XAxis& xa, const RowOfWindows& r, const T* plane, RowScratch<T>& s) {
  T* best = s.best.data() + r.lo;
  rows::Mask<T>* nan = s.nan.data() + r.lo;
  const int64_t n = r.hi - r.lo;
  for (size_t k = 0; k < r.rows.size(); ++k) {
    if (xa.window == 2 && xa.stride == 2) {
      rows::fold_max_pairs(plane + interior_cell(xa, r, k, 0), best, nan, n, k == 0);
      continue;
    }
    for (int64_t j = 0; j < xa.window; ++j)
      rows::fold_max(plane + interior_cell(xa, r, k, j), xa.stride, best, nan, n, k == 0 && j == 0);
  }
}

}  // namespace

template <typename T>
void pool_forward(const PoolGeometry& g, int64_t planes, int mode, const T* x, T* y, T scale, T all_nan_value) {
  const Lifted l = lift(g, planes);
  const XAxis xa = x_axis(g, l);
  const int nan_opt = g.nan_opt;
  const bool is_max = is_max_mode(mode);
  parallel_for(l.planes, l.in_plane + l.out_plane, [&](int64_t begin, int64_t end) {
    RowScratch<T> s(xa.out);
    RowOfWindows r;
    for (int64_t p = begin; p < end; ++p) {
      const T* xp = x + p * l.in_plane;
      T* yp = y + p * l.out_plane;
      for_each_window_row(l, xa, r, [&](const RowOfWindows& r, int64_t first) {
        T* out = yp + first;
        auto one_window = [&](int64_t ox) {  // the general path, window by window
          const Window w = window_at(l, r, ox);
          if (is_max) {
            T value = all_nan_value;
            max_source(l, xp, w, nan_opt, &value);
            out[ox] = value * scale;
          } else {
            T sum = 0;
            for_each_cell(l, w, [&](int64_t at) { sum += xp[at]; });
            out[ox] = (sum / divisor<T>(l, w, mode)) * scale;
          }
        };
        for (int64_t ox = 0; ox < r.lo; ++ox) one_window(ox);
        for (int64_t ox = r.hi; ox < xa.out; ++ox) one_window(ox);
        if (r.lo == r.hi) return;
        if (is_max) {
          interior_max(xa, r, xp, s);
          for (int64_t ox = r.lo; ox < r.hi; ++ox) {
            if (s.nan[ox]) one_window(ox);  // rare: the careful scan
            else out[ox] = s.best[ox] * scale;
          }
          return;
        }
        // Sums in row-major cell order, as the per-window path adds them.
        T* __restrict sum = s.best.data() + r.lo;
        const int64_t n = r.hi - r.lo;
        std::fill(sum, sum + n, T(0));
        for (size_t k = 0; k < r.rows.size(); ++k) {
          for (int64_t j = 0; j < xa.window; ++j) {
            const T* __restrict in = xp + interior_cell(xa, r, k, j);
            for (int64_t i = 0; i < n; ++i) sum[i] += in[i * xa.stride];
          }
        }
        for (int64_t ox = r.lo; ox < r.hi; ++ox) {
          out[ox] = (s.best[ox] / divisor<T>(l, window_at(l, r, ox), mode)) * scale;
        }
      });
    }
  });
}

template <typename T>
void max_pool_backward(const PoolGeometry& g, int64_t planes, const T* x, const T* dy, T* dx, T alpha) {
  const Lifted l = lift(g, planes);
  const XAxis xa = x_axis(g, l);
  const int nan_opt = g.nan_opt;
  parallel_for(l.planes, 2 * l.in_plane + l.out_plane, [&](int64_t begin, int64_t end) {
    RowScratch<T> s(xa.out);
    RowOfWindows r;
    for (int64_t p = begin; p < end; ++p) {
      const T* xp = x + p * l.in_plane;
      T* dxp = dx + p * l.in_plane;
      std::memset(dxp, 0, sizeof(T) * l.in_plane);  // in cache: the adds below hit the same lines
      for_each_window_row(l, xa, r, [&](const RowOfWindows& r, int64_t first) {
        const T* grad = dy + p * l.out_plane + first;
        auto one_window = [&](int64_t ox) {
          T value;
          const int64_t to = max_source(l, xp, window_at(l, r, ox), nan_opt, &value);
          if (to >= 0) dxp[to] += grad[ox] * alpha;
        };
        for (int64_t ox = 0; ox < r.lo; ++ox) one_window(ox);
        for (int64_t ox = r.hi; ox < xa.out; ++ox) one_window(ox);
        if (r.lo == r.hi) return;
        interior_max(xa, r, xp, s);
        // Route: in row-major cell order, a cell equal to its window's maximum takes the share
        // if no earlier cell did. NaN windows are marked done here and routed one by one.
        const int64_t n = r.hi - r.lo;
        const T* best = s.best.data() + r.lo;
        T* share = s.share.data() + r.lo;
        rows::Mask<T>* done = s.done.data() + r.lo;
        for (int64_t i = 0; i < n; ++i) {
          done[i] = s.nan[r.lo + i];
          share[i] = grad[r.lo + i] * alpha;
        }
        for (size_t k = 0; k < r.rows.size(); ++k) {
          const int64_t at = interior_cell(xa, r, k, 0);
          if (xa.window == 2 && xa.stride == 2) {
            rows::route_pairs(xp + at, best, share, done, dxp + at, n);
            continue;
          }
          for (int64_t j = 0; j < xa.window; ++j)
            rows::route(xp + at + j, xa.stride, best, share, done, dxp + at + j, n);
        }
        for (int64_t ox = r.lo; ox < r.hi; ++ox)
          if (s.nan[ox]) one_window(ox);
      });
    }
  });
}

template <typename T>
void average_pool_backward(const PoolGeometry& g, int64_t planes, int mode, const T* dy, T* dx, T scale) {
  const Lifted l = lift(g, planes);
  const XAxis xa = x_axis(g, l);
  parallel_for(l.planes, 2 * l.in_plane + l.out_plane, [&](int64_t begin, int64_t end) {
    RowScratch<T> s(xa.out);
    RowOfWindows r;
    for (int64_t p = begin; p < end; ++p) {
      T* dxp = dx + p * l.in_plane;
      std::memset(dxp, 0, sizeof(T) * l.in_plane);
      for_each_window_row(l, xa, r, [&](const RowOfWindows& r, int64_t first) {
        const T* grad = dy + p * l.out_plane + first;
        for (int64_t ox = 0; ox < xa.out; ++ox)
          s.share[ox] = (grad[ox] * scale) / divisor<T>(l, window_at(l, r, ox), mode);
        auto one_window = [&](int64_t ox) {
          for_each_cell(l, window_at(l, r, ox), [&](int64_t at) { dxp[at] += s.share[ox]; });
        };
        for (int64_t ox = 0; ox < r.lo; ++ox) one_window(ox);
        for (int64_t ox = r.hi; ox < xa.out; ++ox) one_window(ox);
        const T* __restrict share = s.share.data() + r.lo;
        for (size_t k = 0; k < r.rows.size(); ++k) {
          for (int64_t j = 0; j < xa.window; ++j) {
            T* __restrict out = dxp + interior_cell(xa, r, k, j);
            for (int64_t i = 0; i < r.hi - r.lo; ++i) out[i * xa.stride] += share[i];
          }
        }
      });
    }
  });
}

#define KNETCNN_INSTANTIATE(T)                                                                       \
  template void pool_forward<T>(const PoolGeometry&, int64_t, int, const T*, T*, T, T);              \
  template void max_pool_backward<T>(const PoolGeometry&, int64_t, const T*, const T*, T*, T);       \
  template void average_pool_backward<T>(const PoolGeometry&, int64_t, int, const T*, T*, T);
KNETCNN_INSTANTIATE(float)
KNETCNN_INSTANTIATE(double)
#undef KNETCNN_INSTANTIATE

}  // namespace knetcnn::cpu
