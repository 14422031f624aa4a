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

// `stacked` consecutive planes seen as one plane `stacked` times taller along y: valid only where
// stackable() says windows can't straddle planes.
Lifted lift(const PoolGeometry& g, int64_t planes, int64_t stacked = 1) {
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
    if (a == 1) {
      axis.in *= stacked;
      axis.out *= stacked;
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

// A band of windows: output rows [oy, oy + count) at output z `oz`, whose windows' in-bounds
// input rows are `rows` for the first output row and `row_step` further on per output row (a
// band of several rows only where no window of it reaches y's padding), and the output columns
// [lo, hi) whose windows lie inside x (the fast loops; the others take the per-window path).
struct Band {
  std::vector<int64_t> rows;  // offsets within the plane of the first output row's input rows
  int64_t oz = 0, oy = 0, count = 1, row_step = 0, lo = 0, hi = 0;
};

// Output indices [lo, hi) of an axis whose windows lie inside the input.
struct Interior {
  int64_t stride, pad, window, out, lo, hi;
};

Interior interior(const Axis& axis, int64_t stride, int64_t pad) {
  Interior a{stride, pad, axis.window, axis.out, 0, 0};
  a.lo = std::min((pad + stride - 1) / stride, a.out);  // first window starting at or after 0
  const int64_t last_inside = axis.in - a.window + pad;  // start + pad of the last window ending inside
  a.hi = last_inside < 0 ? a.lo : std::clamp(last_inside / stride + 1, a.lo, a.out);
  return a;
}

// The interiors of the y and x axes (lifted).
struct Interiors {
  Interior y, x;
};

Interiors interiors(const PoolGeometry& g, const Lifted& l) {
  const int d = g.spatial_dims;
  Interiors in{interior(l.axis[1], 1, 0), interior(l.axis[2], g.stride[d - 1], g.padding[d - 1])};
  if (d >= 2) in.y = interior(l.axis[1], g.stride[d - 2], g.padding[d - 2]);
  return in;
}

// Calls f(band, first_window_index) over the bands covering a plane's windows.
template <typename F>
inline void for_each_band(const Lifted& l, const Interiors& in, Band& b, F&& f) {
  const Axis &az = l.axis[0], &ay = l.axis[1], &ax = l.axis[2];
  auto run = [&](int64_t oy, int64_t count) {
    b.oy = oy;
    b.count = count;
    b.row_step = in.y.stride * ax.in;
    b.rows.clear();
    for (int64_t z = az.begin[b.oz]; z < az.end[b.oz]; ++z)
      for (int64_t y = ay.begin[oy]; y < ay.end[oy]; ++y) b.rows.push_back((z * ay.in + y) * ax.in);
    b.lo = in.x.lo;
    b.hi = in.x.hi;
    f(b, (b.oz * ay.out + oy) * ax.out);
  };
  for (b.oz = 0; b.oz < az.out; ++b.oz) {
    for (int64_t oy = 0; oy < in.y.lo; ++oy) run(oy, 1);
    if (in.y.hi > in.y.lo) run(in.y.lo, in.y.hi - in.y.lo);
    for (int64_t oy = in.y.hi; oy < ay.out; ++oy) run(oy, 1);
  }
}

// The per-window path for window (row r, column ox) of a band.
inline Window window_at(const Lifted& l, const Band& b, int64_t r, int64_t ox) {
  const Axis &az = l.axis[0], &ay = l.axis[1], &ax = l.axis[2];
  const int64_t oy = b.oy + r;
  return Window{az.end[b.oz] - az.begin[b.oz], az.begin[b.oz] * ay.in + ay.begin[oy], ay.end[oy] - ay.begin[oy],
                ax.begin[ox], ax.end[ox] - ax.begin[ox]};
}

// Offset in the plane of cell (input row k, column j) of the band's first interior window.
inline int64_t interior_cell(const Interior& x, const Band& b, size_t k, int64_t j) {
  return b.rows[k] + b.lo * x.stride + j - x.pad;
}

// The band's interior windows as a block for the row loops; scratch and outputs are indexed
// [r * out_x + ox], like y and dy.
inline rows::Block block_of(const Band& b, int64_t out_x) {
  return rows::Block{b.count, b.hi - b.lo, b.row_step, out_x};
}

// Per-thread scratch for one band of windows, indexed like the band's outputs.
template <typename T>
struct BandScratch {
  std::vector<T> best, share;
  std::vector<rows::Mask<T>> nan, done;
  explicit BandScratch(int64_t n) : best(n), share(n), nan(n), done(n) {}
};

// Whether consecutive planes can be stacked into one taller plane: no z axis, and windows that
// tile y exactly (stride == window, no padding, no rows left over), so none straddles planes.
bool stackable(const PoolGeometry& g, const Lifted& one) {
  const int d = g.spatial_dims;
  if (d == 3) return false;
  if (d == 1) return true;  // y is the lifted axis of size 1
  return g.stride[0] == g.window[0] && g.padding[0] == 0 && one.axis[1].out * g.window[0] == one.axis[1].in;
}

// Whether every axis has windows of 2 at stride 2 (1 on lifted axes), no padding, and no cell
// left over: each input cell is in exactly one window, and the x axis takes the pair loops.
bool exact_pairs(const PoolGeometry& g, const Lifted& one) {
  for (int i = 0; i < g.spatial_dims; ++i) {
    if (g.window[i] != 2 || g.stride[i] != 2 || g.padding[i] != 0 || g.output[2 + i] * 2 != g.input[2 + i]) return false;
  }
  return one.axis[2].out > 0;
}

// Planes go to the kernels in groups: stacked into one plane of about kStackBytes where
// stackable (small planes, e.g. LeNet's 12 x 12, would otherwise pay the per-plane set-up many
// times over), else one by one. body(lifted group, group's first plane, scratch, band) runs on
// the parallel_for's threads; scratch is sized for the largest group.
constexpr int64_t kStackBytes = 32 << 10;

template <typename T, typename Body>
void for_each_plane_group(const PoolGeometry& g, int64_t planes, int64_t work_per_plane, Body&& body) {
  const Lifted one = lift(g, 1);
  const int64_t per_group =
      stackable(g, one) ? std::clamp<int64_t>(kStackBytes / std::max<int64_t>(1, one.in_plane * sizeof(T)), 1, planes) : 1;
  const int64_t groups = (planes + per_group - 1) / per_group;
  const Lifted full = lift(g, 1, per_group);
  parallel_for(groups, work_per_plane * per_group, [&](int64_t begin, int64_t end) {
    BandScratch<T> scratch(full.axis[1].out * full.axis[2].out);
    Band band;
    for (int64_t group = begin; group < end; ++group) {
      const int64_t first = group * per_group, count = std::min(per_group, planes - first);
      if (count == per_group) {
        body(full, first, scratch, band);
      } else {
        body(lift(g, 1, count), first, scratch, band);
      }
    }
  });
}

// The usual max pooling, which the fused 2x2 loops take: 2-D, 2x2 windows at stride 2, no padding.
bool usual_2x2(const PoolGeometry& g) {
  return g.spatial_dims == 2 && g.window == std::vector<int64_t>{2, 2} && g.stride == std::vector<int64_t>{2, 2} &&
         g.padding == std::vector<int64_t>{0, 0};
}

// The 2x2 loops' block for a (stacked) plane: every output row, every window.
rows::Block block_2x2(const Lifted& l) {
  return rows::Block{l.axis[1].out, l.axis[2].out, 2 * l.axis[2].in, l.axis[2].out};
}

// Zeroes the cells of a plane that no 2x2 window covers: an odd last column and an odd last row.
template <typename T>
void zero_uncovered_2x2(const Lifted& l, T* plane) {
  const int64_t in_x = l.axis[2].in, in_y = l.axis[1].in, covered_x = 2 * l.axis[2].out, covered_y = 2 * l.axis[1].out;
  for (int64_t y = 0; y < covered_y; ++y) std::fill(plane + y * in_x + covered_x, plane + (y + 1) * in_x, T(0));
  std::fill(plane + covered_y * in_x, plane + in_y * in_x, T(0));
}

// Calls f(r, i, window) for the windows of a 2x2 plane holding NaN (the fused loops' rare case).
template <typename T, typename F>
void for_each_nan_2x2(const Lifted& l, const T* plane, F&& f) {
  const int64_t in_x = l.axis[2].in;
  for (int64_t r = 0; r < l.axis[1].out; ++r) {
    for (int64_t i = 0; i < l.axis[2].out; ++i) {
      const T* top = plane + 2 * r * in_x + 2 * i;
      if (std::isnan(top[0]) || std::isnan(top[1]) || std::isnan(top[in_x]) || std::isnan(top[in_x + 1]))
        f(r, i, Window{1, 2 * r, 2, 2 * i, 2});
    }
  }
}

// best/nan at [r * out_x + ox] for the band's interior windows: the NaN-blind first maximum and
// whether the window holds NaN. Returns whether any does.
template <typename T>
inline bool interior_max(const Interior& x, const Band& b, const T* plane, BandScratch<T>& s) {
  const rows::Block block = block_of(b, x.out);
  T* best = s.best.data() + b.lo;
  rows::Mask<T>* nan = s.nan.data() + b.lo;
  bool any_nan = false;
  for (size_t k = 0; k < b.rows.size(); ++k) {
    if (x.window == 2 && x.stride == 2) {
      any_nan |= rows::fold_max_pairs(plane + interior_cell(x, b, k, 0), block, best, nan, k == 0);
      continue;
    }
    for (int64_t j = 0; j < x.window; ++j)
      any_nan |= rows::fold_max(plane + interior_cell(x, b, k, j), x.stride, block, best, nan, k == 0 && j == 0);
  }
  return any_nan;
}

}  // namespace

template <typename T>
void pool_forward(const PoolGeometry& g, int64_t planes, int mode, const T* x, T* y, T scale, T all_nan_value) {
  const Lifted one = lift(g, 1);
  const int nan_opt = g.nan_opt;
  const bool is_max = is_max_mode(mode);
  if (is_max && usual_2x2(g)) {
    for_each_plane_group<T>(g, planes, one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>&, Band&) {
      const T* xp = x + p * one.in_plane;
      T* yp = y + p * one.out_plane;
      if (!rows::max_2x2(xp, l.axis[2].in, block_2x2(l), scale, yp)) return;
      for_each_nan_2x2(l, xp, [&](int64_t r, int64_t i, const Window& w) {
        T value = all_nan_value;
        max_source(l, xp, w, nan_opt, &value);
        yp[r * l.axis[2].out + i] = value * scale;
      });
    });
    return;
  }
  for_each_plane_group<T>(g, planes, one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>& s, Band& b) {
    const Interiors in = interiors(g, l);
    const int64_t out_x = in.x.out;
    {
      const T* xp = x + p * one.in_plane;
      T* yp = y + p * one.out_plane;
      for_each_band(l, in, b, [&](const Band& b, int64_t first) {
        T* out = yp + first;
        auto one_window = [&](int64_t r, int64_t ox) {  // the general path, window by window
          const Window w = window_at(l, b, r, ox);
          if (is_max) {
            T value = all_nan_value;
            max_source(l, xp, w, nan_opt, &value);
            out[r * out_x + ox] = value * scale;
          } else {
            T sum = 0;
            for_each_cell(l, w, [&](int64_t at) { sum += xp[at]; });
            out[r * out_x + ox] = (sum / divisor<T>(l, w, mode)) * scale;
          }
        };
        for (int64_t r = 0; r < b.count; ++r) {
          for (int64_t ox = 0; ox < b.lo; ++ox) one_window(r, ox);
          for (int64_t ox = b.hi; ox < out_x; ++ox) one_window(r, ox);
        }
        if (b.lo == b.hi) return;
        if (is_max) {
          const bool any_nan = interior_max(in.x, b, xp, s);
          for (int64_t r = 0; r < b.count; ++r) {
            const int64_t row = r * out_x;
            for (int64_t ox = b.lo; ox < b.hi; ++ox) out[row + ox] = s.best[row + ox] * scale;
            if (any_nan) {  // rare: the careful scan
              for (int64_t ox = b.lo; ox < b.hi; ++ox)
                if (s.nan[row + ox]) one_window(r, ox);
            }
          }
          return;
        }
        // Sums in row-major cell order, as the per-window path adds them.
        const int64_t n = b.hi - b.lo;
        for (int64_t r = 0; r < b.count; ++r) {
          T* __restrict sum = s.best.data() + r * out_x + b.lo;
          std::fill(sum, sum + n, T(0));
          for (size_t k = 0; k < b.rows.size(); ++k) {
            for (int64_t j = 0; j < in.x.window; ++j) {
              const T* __restrict cells = xp + interior_cell(in.x, b, k, j) + r * b.row_step;
              for (int64_t i = 0; i < n; ++i) sum[i] += cells[i * in.x.stride];
            }
          }
          for (int64_t ox = b.lo; ox < b.hi; ++ox) {
            out[r * out_x + ox] = (s.best[r * out_x + ox] / divisor<T>(l, window_at(l, b, r, ox), mode)) * scale;
          }
        }
      });
    }
  });
}

