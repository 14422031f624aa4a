// im2col / col2im (see cpu_conv.hpp): loops over (channel, kernel index) pairs and their rows,
// with the rows as short fixed-length copies and adds where they are short.
#include "cpu_conv.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_parallel.hpp"
#include "int_division.hpp"

namespace knetcnn::cpu {
namespace {

// Where one kernel index's taps fall along one axis of a block: output j (0-based in the box)
// reads volume cell first + j * step, which lies inside the volume for j in [lo, hi).
struct Taps {
  int64_t first, step, lo, hi;
};

Taps taps(const ConvWindow& w, int axis, int64_t k, int64_t cells) {
  const int64_t count = w.out_end[axis] - w.out_begin[axis];
  const int64_t step = w.stride[axis];
  const int64_t first = w.out_begin[axis] * step + k * w.dilation[axis] - w.padding[axis] - w.origin[axis];
  const int64_t lo = std::clamp<int64_t>(ceil_div(-first, step), 0, count);
  const int64_t hi = std::clamp<int64_t>(ceil_div(cells - first, step), lo, count);
  return {first, step, lo, hi};
}

// Rows of at most this many elements get their length as a compile-time constant, so that their
// copies and adds compile to a few vector moves. With a run-time length GCC calls memcpy per row
// (or runs a vector loop with its prologue): 3-4x slower on the 8-element rows of LeNet's second
// layer.
constexpr int64_t kMaxFixedRow = 16;

// body(length), with length a std::integral_constant where it is short, else the int64_t itself.
template <int64_t N = 1, typename Body>
void with_row_length(int64_t length, Body&& body) {
  if constexpr (N > kMaxFixedRow) {
    body(length);
  } else if (length == N) {
    body(std::integral_constant<int64_t, N>{});
  } else {
    with_row_length<N + 1>(length, body);
  }
}

// out[0:count] = 0; skips the library call for the common count of zero.
template <typename T>
void zero(T* out, int64_t count) {
  if (count > 0) std::memset(out, 0, count * sizeof(T));
}

// out[j] = in[j * step] for j < length.
template <typename T, typename Length>
void copy_row(T* __restrict out, const T* __restrict in, int64_t step, Length length) {
  if (step == 1) {
    std::memcpy(out, in, length * sizeof(T));  // with a constant length: a few inline moves
  } else {
    for (int64_t j = 0; j < length; ++j) out[j] = in[j * step];
  }
}

// Gathers `rows` output rows of `width` cells, each reading `length` cells of the volume from
// position `lo` on (zero around them): row r reads in + r * row_step, every step-th cell.
template <typename T, typename Length>
void gather_rows(T* out, int64_t width, const T* in, int64_t row_step, int64_t step, int64_t rows, int64_t lo,
                 Length length) {
  if (step == 1 && lo == 0 && length == width) {  // the common case: contiguous rows, no padding
    for (int64_t r = 0; r < rows; ++r, out += width, in += row_step) std::memcpy(out, in, length * sizeof(T));
    return;
  }
  for (int64_t r = 0; r < rows; ++r, out += width, in += row_step) {
    zero(out, lo);
    copy_row(out + lo, in, step, length);
    zero(out + lo + length, width - lo - length);
  }
}

// out[j * step] += in[j] for j < length.
template <typename T, typename Length>
void add_row(T* __restrict out, const T* __restrict in, int64_t step, Length length) {
  if (step == 1) {
    for (int64_t j = 0; j < length; ++j) out[j] += in[j];
  } else {
    for (int64_t j = 0; j < length; ++j) out[j * step] += in[j];
  }
}

// body(begin, end) over [0, count): split by parallel_for, or all on this thread.
template <typename Body>
void run_tasks(bool parallel, int64_t count, int64_t work_per_task, const Body& body) {
  if (parallel) {
    parallel_for(count, work_per_task, body);
  } else if (count > 0) {
    body(0, count);
  }
}

// One block: a volume, a window, and the sizes both kernels loop over.
template <typename T>
struct Block {
  const Volume<T>& v;
  const ConvWindow& w;
  int64_t items, channels, kernel_size, box_size;
  std::array<int64_t, 3> box;

  Block(const Volume<T>& volume, const ConvWindow& window) : v(volume), w(window) {
    items = v.shape[0];
    channels = v.shape[1];
    kernel_size = w.kernel[0] * w.kernel[1] * w.kernel[2];
    for (int a = 0; a < 3; ++a) box[a] = w.out_end[a] - w.out_begin[a];
    box_size = box[0] * box[1] * box[2];
  }

  // Taps of flat kernel index k along each axis.
  std::array<Taps, 3> taps_of(int64_t k) const {
    const int64_t k2 = k % w.kernel[2], k1 = k / w.kernel[2] % w.kernel[1], k0 = k / w.kernel[2] / w.kernel[1];
    return {taps(w, 0, k0, v.shape[2]), taps(w, 1, k1, v.shape[3]), taps(w, 2, k2, v.shape[4])};
  }

