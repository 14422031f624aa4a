#include "cpu_pool.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_cache.hpp"
#include "cpu_parallel.hpp"
#include "cpu_pool_rows.hpp"

namespace knetcnn::cpu {
namespace {

// One spatial axis, lifted: the in-bounds input range [begin(o), end(o)) of output index o.
// Computed, not stored: a long 1-D signal has as many outputs as inputs.
struct Axis {
  int64_t in = 1, out = 1, window = 1, stride = 1, pad = 0;
  int64_t begin(int64_t o) const { return std::max<int64_t>(o * stride - pad, 0); }
  int64_t end(int64_t o) const { return std::min(o * stride - pad + window, in); }
};

// One (batch, channel) plane of the geometry, its spatial axes lifted to three (leading axes of
// size 1); the kernels run over planes independently.
struct Lifted {
  Axis axis[3];
  int64_t in_plane = 1, out_plane = 1;
  double window_cells = 1;  // prod(window): mode 1's divisor, beyond int64 for huge 3-D windows
};

// `stacked` consecutive planes seen as one plane `stacked` times taller along y: valid only where
// stackable() says windows can't straddle planes.
Lifted lift(const PoolGeometry& g, int64_t stacked = 1) {
  Lifted l;
  const int lead = 3 - g.spatial_dims;
  for (int a = lead; a < 3; ++a) {
    const int i = a - lead;
    Axis& axis = l.axis[a];
    axis = Axis{g.input[2 + i], g.output[2 + i], g.window[i], g.stride[i], g.padding[i]};
    l.window_cells *= static_cast<double>(axis.window);
  }
  l.axis[1].in *= stacked;
  l.axis[1].out *= stacked;
  for (const Axis& axis : l.axis) {
    l.in_plane *= axis.in;
    l.out_plane *= axis.out;
  }
  return l;
}

// A window's in-bounds cells: z_count slices of y_count rows from row y0 of the plane seen as
// (in_z * in_y, in_x) rows, and columns [x0, x0 + x_count).
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
  T best{};
  int64_t at = -1;
  bool nan = false;
  void see(T v, int64_t offset) {
    const bool take = at < 0 || v > best;
    best = take ? v : best;
    at = take ? offset : at;
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
  return mode == 1 ? static_cast<T>(l.window_cells) : static_cast<T>(w.z_count * w.y_count * w.x_count);
}

// Output indices [lo, hi) of an axis whose windows lie inside the input.
struct Interior {
  int64_t lo = 0, hi = 0;
};

Interior interior(const Axis& a) {
  Interior r;
  r.lo = std::min((a.pad + a.stride - 1) / a.stride, a.out);  // first window starting at or after 0
  const int64_t last_inside = a.in - a.window + a.pad;       // start + pad of the last window ending inside
  r.hi = last_inside < 0 ? r.lo : std::clamp(last_inside / a.stride + 1, r.lo, a.out);
  return r;
}

constexpr int64_t kScratchWindows = kPoolScratchWindows;

// A band of windows: output rows [oy, oy + count) at output z `oz`, whose windows' in-bounds
// input rows are `rows` for the first output row and `row_step` further on per output row (a
// band of several rows only where no window of it reaches y's padding), and the output columns
// [lo, hi) whose windows lie inside x (the fast loops; the others take the per-window path).
struct Band {
  std::vector<int64_t> rows;  // offsets within the plane of the first output row's input rows
  int64_t oz = 0, oy = 0, count = 1, row_step = 0, lo = 0, hi = 0;
};

// Calls f(band, first_window_index) over the bands covering a plane's windows; an interior band
// has at most kScratchWindows / min(interior width, kScratchWindows) rows.
template <typename F>
inline void for_each_band(const Lifted& l, Band& b, F&& f) {
  const Axis &az = l.axis[0], &ay = l.axis[1], &ax = l.axis[2];
  const Interior y = interior(ay), x = interior(ax);
  const int64_t tile = std::clamp<int64_t>(x.hi - x.lo, 1, kScratchWindows);
  const int64_t band_rows = std::max<int64_t>(1, kScratchWindows / tile);
  auto run = [&](int64_t oy, int64_t count) {
    b.oy = oy;
    b.count = count;
    b.row_step = ay.stride * ax.in;
    b.rows.clear();
    for (int64_t z = az.begin(b.oz); z < az.end(b.oz); ++z)
      for (int64_t yi = ay.begin(oy); yi < ay.end(oy); ++yi) b.rows.push_back((z * ay.in + yi) * ax.in);
    b.lo = x.lo;
    b.hi = x.hi;
    f(b, (b.oz * ay.out + oy) * ax.out);
  };
  for (b.oz = 0; b.oz < az.out; ++b.oz) {
    for (int64_t oy = 0; oy < y.lo; ++oy) run(oy, 1);
    for (int64_t oy = y.lo; oy < y.hi; oy += band_rows) run(oy, std::min(band_rows, y.hi - oy));
    for (int64_t oy = y.hi; oy < ay.out; ++oy) run(oy, 1);
  }
}

// The per-window path for window (row r, column ox) of a band.
inline Window window_at(const Lifted& l, const Band& b, int64_t r, int64_t ox) {
  const Axis &az = l.axis[0], &ay = l.axis[1], &ax = l.axis[2];
  const int64_t oy = b.oy + r;
  return Window{az.end(b.oz) - az.begin(b.oz), az.begin(b.oz) * ay.in + ay.begin(oy), ay.end(oy) - ay.begin(oy),
                ax.begin(ox), ax.end(ox) - ax.begin(ox)};
}

// Per-thread scratch for one tile of a band's interior windows, indexed [r * width + i] for
// window (row r, column t0 + i) of a tile [t0, t0 + width). Sized on first use: the fused 2x2
// loops need none, and allocating (and zeroing) 4 x 16 Ki windows on every call cost LeNet's
// poolx most of its time (page faults: 385 us instead of ~30).
template <typename T>
struct BandScratch {
  std::vector<T> best, share;
  std::vector<rows::Mask<T>> nan, done;
  BandScratch& sized() {
    if (best.empty()) {
      best.resize(kScratchWindows);
      share.resize(kScratchWindows);
      nan.resize(kScratchWindows);
      done.resize(kScratchWindows);
    }
    return *this;
  }
};

// A tile of a band's interior columns: [t0, t0 + width).
struct Tile {
  int64_t t0, width;
};

// Calls f(tile) over the band's interior columns in tiles whose windows fit the scratch.
template <typename F>
inline void for_each_tile(const Band& b, F&& f) {
  const int64_t width = std::max<int64_t>(1, kScratchWindows / b.count);
  for (int64_t t0 = b.lo; t0 < b.hi; t0 += width) f(Tile{t0, std::min(width, b.hi - t0)});
}

// Offset in the plane of cell (input row k, column j) of window t0 of the band's first row.
inline int64_t cell_of(const Axis& x, const Band& b, size_t k, int64_t t0, int64_t j) {
  return b.rows[k] + t0 * x.stride + j - x.pad;
}

// best/nan at [r * tile.width + i] for the tile's windows: the NaN-blind first maximum and
// whether the window holds NaN. Returns whether any does.
template <typename T>
inline bool tile_max(const Axis& x, const Band& b, const Tile& t, const T* plane, BandScratch<T>& s) {
  const rows::Block block{b.count, t.width, b.row_step, t.width, 0};
  bool any_nan = false;
  for (size_t k = 0; k < b.rows.size(); ++k) {
    if (x.window == 2 && x.stride == 2) {
      any_nan |= rows::fold_max_pairs(plane + cell_of(x, b, k, t.t0, 0), block, s.best.data(), s.nan.data(), k == 0);
      continue;
    }
    for (int64_t j = 0; j < x.window; ++j)
      any_nan |= rows::fold_max(plane + cell_of(x, b, k, t.t0, j), x.stride, block, s.best.data(), s.nan.data(),
                                k == 0 && j == 0);
  }
  return any_nan;
}

// Whether consecutive planes can be stacked into one taller plane: no z axis, and windows that
// tile y exactly (stride == window, no padding, no rows left over), so none straddles planes.
bool stackable(const PoolGeometry& g, const Lifted& one) {
  const int d = g.spatial_dims;
  if (d == 3) return false;
  if (d == 1) return true;  // y is the lifted axis of size 1
  return g.stride[0] == g.window[0] && g.padding[0] == 0 && one.axis[1].out * g.window[0] == one.axis[1].in;
}

// Whether every axis has windows of 2 at stride 2, no padding, and no cell left over: each input
// cell is in exactly one window.
bool exact_pairs(const PoolGeometry& g) {
  for (int i = 0; i < g.spatial_dims; ++i) {
    if (g.window[i] != 2 || g.stride[i] != 2 || g.padding[i] != 0 || g.output[2 + i] * 2 != g.input[2 + i]) return false;
  }
  return true;
}

// The usual max pooling, which the fused 2x2 loops take: 2-D, 2x2 windows at stride 2, no padding.
bool usual_2x2(const PoolGeometry& g) {
  return g.spatial_dims == 2 && g.window == std::vector<int64_t>{2, 2} && g.stride == std::vector<int64_t>{2, 2} &&
         g.padding == std::vector<int64_t>{0, 0};
}

// The 2x2 loops' block for a (stacked) plane: every output row, every window.
rows::Block block_2x2(const Lifted& l) {
  return rows::Block{l.axis[1].out, l.axis[2].out, 2 * l.axis[2].in, l.axis[2].out, l.axis[2].out};
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

// Planes go to the kernels in groups: stacked into one plane of about kStackBytes where
// stackable (small planes, e.g. LeNet's 12 x 12, would otherwise pay the per-plane set-up many
// times over), else one by one. body(lifted group, group's first plane, scratch, band) runs on
// the parallel_for's threads.
constexpr int64_t kStackBytes = 32 << 10;

template <typename T, typename Body>
void for_each_plane_group(const PoolGeometry& g, int64_t planes, int64_t work_per_plane, Body&& body) {
  if (planes <= 0) return;
  const Lifted one = lift(g);
  const int64_t per_group =
      stackable(g, one) ? std::clamp<int64_t>(kStackBytes / std::max<int64_t>(1, one.in_plane * sizeof(T)), 1, planes) : 1;
  const int64_t groups = (planes + per_group - 1) / per_group;
  const Lifted full = lift(g, per_group);
  parallel_for(groups, work_per_plane * per_group, [&](int64_t begin, int64_t end) {
    BandScratch<T> scratch;
    Band band;
    for (int64_t group = begin; group < end; ++group) {
      const int64_t first = group * per_group, count = std::min(per_group, planes - first);
      body(count == per_group ? full : lift(g, count), first, scratch, band);
    }
  });
}

}  // namespace

template <typename T>
void pool_forward(const PoolGeometry& g, int64_t planes, int mode, const T* x, T* y, T scale, T all_nan_value) {
  const Lifted one = lift(g);
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
  for_each_plane_group<T>(g, planes, one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>& scratch, Band& b) {
    BandScratch<T>& s = scratch.sized();
    const Axis& ax = l.axis[2];
    const int64_t out_x = ax.out;
    const T* xp = x + p * one.in_plane;
    T* yp = y + p * one.out_plane;
    for_each_band(l, b, [&](const Band& b, int64_t first) {
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
      for_each_tile(b, [&](const Tile& t) {
        if (is_max) {
          const bool any_nan = tile_max(ax, b, t, xp, s);
          for (int64_t r = 0; r < b.count; ++r) {
            const T* best = s.best.data() + r * t.width;
            T* row = out + r * out_x + t.t0;
            for (int64_t i = 0; i < t.width; ++i) row[i] = best[i] * scale;
            if (!any_nan) continue;
            for (int64_t i = 0; i < t.width; ++i)  // rare: the careful scan
              if (s.nan[r * t.width + i]) one_window(r, t.t0 + i);
          }
          return;
        }
        // Sums in row-major cell order, as the per-window path adds them.
        for (int64_t r = 0; r < b.count; ++r) {
          T* __restrict sum = s.best.data();
          std::fill(sum, sum + t.width, T(0));
          for (size_t k = 0; k < b.rows.size(); ++k) {
            for (int64_t j = 0; j < ax.window; ++j) {
              const T* __restrict cells = xp + cell_of(ax, b, k, t.t0, j) + r * b.row_step;
              for (int64_t i = 0; i < t.width; ++i) sum[i] += cells[i * ax.stride];
            }
          }
          for (int64_t i = 0; i < t.width; ++i)
            out[r * out_x + t.t0 + i] = (sum[i] / divisor<T>(l, window_at(l, b, r, t.t0 + i), mode)) * scale;
        }
      });
    });
  });
}

template <typename T>
void max_pool_backward(const PoolGeometry& g, int64_t planes, const T* x, const T* dy, T* dx, T alpha) {
  const Lifted one = lift(g);
  const int nan_opt = g.nan_opt;
  // 2x2 windows tiling x exactly, no cell left out or shared: the pair loops write every cell
  // once, so dx needs no zeroing and no read.
  const bool assign = exact_pairs(g);
  if (usual_2x2(g)) {
    const rows::Traffic traffic =
        rows::traffic_for_2x2_backward(planes * one.in_plane * int64_t(sizeof(T)), last_level_cache_bytes());
    for_each_plane_group<T>(g, planes, 2 * one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>&, Band&) {
      const T* xp = x + p * one.in_plane;
      const T* grad = dy + p * one.out_plane;
      T* dxp = dx + p * one.in_plane;
      if (!assign) zero_uncovered_2x2(l, dxp);
      if (!rows::max_2x2_backward(xp, l.axis[2].in, block_2x2(l), grad, alpha, dxp, traffic)) return;
      const int64_t in_x = l.axis[2].in;
      for_each_nan_2x2(l, xp, [&](int64_t r, int64_t i, const Window& w) {
        T* cells = dxp + 2 * r * in_x + 2 * i;  // the fast loop left arbitrary values here
        cells[0] = cells[1] = cells[in_x] = cells[in_x + 1] = T(0);
        T value;
        const int64_t to = max_source(l, xp, w, nan_opt, &value);
        if (to >= 0) dxp[to] += grad[r * l.axis[2].out + i] * alpha;
      });
    });
    return;
  }
  for_each_plane_group<T>(g, planes, 2 * one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>& scratch, Band& b) {
    BandScratch<T>& s = scratch.sized();
    const Axis& ax = l.axis[2];
    const int64_t out_x = ax.out;
    const T* xp = x + p * one.in_plane;
    T* dxp = dx + p * one.in_plane;
    if (!assign) std::memset(dxp, 0, sizeof(T) * l.in_plane);  // in cache: the adds below hit the same lines
    for_each_band(l, b, [&](const Band& b, int64_t first) {
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
      for_each_tile(b, [&](const Tile& t) {
        const bool any_nan = tile_max(ax, b, t, xp, s);
        // Route: in row-major cell order, a cell equal to its window's maximum takes the share
        // if no earlier cell did. NaN windows start out done here and are routed one by one.
        std::copy(s.nan.begin(), s.nan.begin() + b.count * t.width, s.done.begin());
        const rows::Block block{b.count, t.width, b.row_step, t.width, out_x};
        for (size_t k = 0; k < b.rows.size(); ++k) {
          const int64_t at = cell_of(ax, b, k, t.t0, 0);
          if (ax.window == 2 && ax.stride == 2) {
            rows::route_pairs(xp + at, block, s.best.data(), grad + t.t0, alpha, s.done.data(), dxp + at, assign);
            continue;
          }
          for (int64_t j = 0; j < ax.window; ++j)
            rows::route(xp + at + j, ax.stride, block, s.best.data(), grad + t.t0, alpha, s.done.data(), dxp + at + j);
        }
        if (!any_nan) return;
        for (int64_t r = 0; r < b.count; ++r)
          for (int64_t i = 0; i < t.width; ++i)
            if (s.nan[r * t.width + i]) one_window(r, t.t0 + i);
      });
    });
  });
}