template <typename T>
void max_pool_backward(const PoolGeometry& g, int64_t planes, const T* x, const T* dy, T* dx, T alpha) {
  const Lifted one = lift(g, 1);
  const int nan_opt = g.nan_opt;
  // 2x2 windows tiling x exactly, no cell left out or shared: the pair loops write every cell
  // once, so dx needs no zeroing and no read.
  const bool assign = exact_pairs(g, one);
  if (usual_2x2(g)) {
    for_each_plane_group<T>(g, planes, 2 * one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>&, Band&) {
      const T* xp = x + p * one.in_plane;
      const T* grad = dy + p * one.out_plane;
      T* dxp = dx + p * one.in_plane;
      if (!assign) zero_uncovered_2x2(l, dxp);
      if (!rows::max_2x2_backward(xp, l.axis[2].in, block_2x2(l), grad, alpha, dxp)) return;
      for_each_nan_2x2(l, xp, [&](int64_t r, int64_t i, const Window& w) {
        T value;
        const int64_t to = max_source(l, xp, w, nan_opt, &value);
        if (to >= 0) dxp[to] += grad[r * l.axis[2].out + i] * alpha;
      });
    });
    return;
  }
  for_each_plane_group<T>(g, planes, 2 * one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>& s, Band& b) {
    const Interiors in = interiors(g, l);
    const int64_t out_x = in.x.out;
    {
      const T* xp = x + p * one.in_plane;
      T* dxp = dx + p * one.in_plane;
      if (!assign) std::memset(dxp, 0, sizeof(T) * l.in_plane);  // in cache: the adds below hit the same lines
      for_each_band(l, in, b, [&](const Band& b, int64_t first) {
        const T* grad = dy + p * one.out_plane + first;
        auto one_window = [&](int64_t r, int64_t ox) {
          T value;
          const int64_t to = max_source(l, xp, window_at(l, b, r, ox), nan_opt, &value);
          if (to >= 0) dxp[to] += grad[r * out_x + ox] * alpha;
        };
        for (int64_t r = 0; r < b.count; ++r) {
          for (int64_t ox = 0; ox < b.lo; ++ox) one_window(r, ox);
          for (int64_t ox = b.hi; ox < out_x; ++ox) one_window(r, ox);
        }
        if (b.lo == b.hi) return;
        const bool any_nan = interior_max(in.x, b, xp, s);
        // Route: in row-major cell order, a cell equal to its window's maximum takes the share
        // if no earlier cell did. NaN windows start out done here and are routed one by one.
        std::copy(s.nan.begin(), s.nan.begin() + b.count * out_x, s.done.begin());
        const rows::Block block = block_of(b, out_x);
        const T* best = s.best.data() + b.lo;
        rows::Mask<T>* done = s.done.data() + b.lo;
        for (size_t k = 0; k < b.rows.size(); ++k) {
          const int64_t at = interior_cell(in.x, b, k, 0);
          if (in.x.window == 2 && in.x.stride == 2) {
            rows::route_pairs(xp + at, block, best, grad + b.lo, alpha, done, dxp + at, assign);
            continue;
          }
          for (int64_t j = 0; j < in.x.window; ++j)
            rows::route(xp + at + j, in.x.stride, block, best, grad + b.lo, alpha, done, dxp + at + j);
        }
        if (!any_nan) return;
        for (int64_t r = 0; r < b.count; ++r)
          for (int64_t ox = b.lo; ox < b.hi; ++ox)
            if (s.nan[r * out_x + ox]) one_window(r, ox);
      });
    }
  });
}