  // Calls visit(volume_cell, column) for every item n in [n0, n1) and box position j0 of channel
  // c and flat kernel index k (taps t), in column order. `column` is the offset of the B1 x B2
  // columns of (c, k, n, j0); `volume_cell` points at the cell read by their first tap inside the
  // volume (box position (t[1].lo, t[2].lo)), or is nullptr where none lies inside.
  template <typename Visit>
  void planes(int64_t c, int64_t k, const std::array<Taps, 3>& t, int64_t n0, int64_t n1, Visit visit) const {
    const int64_t plane_size = box[1] * box[2];
    const bool any = t[1].lo < t[1].hi && t[2].lo < t[2].hi;
    const int64_t corner = any ? (t[1].first + t[1].lo * t[1].step) * v.strides[3] +
                                     (t[2].first + t[2].lo * t[2].step) * v.strides[4]
                               : 0;
    int64_t column = ((c * kernel_size + k) * items + n0) * box_size;
    for (int64_t n = n0; n < n1; ++n) {
      T* plane = v.data + n * v.strides[0] + c * v.strides[1];
      for (int64_t j0 = 0; j0 < box[0]; ++j0, column += plane_size) {
        const bool inside = any && j0 >= t[0].lo && j0 < t[0].hi;
        visit(inside ? plane + (t[0].first + j0 * t[0].step) * v.strides[2] + corner : nullptr, column);
      }
    }
  }
};

// Input cells [lo, hi) along `axis` that a window's box reads, clamped to the volume's `cells`.
std::pair<int64_t, int64_t> cells_read(const ConvWindow& w, int axis, int64_t cells) {
  const int64_t shift = w.padding[axis] + w.origin[axis];
  const int64_t first = w.out_begin[axis] * w.stride[axis] - shift;
  const int64_t last = (w.out_end[axis] - 1) * w.stride[axis] + (w.kernel[axis] - 1) * w.dilation[axis] - shift;
  const int64_t lo = std::clamp<int64_t>(first, 0, cells);
  return {lo, std::clamp<int64_t>(last + 1, lo, cells)};
}

// A window strided along the last axis copies each row as out[j] = in[j * step] (col2im: adds), a
// scalar load and store per cell (0.3-0.5 ns here for AlexNet's stem; GCC's vectorised versions of
// the loop were no faster, AVX-512's twice as slow). Where each cell lands in many columns
// (AlexNet's stem: 11 taps at stride 4, ~2.75 copies per cell along that axis and 7.6 in all),
// each (item, channel) plane's rows are split once into their `step` phases, cell m going to
// phase m % step at m / step: every tap's row is then one contiguous run of a phase. col2im adds
// into a zeroed split plane and adds that back into dx once.
class PhasePlanes {
 public:
  template <typename T>
  PhasePlanes(const Volume<T>& v, const ConvWindow& w)
      : shape_(v.shape), strides_(v.strides), step_(w.stride[2]), span_(ceil_div(v.shape[4], w.stride[2])) {
    std::tie(d_lo_, d_hi_) = cells_read(w, 0, v.shape[2]);
    std::tie(h_lo_, h_hi_) = cells_read(w, 1, v.shape[3]);
  }

  // Elements of one split plane: its rows of `step` phases of `span` cells.
  int64_t size() const { return (d_hi_ - d_lo_) * (h_hi_ - h_lo_) * step_ * span_; }

  // Whether splitting pays: the box copies at least four times as many cells as it splits (3x3 at
  // stride 2, 2.2 times, gathered 1.2x slower split; 5x5 and 7x7 at stride 2 and 11x11 at stride
  // 4, 6-7 times, in 0.6-0.8x the time). The split plane must also stay within L2 (1 MiB per core
  // here) for the copies that read it back.
  template <typename T>
  static bool worth_it(const Volume<T>& v, const ConvWindow& w, int64_t kernel_size, int64_t box_size) {
    if (w.stride[2] < 2) return false;
    const PhasePlanes split(v, w);
    return split.size() * int64_t(sizeof(T)) <= kMaxSplitBytes && kernel_size * box_size >= 4 * split.size();
  }

  // buf = plane (n, c) of the volume at `data`, split into phases.
  template <typename T>
  void split(const T* data, int64_t n, int64_t c, T* buf) const {
    each_phase_run(data, n, c, buf, [](T* out, const T* in, int64_t step, int64_t length) {
      for (int64_t j = 0; j < length; ++j) out[j] = in[j * step];
    });
  }

