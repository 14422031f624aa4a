// im2col / col2im (see cpu_conv.hpp): loops over (channel, kernel index) pairs and their rows,
// with the rows as short fixed-length copies and adds where they are short.
#include "cpu_conv.hpp"

#include <algorithm>
#include <cstring>
#include <type_traits>

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

}  // namespace

template <typename T>
void im2col(const Volume<const T>& x, const ConvWindow& w, T* col, bool parallel) {
  const Block<const T> b(x, w);
  if (b.box_size == 0) return;  // no columns (and maybe no col to write them to)
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

template void im2col<float>(const Volume<const float>&, const ConvWindow&, float*, bool);
template void im2col<double>(const Volume<const double>&, const ConvWindow&, double*, bool);
template void col2im<float>(const float*, const ConvWindow&, const Volume<float>&, bool);
template void col2im<double>(const double*, const ConvWindow&, const Volume<double>&, bool);

}  // namespace knetcnn::cpu