template <typename T>
void average_pool_backward(const PoolGeometry& g, int64_t planes, int mode, const T* dy, T* dx, T scale) {
  const Lifted one = lift(g);
  for_each_plane_group<T>(g, planes, 2 * one.in_plane + one.out_plane, [&](const Lifted& l, int64_t p, BandScratch<T>& scratch, Band& b) {
    BandScratch<T>& s = scratch.sized();
    const Axis& ax = l.axis[2];
    const int64_t out_x = ax.out;
    T* dxp = dx + p * one.in_plane;
    std::memset(dxp, 0, sizeof(T) * l.in_plane);
    for_each_band(l, b, [&](const Band& b, int64_t first) {
      const T* grad = dy + p * one.out_plane + first;
      auto share_of = [&](int64_t r, int64_t ox) {
        return (grad[r * out_x + ox] * scale) / divisor<T>(l, window_at(l, b, r, ox), mode);
      };
      for (int64_t r = 0; r < b.count; ++r) {
        auto one_window = [&](int64_t ox) {
          const T share = share_of(r, ox);
          for_each_cell(l, window_at(l, b, r, ox), [&](int64_t at) { dxp[at] += share; });
        };
        for (int64_t ox = 0; ox < b.lo; ++ox) one_window(ox);
        for (int64_t ox = b.hi; ox < out_x; ++ox) one_window(ox);
      }
      for_each_tile(b, [&](const Tile& t) {
        for (int64_t r = 0; r < b.count; ++r) {
          T* __restrict share = s.share.data();
          for (int64_t i = 0; i < t.width; ++i) share[i] = share_of(r, t.t0 + i);
          for (size_t k = 0; k < b.rows.size(); ++k) {
            for (int64_t j = 0; j < ax.window; ++j) {
              T* __restrict cells = dxp + cell_of(ax, b, k, t.t0, j) + r * b.row_step;
              for (int64_t i = 0; i < t.width; ++i) cells[i * ax.stride] += share[i];
            }
          }
        }
      });
    });
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