template <typename T>
void average_pool_backward(const PoolGeometry& g, int64_t planes, int mode, const T* dy, T* dx, T scale) {
  const Lifted one = lift(g, 1);
  for_each_plane_group<T>(g, planes, 2 * one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>& s, Band& b) {
    const Interiors in = interiors(g, l);
    const int64_t out_x = in.x.out;
    {
      T* dxp = dx + p * one.in_plane;
      std::memset(dxp, 0, sizeof(T) * l.in_plane);
      for_each_band(l, in, b, [&](const Band& b, int64_t first) {
        const T* grad = dy + p * one.out_plane + first;
        for (int64_t r = 0; r < b.count; ++r) {
          T* share = s.share.data() + r * out_x;
          for (int64_t ox = 0; ox < out_x; ++ox)
            share[ox] = (grad[r * out_x + ox] * scale) / divisor<T>(l, window_at(l, b, r, ox), mode);
          for (int64_t ox = 0; ox < b.lo; ++ox)
            for_each_cell(l, window_at(l, b, r, ox), [&](int64_t at) { dxp[at] += share[ox]; });
          for (int64_t ox = b.hi; ox < out_x; ++ox)
            for_each_cell(l, window_at(l, b, r, ox), [&](int64_t at) { dxp[at] += share[ox]; });
          const T* __restrict inner = share + b.lo;
          for (size_t k = 0; k < b.rows.size(); ++k) {
            for (int64_t j = 0; j < in.x.window; ++j) {
              T* __restrict cells = dxp + interior_cell(in.x, b, k, j) + r * b.row_step;
              for (int64_t i = 0; i < b.hi - b.lo; ++i) cells[i * in.x.stride] += inner[i];
            }
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
