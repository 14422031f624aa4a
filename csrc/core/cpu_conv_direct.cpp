// Direct convolution (see cpu_conv_direct.hpp). Output rows are cut into tiles of MB outputs x
// RB rows x NV vectors of columns; a tile's accumulators stay in registers while every tap of
// every input channel adds into them (one vector load per row, column vector and tap, shared
// by the MB outputs; one scalar weight per output and tap). The last tile of a row is moved back to end at the row's end
// rather than running a scalar tail: tiles only assign, so computing a few columns twice is
// harmless.
#include "cpu_conv_direct.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu_parallel.hpp"
#include "int_division.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define KNETCNN_X86_DISPATCH 1
#endif

// The vector helpers take and return vectors wider than the baseline's registers; they are
// always inlined, so the ABI note GCC gives for such signatures (-Wpsabi) concerns no real call.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace knetcnn::cpu {
namespace {

// Taps [begin, end) of a kernel of k taps at dilation `dil` that reach cells [0, cells) from
// outputs whose tap 0 reads cells first_lo..first_hi: the other taps read only padding.
std::pair<int64_t, int64_t> reaching(int64_t first_lo, int64_t first_hi, int64_t dil, int64_t cells, int64_t k) {
  const int64_t begin = std::clamp<int64_t>(ceil_div(-first_hi, dil), 0, k);
  const int64_t end = std::clamp<int64_t>(floor_div(cells - 1 - first_lo, dil) + 1, begin, k);
  return {begin, end};
}

// Everything a tile needs. `in` is the input cell that tap (0, 0) of the tile's first output
// row and column reads, in its group's first channel; `w` holds the tile's first output's
// weights and `out` is its first output cell.
template <typename T>
struct TileArgs {
  const T* in;
  int64_t channel_step, row_step;  // between input channels and input rows
  int64_t cg, kh, kw, dil_h, dil_w;
  const T* w;
  int64_t w_step;  // between outputs' weights: cg * kh * kw
  T* out;
  int64_t out_step, out_row_step;  // between outputs (out_h * out_w) and output rows (out_w)
  int64_t b_begin, b_end;          // the taps along a row that reach x; the others read zeros
};

template <typename T, int Bytes>
struct Lanes {
  typedef T V __attribute__((vector_size(Bytes)));
  static constexpr int64_t count = Bytes / int64_t(sizeof(T));
};

// Vectors of columns per tile for MB outputs x RB rows, within 16 vector registers (AVX2 and
// SSE): MB * RB * NV accumulators, one weight, and NV inputs where MB > 1 shares them (one
// output's FMAs take their input straight from memory).
template <int MB, int RB>
constexpr int kMaxVectors = std::min(7, 15 / (MB * RB + (MB > 1 ? 1 : 0)));

template <typename V>
[[gnu::always_inline]] inline V load(const void* from) {
  V v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

// A tile: MB outputs x RB output rows x NV vectors of columns, over taps [a_begin, a_end) x
// [t.b_begin, t.b_end) of every input channel of the group. A tap that falls outside x for
// some of the rows reads zeros there (from x's padded copy, or rows the task's copy holds).
// The small loops are unrolled by pragma: left to itself, GCC copied the loads through the
// stack and kept the accumulators in memory (4-9x slower).
template <typename T, int Bytes, int MB, int RB, int NV>
[[gnu::always_inline]] inline void tile(const TileArgs<T>& t, int64_t a_begin, int64_t a_end) {
  using V = typename Lanes<T, Bytes>::V;
  constexpr int64_t lanes = Lanes<T, Bytes>::count;
  V acc[MB][RB][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m)
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][i][v] = V{};
  for (int64_t c = 0; c < t.cg; ++c) {
    for (int64_t a = a_begin; a < a_end; ++a) {
      const T* rows = t.in + c * t.channel_step + a * t.dil_h * t.row_step;
      const T* weights = t.w + (c * t.kh + a) * t.kw;
      for (int64_t b = t.b_begin; b < t.b_end; ++b) {
#pragma GCC unroll 8
        for (int i = 0; i < RB; ++i) {
          V in[NV];
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) in[v] = load<V>(rows + i * t.row_step + b * t.dil_w + v * lanes);
#pragma GCC unroll 8
          for (int m = 0; m < MB; ++m) {
            const T weight = weights[m * t.w_step + b];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[m][i][v] += weight * in[v];
          }
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m)
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        std::memcpy(t.out + m * t.out_step + i * t.out_row_step + v * lanes, &acc[m][i][v], sizeof(V));
}

// Where a block of output rows or columns reads x along one axis.
struct AxisReach {
  int64_t first;  // x's cell read by output 0's tap 0
  int64_t dil, cells, taps;
};

// RB output rows (columns [0, out_w)) in tiles of NV vectors; the last tile is moved back to
// end at out_w, which must be >= NV * lanes.
template <typename T, int Bytes, int MB, int RB, int NV>
[[gnu::always_inline]] inline void rows_of_tiles(TileArgs<T> t, int64_t a_begin, int64_t a_end, const AxisReach& cols,
                                                 int64_t out_w) {
  constexpr int64_t width = NV * Lanes<T, Bytes>::count;
  const T* in = t.in;
  T* out = t.out;
  for (int64_t j = 0;; j += width) {
    j = std::min(j, out_w - width);
    t.in = in + j;
    t.out = out + j;
    std::tie(t.b_begin, t.b_end) = reaching(cols.first + j, cols.first + j + width - 1, cols.dil, cols.cells, cols.taps);
    tile<T, Bytes, MB, RB, NV>(t, a_begin, a_end);
    if (j + width >= out_w) break;
  }
}

// rows_of_tiles with NV chosen at run time.
template <typename T, int Bytes, int MB, int RB, int NV = 1>
[[gnu::always_inline]] inline void rows_of_tiles(int nv, const TileArgs<T>& t, int64_t a_begin, int64_t a_end,
                                                 const AxisReach& cols, int64_t out_w) {
  if constexpr (NV < kMaxVectors<MB, RB>) {
    if (nv > NV) return rows_of_tiles<T, Bytes, MB, RB, NV + 1>(nv, t, a_begin, a_end, cols, out_w);
  }
  rows_of_tiles<T, Bytes, MB, RB, NV>(t, a_begin, a_end, cols, out_w);
}

// Vectors per tile of MB outputs x RB rows on rows of out_w columns: the fewest cycles per row
// by a rough model of a core that issues two FMAs and two loads a cycle, with FMAs of 4 cycles'
// latency (a tap's pass over a tile takes at least that long). Ties go to the wider tile.
int vectors_per_tile(int mb, int rb, int most, int64_t lanes, int64_t out_w) {
  int best = 1;
  double best_cost = 0;
  most = static_cast<int>(std::min<int64_t>(most, out_w / lanes));
  for (int nv = 1; nv <= most; ++nv) {
    const int64_t tiles = (out_w + nv * lanes - 1) / (nv * lanes);
    const double fmas = mb * rb * nv, loads = rb * nv + mb;
    const double cost = double(tiles) * std::max({fmas / 2, loads / 2, 4.0});
    if (nv == 1 || cost <= best_cost) best = nv, best_cost = cost;
  }
  return best;
}

// MB outputs (t.w, t.out) on output rows [r0, r1), RB rows at a time (the last group of rows
// moved back to end at r1, which needs r1 - r0 >= RB; t.in is row r0's).
template <typename T, int Bytes, int MB, int RB>
[[gnu::always_inline]] inline void outputs_on_rows(TileArgs<T> t, const AxisReach& rows, const AxisReach& cols,
                                                   int64_t r0, int64_t r1, int64_t out_w) {
  const int nv = vectors_per_tile(MB, RB, kMaxVectors<MB, RB>, Lanes<T, Bytes>::count, out_w);
  const T* in = t.in;
  T* out = t.out;
  for (int64_t r = r0;; r += RB) {
    r = std::min(r, r1 - RB);
    // The taps that reach x from any of these rows.
    const int64_t a_begin = reaching(rows.first + r + RB - 1, rows.first + r + RB - 1, rows.dil, rows.cells, rows.taps).first;
    const int64_t a_end = reaching(rows.first + r, rows.first + r, rows.dil, rows.cells, rows.taps).second;
    t.in = in + (r - r0) * t.row_step;
    t.out = out + (r - r0) * t.out_row_step;
    rows_of_tiles<T, Bytes, MB, RB>(nv, t, a_begin, std::max(a_begin, a_end), cols, out_w);
    if (r + RB >= r1) break;
  }
}

// MB outputs on rows [r0, r1): fewer than 4 outputs take two rows at a time, so that a tile
// still has 8-14 accumulators to hide the FMAs' latency.
template <typename T, int Bytes, int MB>
[[gnu::always_inline]] inline void outputs_on_rows(const TileArgs<T>& t, const AxisReach& rows, const AxisReach& cols,
                                                   int64_t r0, int64_t r1, int64_t out_w) {
  if constexpr (MB < 4) {
    if (r1 - r0 >= 2) return outputs_on_rows<T, Bytes, MB, 2>(t, rows, cols, r0, r1, out_w);
  }
  outputs_on_rows<T, Bytes, MB, 1>(t, rows, cols, r0, r1, out_w);
}

// `outputs` outputs of one group on rows [r0, r1), in tiles of 4, 2 and 1 outputs.
template <typename T, int Bytes>
[[gnu::always_inline]] inline void group_on_rows(TileArgs<T> t, int64_t outputs, const AxisReach& rows,
                                                 const AxisReach& cols, int64_t r0, int64_t r1, int64_t out_w) {
  int64_t o = 0;
  for (; o + 4 <= outputs; o += 4) {
    outputs_on_rows<T, Bytes, 4>(t, rows, cols, r0, r1, out_w);
    t.w += 4 * t.w_step;
    t.out += 4 * t.out_step;
  }
  if (o + 2 <= outputs) {
    outputs_on_rows<T, Bytes, 2>(t, rows, cols, r0, r1, out_w);
    t.w += 2 * t.w_step;
    t.out += 2 * t.out_step;
    o += 2;
  }
  if (o < outputs) outputs_on_rows<T, Bytes, 1>(t, rows, cols, r0, r1, out_w);
}

// The widest vectors that fit a row: Wide bytes, else 16, else one element.
template <typename T, int Wide>
[[gnu::always_inline]] inline void group_on_rows_any_width(const TileArgs<T>& t, int64_t outputs, const AxisReach& rows,
                                                           const AxisReach& cols, int64_t r0, int64_t r1, int64_t out_w) {
  if (out_w >= Lanes<T, Wide>::count) return group_on_rows<T, Wide>(t, outputs, rows, cols, r0, r1, out_w);
  if constexpr (Wide > 16) {
    if (out_w >= Lanes<T, 16>::count) return group_on_rows<T, 16>(t, outputs, rows, cols, r0, r1, out_w);
  }
  group_on_rows<T, int(sizeof(T))>(t, outputs, rows, cols, r0, r1, out_w);
}

// Rows [r0, r1) of item n, every group: `in` is the input cell of output (r0, 0)'s tap (0, 0)
// for channel 0, with the given steps (x itself, or a zero-padded copy of the rows read).
template <typename T, int Wide>
[[gnu::always_inline]] inline void rows_of_item(const DirectConv& d, const T* in, int64_t channel_step,
                                                int64_t row_step, const T* w, T* y_item, int64_t r0, int64_t r1) {
  const int64_t cg = d.channels / d.groups, og = d.outputs / d.groups, taps = cg * d.kh * d.kw;
  const AxisReach rows{-d.pad_h, d.dil_h, d.height, d.kh}, cols{-d.pad_w, d.dil_w, d.width, d.kw};
  for (int64_t g = 0; g < d.groups; ++g) {
    TileArgs<T> t;
    t.in = in + g * cg * channel_step;
    t.channel_step = channel_step, t.row_step = row_step;
    t.cg = cg, t.kh = d.kh, t.kw = d.kw, t.dil_h = d.dil_h, t.dil_w = d.dil_w;
    t.w = w + g * og * taps, t.w_step = taps;
    t.out = y_item + (g * og * d.out_h + r0) * d.out_w;
    t.out_step = d.out_h * d.out_w, t.out_row_step = d.out_w;
    t.b_begin = 0, t.b_end = d.kw;  // set per tile
    group_on_rows_any_width<T, Wide>(t, og, rows, cols, r0, r1, d.out_w);
  }
}

#ifdef KNETCNN_X86_DISPATCH
template <typename T>
__attribute__((target("avx2,fma"))) void rows_of_item_avx2(const DirectConv& d, const T* in, int64_t channel_step,
                                                             int64_t row_step, const T* w, T* y_item, int64_t r0,
                                                             int64_t r1) {
  rows_of_item<T, 32>(d, in, channel_step, row_step, w, y_item, r0, r1);
}
#endif

template <typename T>
void rows_of_item_any_isa(const DirectConv& d, const T* in, int64_t channel_step, int64_t row_step, const T* w,
                          T* y_item, int64_t r0, int64_t r1) {
#ifdef KNETCNN_X86_DISPATCH
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return rows_of_item_avx2(d, in, channel_step, row_step, w, y_item, r0, r1);
#endif
  rows_of_item<T, 16>(d, in, channel_step, row_step, w, y_item, r0, r1);
}

// The input rows and columns that output rows [r0, r1) read, as x cells: [top, top + rows) x
// [left, left + cols). Outside x they read zero.
struct Reach {
  int64_t top, rows, left, cols;
};

Reach reach(const DirectConv& d, int64_t r0, int64_t r1) {
  return {r0 - d.pad_h, r1 - r0 + (d.kh - 1) * d.dil_h, -d.pad_w, d.out_w + (d.kw - 1) * d.dil_w};
}

bool inside_x(const DirectConv& d, const Reach& at) {
  return at.top >= 0 && at.top + at.rows <= d.height && at.left >= 0 && at.left + at.cols <= d.width;
}

// copy[c][i][j] = x_item[c][top + i][left + j], zero outside x.
template <typename T>
void copy_padded(const DirectConv& d, const Reach& at, const T* x_item, T* copy) {
  const int64_t j0 = std::clamp<int64_t>(-at.left, 0, at.cols);                 // first column inside x
  const int64_t j1 = std::clamp<int64_t>(d.width - at.left, j0, at.cols);       // one past the last
  for (int64_t c = 0; c < d.channels; ++c) {
    for (int64_t i = 0; i < at.rows; ++i) {
      T* out = copy + (c * at.rows + i) * at.cols;
      const int64_t row = at.top + i;
      if (row < 0 || row >= d.height || j0 == j1) {
        std::fill(out, out + at.cols, T(0));
        continue;
      }
      const T* in = x_item + (c * d.height + row) * d.width + at.left;
      std::fill(out, out + j0, T(0));
      std::memcpy(out + j0, in + j0, sizeof(T) * (j1 - j0));
      std::fill(out + j1, out + at.cols, T(0));
    }
  }
}


}  // namespace


template <typename T>
void direct_conv2d(const DirectConv& d, const T* x, const T* w, T* y) {
  if (d.items == 0 || d.outputs == 0 || d.out_h == 0 || d.out_w == 0) return;
  if (d.channels == 0) {  // an empty sum
    std::fill(y, y + d.items * d.outputs * d.out_h * d.out_w, T(0));
    return;
  }
  // Tasks are (item, block of output rows): a few blocks per item where items are few, so that
  // every thread gets work.
  const int64_t blocks_per_item = std::clamp<int64_t>((16 + d.items - 1) / d.items, 1, d.out_h);
  const int64_t rows_per_block = (d.out_h + blocks_per_item - 1) / blocks_per_item;
  const int64_t blocks = (d.out_h + rows_per_block - 1) / rows_per_block;
  const int64_t fmas_per_task = rows_per_block * d.out_w * d.outputs * (d.channels / d.groups) * d.kh * d.kw;
  parallel_for(d.items * blocks, fmas_per_task, [&](int64_t begin, int64_t end) {
    std::vector<T> copy;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, r0 = (task % blocks) * rows_per_block;
      const int64_t r1 = std::min(d.out_h, r0 + rows_per_block);
      const T* x_item = x + n * d.channels * d.height * d.width;
      T* y_item = y + n * d.outputs * d.out_h * d.out_w;
      const Reach at = reach(d, r0, r1);
      if (inside_x(d, at)) {
        rows_of_item_any_isa(d, x_item + at.top * d.width + at.left, d.height * d.width, d.width, w, y_item, r0, r1);
        continue;
      }
      copy.resize(d.channels * at.rows * at.cols);
      copy_padded(d, at, x_item, copy.data());
      rows_of_item_any_isa(d, copy.data(), at.rows * at.cols, at.cols, w, y_item, r0, r1);
    }
  });
}

template void direct_conv2d<float>(const DirectConv&, const float*, const float*, float*);
template void direct_conv2d<double>(const DirectConv&, const double*, const double*, double*);

}  // namespace knetcnn::cpu