  // Plane (n, c) of the volume at `data` += buf, a split plane.
  template <typename T>
  void add_back(const T* buf, T* data, int64_t n, int64_t c) const {
    each_phase_run(data, n, c, buf, [](const T* in, T* out, int64_t step, int64_t length) {
      for (int64_t j = 0; j < length; ++j) out[j * step] += in[j];
    });
  }

  // Where, in a split plane, the run of row (d, h) that starts at cell m (>= 0) begins.
  int64_t offset(int64_t d, int64_t h, int64_t m) const {
    return ((d - d_lo_) * (h_hi_ - h_lo_) + (h - h_lo_)) * step_ * span_ + (m % step_) * span_ + m / step_;
  }

  // Distance between consecutive rows (along axis 1) of a split plane.
  int64_t row_size() const { return step_ * span_; }

 private:
  static constexpr int64_t kMaxSplitBytes = 1 << 20;

  // run(phase run in buf, its first cell in the volume, cell step, length) for every phase of
  // every row of plane (n, c) that the window reads.
  template <typename Cell, typename SplitCell, typename Run>
  void each_phase_run(Cell* data, int64_t n, int64_t c, SplitCell* buf, Run run) const {
    const int64_t cells = shape_[4];
    for (int64_t d = d_lo_; d < d_hi_; ++d) {
      for (int64_t h = h_lo_; h < h_hi_; ++h, buf += step_ * span_) {
        Cell* row = data + n * strides_[0] + c * strides_[1] + d * strides_[2] + h * strides_[3];
        for (int64_t q = 0; q < step_ && q < cells; ++q)
          run(buf + q * span_, row + q * strides_[4], step_ * strides_[4], ceil_div(cells - q, step_));
      }
    }
  }

  std::array<int64_t, 5> shape_, strides_;
  int64_t step_, span_, d_lo_ = 0, d_hi_ = 0, h_lo_ = 0, h_hi_ = 0;
};

// Where one kernel index's taps (t) read a split plane: run() gives the start of box row j0's
// first row inside the volume (row t[1].lo, cell t[2].lo), or nullptr where none of its cells is
// inside; row_step() the distance to the next such row.
template <typename T>
struct PhaseRuns {
  const PhasePlanes& phases;
  const std::array<Taps, 3>& t;

  T* run(T* buf, int64_t j0) const {
    if (t[1].lo >= t[1].hi || t[2].lo >= t[2].hi || j0 < t[0].lo || j0 >= t[0].hi) return nullptr;
    return buf + phases.offset(t[0].first + j0 * t[0].step, t[1].first + t[1].lo * t[1].step,
                               t[2].first + t[2].lo * t[2].step);
  }
  int64_t row_step() const { return t[1].step * phases.row_size(); }
};

// im2col through PhasePlanes: threads take (channel, item) pairs, each splitting its plane once
// and then writing every kernel index's columns of it.
template <typename T>
void im2col_by_phases(const Block<const T>& b, const Volume<const T>& x, const ConvWindow& w, T* col, bool parallel) {
  const PhasePlanes phases(x, w);
  const int64_t rows = b.box[1], width = b.box[2], plane = rows * width;
  run_tasks(parallel, b.channels * b.items, b.kernel_size * b.box_size, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(phases.size());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task / b.items, n = task % b.items;
      phases.split(x.data, n, c, buf.data());
      for (int64_t k = 0; k < b.kernel_size; ++k) {
        const auto t = b.taps_of(k);
        const PhaseRuns<T> runs{phases, t};
        const int64_t above = t[1].lo * width, inside = t[1].hi - t[1].lo, below = (rows - t[1].hi) * width;
        T* out = col + ((c * b.kernel_size + k) * b.items + n) * b.box_size;
        for (int64_t j0 = 0; j0 < b.box[0]; ++j0, out += plane) {
          const T* in = runs.run(buf.data(), j0);
          if (in == nullptr) {
            zero(out, plane);
            continue;
          }
          zero(out, above);
          gather_rows(out + above, width, in, runs.row_step(), int64_t{1}, inside, t[2].lo, t[2].hi - t[2].lo);
          zero(out + above + inside * width, below);
        }
      }
    }
  });
}

// col2im through PhasePlanes: threads take (channel, item) pairs (disjoint dx planes), each adding
// every kernel index's columns into a zeroed split plane and that into dx once.
template <typename T>
void col2im_by_phases(const Block<T>& b, const T* col, const ConvWindow& w, const Volume<T>& dx, bool parallel) {
  const PhasePlanes phases(dx, w);
  const int64_t width = b.box[2], plane = b.box[1] * width;
  run_tasks(parallel, b.channels * b.items, b.kernel_size * b.box_size, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(phases.size());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task / b.items, n = task % b.items;
      std::fill(buf.begin(), buf.end(), T(0));
      for (int64_t k = 0; k < b.kernel_size; ++k) {
        const auto t = b.taps_of(k);
        const PhaseRuns<T> runs{phases, t};
        const int64_t skip = t[1].lo * width + t[2].lo, length = t[2].hi - t[2].lo;
        const T* in = col + ((c * b.kernel_size + k) * b.items + n) * b.box_size + skip;
        for (int64_t j0 = 0; j0 < b.box[0]; ++j0, in += plane) {
          T* out = runs.run(buf.data(), j0);
          if (out == nullptr) continue;
          const T* row = in;
          for (int64_t r = t[1].lo; r < t[1].hi; ++r, row += width, out += runs.row_step()) add_row(out, row, 1, length);
        }
      }
      phases.add_back(buf.data(), dx.data, n, c);
    }
  });
}

}  // namespace

template <typename T>
bool splits_into_phases(const Volume<const T>& x, const ConvWindow& w) {
  const Block<const T> b(x, w);
  return b.box_size > 0 && PhasePlanes::worth_it(x, w, b.kernel_size, b.box_size);
}

template <typename T>
void im2col(const Volume<const T>& x, const ConvWindow& w, T* col, bool parallel) {
  const Block<const T> b(x, w);
  if (b.box_size == 0) return;  // no columns (and maybe no col to write them to)
  if (splits_into_phases(x, w)) return im2col_by_phases(b, x, w, col, parallel);
  const int64_t rows = b.box[1], width = b.box[2];
  // Threads take (channel, kernel index) pairs: each writes its own contiguous stretch of col.
  run_tasks(parallel, b.channels * b.kernel_size, b.items * b.box_size, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task / b.kernel_size, k = task % b.kernel_size;
      const auto t = b.taps_of(k);
      const int64_t row_step = t[1].step * x.strides[3], step = t[2].step * x.strides[4];
      // Plain values, not references, for the per-plane loop: it runs for every (item, j0).
      const int64_t above = t[1].lo * width, inside = t[1].hi - t[1].lo, below = (rows - t[1].hi) * width;
      const int64_t plane = rows * width, lo = t[2].lo;
      T* const base = col;
      with_row_length(t[2].hi - t[2].lo, [=, &b, &t](auto length) {
        b.planes(c, k, t, 0, b.items, [=](const T* in, int64_t column) {
          T* out = base + column;
          if (in == nullptr) {
            zero(out, plane);
            return;
          }
          zero(out, above);  // output rows above the volume
          gather_rows(out + above, width, in, row_step, step, inside, lo, length);
          zero(out + above + inside * width, below);  // and below it
        });
      });
    }
  });
}

template <typename T>
void col2im(const T* col, const ConvWindow& w, const Volume<T>& dx, bool parallel) {
  const Block<T> b(dx, w);
  if (b.box_size == 0) return;
  if (splits_into_phases(Volume<const T>{dx.data, dx.shape, dx.strides}, w))
    return col2im_by_phases(b, col, w, dx, parallel);
  const int64_t width = b.box[2];
  // Threads take (channel, item range) pairs, whose dx planes are disjoint; with fewer channels
  // than threads the items are cut into ranges too.
  const int64_t threads = parallel ? max_threads() : 1;
  const int64_t slices = std::clamp<int64_t>(threads / std::max<int64_t>(b.channels, 1), 1, std::max<int64_t>(b.items, 1));
  run_tasks(parallel, b.channels * slices, b.kernel_size * b.box_size * b.items / slices, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task / slices, slice = task % slices;
      const int64_t n0 = b.items * slice / slices, n1 = b.items * (slice + 1) / slices;
      for (int64_t k = 0; k < b.kernel_size; ++k) {
        const auto t = b.taps_of(k);
        const int64_t row_step = t[1].step * dx.strides[3], step = t[2].step * dx.strides[4];
        const int64_t skip = t[1].lo * width + t[2].lo, rows = t[1].hi - t[1].lo;
        const T* const base = col;
        with_row_length(t[2].hi - t[2].lo, [=, &b, &t](auto length) {
          b.planes(c, k, t, n0, n1, [=](T* out, int64_t column) {
            if (out == nullptr) return;  // a plane of padding: nothing of x to add to
            const T* in = base + column + skip;
            for (int64_t r = 0; r < rows; ++r, in += width, out += row_step) add_row(out, in, step, length);
          });
        });
      }
    }
  });
}

template bool splits_into_phases<float>(const Volume<const float>&, const ConvWindow&);
template bool splits_into_phases<double>(const Volume<const double>&, const ConvWindow&);
template void im2col<float>(const Volume<const float>&, const ConvWindow&, float*, bool);
template void im2col<double>(const Volume<const double>&, const ConvWindow&, double*, bool);
template void col2im<float>(const float*, const ConvWindow&, const Volume<float>&, bool);
template void col2im<double>(const double*, const ConvWindow&, const Volume<double>&, bool);

}  // namespace knetcnn::cpu
