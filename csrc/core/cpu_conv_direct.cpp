// Direct convolution (see cpu_conv_direct.hpp). Output rows are cut into tiles of MB outputs x
// RB rows x NV vectors of columns; a tile's accumulators stay in registers while every tap of
// every input channel adds into them (one vector load per row, column vector and tap, shared
// by the MB outputs; one scalar weight per output and tap). A tile of one output instead
// shares each load among the rows it serves, where AVX-512VL's 32 registers leave room
// (shared_rows_tile). The last tile of a row is moved back to end at the row's end rather than
// running a scalar tail: tiles only assign, so computing a few columns twice is harmless.
#include "cpu_conv_direct.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu_conv_columns.hpp"
#include "cpu_isa.hpp"
#include "cpu_parallel.hpp"
#include "int_division.hpp"


// The vector helpers take and return vectors wider than the baseline's registers; they are
// always inlined, so the ABI note GCC gives for such signatures (-Wpsabi) concerns no real call.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace knetcnn::cpu {
namespace {

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

// Vectors of columns per tile for MB outputs x RB rows, within Regs vector registers (16 for
// SSE and AVX2, 32 with AVX-512VL). tile(): MB * RB * NV accumulators, one weight, and NV inputs
// where MB > 1 shares them (one output's FMAs take their input straight from memory).
// shared_rows_tile(): RB * NV accumulators, RB weights and the input in flight.
template <int Regs, int MB, int RB, bool SharedRows>
constexpr int kMaxVectors =
    std::min(7, SharedRows ? (Regs - RB - 1) / RB : (Regs - 1) / (MB * RB + (MB > 1 ? 1 : 0)));

// Rows per shared-rows tile (0: none) with Regs registers. With 16, three rows get four vectors
// (12 accumulators, 3 weights and the input fill all 16): LeNet-1's conv4x measured slower that
// way on AVX2 (1.3-1.4 ms against 1.0 with tile()), so only AVX-512VL's 32 registers (three rows
// of seven vectors) take them.
template <int Regs>
constexpr int kSharedRows = Regs >= 32 ? 3 : 0;

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

// One pass of shared_rows_tile(): input row r (counted from the tile's first output row's tap
// 0) of every channel into output rows [Lo, Hi), row i through tap r - i. Each input vector is
// loaded once for all of them.
template <typename T, int Bytes, int RB, int NV, int Lo, int Hi>
[[gnu::always_inline]] inline void shared_row_pass(typename Lanes<T, Bytes>::V (&acc)[RB][NV], int64_t r,
                                                   const TileArgs<T>& t) {
  using V = typename Lanes<T, Bytes>::V;
  constexpr int64_t lanes = Lanes<T, Bytes>::count;
  for (int64_t c = 0; c < t.cg; ++c) {
    const T* row = t.in + c * t.channel_step + r * t.row_step;
    const T* weights = t.w + c * t.kh * t.kw;
    for (int64_t b = t.b_begin; b < t.b_end; ++b) {
      T weight[RB];
#pragma GCC unroll 8
      for (int i = Lo; i < Hi; ++i) weight[i] = weights[(r - i) * t.kw + b];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const V in = load<V>(row + b * t.dil_w + v * lanes);
#pragma GCC unroll 8
        for (int i = Lo; i < Hi; ++i) acc[i][v] += weight[i] * in;
      }
    }
  }
}

// shared_row_pass for rows [lo, hi) known at run time (0 <= lo < hi <= RB).
template <typename T, int Bytes, int RB, int NV, int Lo = 0, int Hi = 1>
[[gnu::always_inline]] inline void shared_row_pass(int lo, int hi, typename Lanes<T, Bytes>::V (&acc)[RB][NV],
                                                   int64_t r, const TileArgs<T>& t) {
  if (lo == Lo && hi == Hi) return shared_row_pass<T, Bytes, RB, NV, Lo, Hi>(acc, r, t);
  if constexpr (Hi < RB) return shared_row_pass<T, Bytes, RB, NV, Lo, Hi + 1>(lo, hi, acc, r, t);
  if constexpr (Hi == RB && Lo + 1 < RB) return shared_row_pass<T, Bytes, RB, NV, Lo + 1, Lo + 2>(lo, hi, acc, r, t);
}

// A tile of one output, RB rows x NV vectors, at row dilation 1: what tile<T, Bytes, 1, RB, NV>
// computes, in fewer loads. Output row i's tap a reads input row i + a, so input row r serves
// rows r - a for every tap a: each vector is loaded once per input row and column tap and feeds
// up to RB rows' FMAs (about 0.6 loads per FMA for LeNet's 5 x 5 taps, against tile()'s one
// load per FMA, which held one output's tiles to 13 GFMA/s a thread where four-output tiles
// reached 18 on this Zen 4). Input rows [r_begin, r_end) of the kh + RB - 1 that the tile reads
// are inside x; the others add nothing.
template <typename T, int Bytes, int RB, int NV>
[[gnu::always_inline]] inline void shared_rows_tile(const TileArgs<T>& t, int64_t r_begin, int64_t r_end) {
  using V = typename Lanes<T, Bytes>::V;
  constexpr int64_t lanes = Lanes<T, Bytes>::count;
  V acc[RB][NV];
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  for (int64_t r = r_begin; r < r_end; ++r) {
    // The rows that input row r reaches: r - i is a tap.
    const int lo = static_cast<int>(std::max<int64_t>(0, r - t.kh + 1));
    const int hi = static_cast<int>(std::min<int64_t>(RB, r + 1));
    shared_row_pass<T, Bytes, RB, NV>(lo, hi, acc, r, t);
  }
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(t.out + i * t.out_row_step + v * lanes, &acc[i][v], sizeof(V));
}

// Where a block of output rows or columns reads x along one axis.
struct AxisReach {
  int64_t first;  // x's cell read by output 0's tap 0
  int64_t dil, cells, taps;
};

// RB output rows (columns [0, out_w)) in tiles of NV vectors; the last tile is moved back to
// end at out_w, which must be >= NV * lanes. SharedRows: shared_rows_tile (MB = 1) with the
// input rows [a_begin, a_end) inside x, else tile with the taps [a_begin, a_end) that reach x.
template <typename T, int Bytes, int MB, int RB, bool SharedRows, int NV>
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
    if constexpr (SharedRows) {
      shared_rows_tile<T, Bytes, RB, NV>(t, a_begin, a_end);
    } else {
      tile<T, Bytes, MB, RB, NV>(t, a_begin, a_end);
    }
    if (j + width >= out_w) break;
  }
}

// rows_of_tiles with NV chosen at run time.
template <typename T, int Bytes, int Regs, int MB, int RB, bool SharedRows, int NV = 1>
[[gnu::always_inline]] inline void rows_of_tiles(int nv, const TileArgs<T>& t, int64_t a_begin, int64_t a_end,
                                                 const AxisReach& cols, int64_t out_w) {
  if constexpr (NV < kMaxVectors<Regs, MB, RB, SharedRows>) {
    if (nv > NV) return rows_of_tiles<T, Bytes, Regs, MB, RB, SharedRows, NV + 1>(nv, t, a_begin, a_end, cols, out_w);
  }
  rows_of_tiles<T, Bytes, MB, RB, SharedRows, NV>(t, a_begin, a_end, cols, out_w);
}

// Vectors per tile of MB outputs x RB rows on rows of out_w columns: the fewest cycles per row
// by a rough model of a core that issues two FMAs and two loads a cycle, with FMAs of 4 cycles'
// latency (a tap's pass over a tile takes at least that long). Ties go to the wider tile.
// A pass of a shared-rows tile loads NV vectors and RB weights for RB * NV FMAs.
int vectors_per_tile(int mb, int rb, bool shared_rows, int most, int64_t lanes, int64_t out_w) {
  int best = 1;
  double best_cost = 0;
  most = static_cast<int>(std::min<int64_t>(most, out_w / lanes));
  for (int nv = 1; nv <= most; ++nv) {
    const int64_t tiles = (out_w + nv * lanes - 1) / (nv * lanes);
    const double fmas = mb * rb * nv, loads = shared_rows ? nv + rb : rb * nv + mb;
    const double cost = double(tiles) * std::max({fmas / 2, loads / 2, 4.0});
    if (nv == 1 || cost <= best_cost) best = nv, best_cost = cost;
  }
  return best;
}

// MB outputs (t.w, t.out) on output rows [r0, r1), RB rows at a time (the last group of rows
// moved back to end at r1, which needs r1 - r0 >= RB; t.in is row r0's).
template <typename T, int Bytes, int Regs, int MB, int RB, bool SharedRows>
[[gnu::always_inline]] inline void outputs_on_rows(TileArgs<T> t, const AxisReach& rows, const AxisReach& cols,
                                                   int64_t r0, int64_t r1, int64_t out_w) {
  constexpr int most = kMaxVectors<Regs, MB, RB, SharedRows>;
  const int nv = vectors_per_tile(MB, RB, SharedRows, most, Lanes<T, Bytes>::count, out_w);
  const T* in = t.in;
  T* out = t.out;
  for (int64_t r = r0;; r += RB) {
    r = std::min(r, r1 - RB);
    int64_t a_begin, a_end;
    if constexpr (SharedRows) {  // the input rows inside x (rows.dil is 1)
      const int64_t first = rows.first + r, read = rows.taps + RB - 1;
      a_begin = std::clamp<int64_t>(-first, 0, read);
      a_end = std::clamp<int64_t>(rows.cells - first, a_begin, read);
    } else {  // the taps that reach x from any of these rows
      a_begin = reaching(rows.first + r + RB - 1, rows.first + r + RB - 1, rows.dil, rows.cells, rows.taps).first;
      a_end = std::max(a_begin, reaching(rows.first + r, rows.first + r, rows.dil, rows.cells, rows.taps).second);
    }
    t.in = in + (r - r0) * t.row_step;
    t.out = out + (r - r0) * t.out_row_step;
    rows_of_tiles<T, Bytes, Regs, MB, RB, SharedRows>(nv, t, a_begin, a_end, cols, out_w);
    if (r + RB >= r1) break;
  }
}

// MB outputs on rows [r0, r1) in tile(): fewer than 4 outputs take two rows at a time, so that
// a tile still has 8-14 accumulators to hide the FMAs' latency.
template <typename T, int Bytes, int Regs, int MB>
[[gnu::always_inline]] inline void outputs_on_rows_unshared(const TileArgs<T>& t, const AxisReach& rows,
                                                            const AxisReach& cols, int64_t r0, int64_t r1,
                                                            int64_t out_w) {
  if constexpr (MB < 4) {
    if (r1 - r0 >= 2) return outputs_on_rows<T, Bytes, Regs, MB, 2, false>(t, rows, cols, r0, r1, out_w);
  }
  outputs_on_rows<T, Bytes, Regs, MB, 1, false>(t, rows, cols, r0, r1, out_w);
}

// MB outputs on rows [r0, r1): one output at row dilation 1 takes shared-rows tiles where the
// registers allow them, everything else tile().
template <typename T, int Bytes, int Regs, int MB>
[[gnu::always_inline]] inline void outputs_on_rows(const TileArgs<T>& t, const AxisReach& rows, const AxisReach& cols,
                                                   int64_t r0, int64_t r1, int64_t out_w) {
  constexpr int shared_rows = kSharedRows<Regs>;
  if constexpr (MB == 1 && shared_rows > 0) {
    if (t.dil_h == 1 && t.kh > 1 && r1 - r0 >= shared_rows) {
      // Whole groups of rows; the rest (fewer than a group) in tile(), rather than a group moved
      // back, which would compute up to two rows twice at the cost of three.
      const int64_t whole = r0 + (r1 - r0) / shared_rows * shared_rows;
      outputs_on_rows<T, Bytes, Regs, 1, shared_rows, true>(t, rows, cols, r0, whole, out_w);
      if (whole == r1) return;
      TileArgs<T> rest = t;
      rest.in += (whole - r0) * t.row_step;
      rest.out += (whole - r0) * t.out_row_step;
      return outputs_on_rows_unshared<T, Bytes, Regs, 1>(rest, rows, cols, whole, r1, out_w);
    }
  }
  outputs_on_rows_unshared<T, Bytes, Regs, MB>(t, rows, cols, r0, r1, out_w);
}

// `outputs` outputs of one group on rows [r0, r1), in tiles of 4, 2 and 1 outputs.
template <typename T, int Bytes, int Regs>
[[gnu::always_inline]] inline void group_on_rows(TileArgs<T> t, int64_t outputs, const AxisReach& rows,
                                                 const AxisReach& cols, int64_t r0, int64_t r1, int64_t out_w) {
  int64_t o = 0;
  for (; o + 4 <= outputs; o += 4) {
    outputs_on_rows<T, Bytes, Regs, 4>(t, rows, cols, r0, r1, out_w);
    t.w += 4 * t.w_step;
    t.out += 4 * t.out_step;
  }
  if (o + 2 <= outputs) {
    outputs_on_rows<T, Bytes, Regs, 2>(t, rows, cols, r0, r1, out_w);
    t.w += 2 * t.w_step;
    t.out += 2 * t.out_step;
    o += 2;
  }
  if (o < outputs) outputs_on_rows<T, Bytes, Regs, 1>(t, rows, cols, r0, r1, out_w);
}

// The widest vectors that fit a row: Wide bytes, else 16, else one element.
template <typename T, int Wide, int Regs>
[[gnu::always_inline]] inline void group_on_rows_any_width(const TileArgs<T>& t, int64_t outputs, const AxisReach& rows,
                                                           const AxisReach& cols, int64_t r0, int64_t r1, int64_t out_w) {
  if (out_w >= Lanes<T, Wide>::count) return group_on_rows<T, Wide, Regs>(t, outputs, rows, cols, r0, r1, out_w);
  if constexpr (Wide > 16) {
    if (out_w >= Lanes<T, 16>::count) return group_on_rows<T, 16, Regs>(t, outputs, rows, cols, r0, r1, out_w);
  }
  group_on_rows<T, int(sizeof(T)), Regs>(t, outputs, rows, cols, r0, r1, out_w);
}

// Rows [r0, r1) of item n, every group: `in` is the input cell of output (r0, 0)'s tap (0, 0)
// for channel 0, with the given steps (x itself, or a zero-padded copy of the rows read).
// Vectors of Wide bytes in Regs registers.
template <typename T, int Wide, int Regs>
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
    group_on_rows_any_width<T, Wide, Regs>(t, og, rows, cols, r0, r1, d.out_w);
  }
}

#ifdef KNETCNN_X86_DISPATCH
template <typename T>
__attribute__((target("avx2,fma"))) void rows_of_item_avx2(const DirectConv& d, const T* in, int64_t channel_step,
                                                             int64_t row_step, const T* w, T* y_item, int64_t r0,
                                                             int64_t r1) {
  rows_of_item<T, 32, 16>(d, in, channel_step, row_step, w, y_item, r0, r1);
}

// AVX-512VL: the same 32-byte vectors in 32 registers. (Its 64-byte vectors would fit LeNet's
// 28-column rows worse, and some CPUs slow their clocks for them.)
template <typename T>
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void rows_of_item_avx512(const DirectConv& d, const T* in,
                                                                               int64_t channel_step, int64_t row_step,
                                                                               const T* w, T* y_item, int64_t r0,
                                                                               int64_t r1) {
  rows_of_item<T, 32, 32>(d, in, channel_step, row_step, w, y_item, r0, r1);
}
#endif

template <typename T>
void rows_of_item_baseline(const DirectConv& d, const T* in, int64_t channel_step, int64_t row_step, const T* w,
                           T* y_item, int64_t r0, int64_t r1) {
  rows_of_item<T, 16, 16>(d, in, channel_step, row_step, w, y_item, r0, r1);
}

// Whether some tiles hold one output and can share rows (an odd number of outputs per group, in
// tiles of 4, 2 and 1; row dilation 1; kernels of two rows or more). Only those problems take
// the AVX-512VL version: on the others it bought nothing, and LeNet-1's conv4 in float32 ran
// 10-15% slower than in the AVX2 version.
bool has_one_output_tiles_sharing_rows(const DirectConv& d) {
  return (d.outputs / d.groups) % 2 == 1 && d.dil_h == 1 && d.kh > 1;
}

template <typename T>
void rows_of_item_any_isa(const DirectConv& d, const T* in, int64_t channel_step, int64_t row_step, const T* w,
                          T* y_item, int64_t r0, int64_t r1) {
  const DirectIsa isa = direct_isa();
#ifdef KNETCNN_X86_DISPATCH
  if (isa == DirectIsa::Avx512 && has_one_output_tiles_sharing_rows(d))
    return rows_of_item_avx512(d, in, channel_step, row_step, w, y_item, r0, r1);
  if (isa >= DirectIsa::Avx2) return rows_of_item_avx2(d, in, channel_step, row_step, w, y_item, r0, r1);
#endif
  rows_of_item_baseline(d, in, channel_step, row_step, w, y_item, r0, r1);
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

// Copies and zero fills within a row, inline in 32-byte pieces: rows are short (LeNet's conv4x
// copies 24 values into each of 640 rows an item), and a libc call for each cost a fifth of the
// whole convolution. The last piece of a copy overlaps the one before it instead of a loop.
template <typename T>
[[gnu::always_inline]] inline void copy_short(T* out, const T* in, int64_t n) {
  constexpr int64_t piece = 32 / sizeof(T);
  if (n < piece) {
    for (int64_t i = 0; i < n; ++i) out[i] = in[i];
    return;
  }
  for (int64_t i = 0; i + piece < n; i += piece) std::memcpy(out + i, in + i, 32);
  std::memcpy(out + n - piece, in + n - piece, 32);
}

template <typename T>
[[gnu::always_inline]] inline void zero_short(T* out, int64_t n) {
  constexpr int64_t piece = 32 / sizeof(T);
  static constexpr T zeros[piece] = {};
  for (int64_t i = 0; i < n; i += piece) copy_short(out + i, zeros, std::min(n - i, piece));
}

// copy[c][i][j] = x_item[c][top + i][left + j], zero outside x.
template <typename T>
void copy_padded(const DirectConv& d, const Reach& at, const T* x_item, T* copy) {
  const int64_t j0 = std::clamp<int64_t>(-at.left, 0, at.cols);              // first column inside x
  const int64_t j1 = std::clamp<int64_t>(d.width - at.left, j0, at.cols);    // one past the last
  int64_t i0 = std::clamp<int64_t>(-at.top, 0, at.rows);                      // first row inside x
  const int64_t i1 = std::clamp<int64_t>(d.height - at.top, i0, at.rows);     // one past the last
  if (j0 == j1) i0 = i1;  // no column of x: every row is zeros
  for (int64_t c = 0; c < d.channels; ++c) {
    T* channel = copy + c * at.rows * at.cols;
    std::fill(channel, channel + i0 * at.cols, T(0));
    for (int64_t i = i0; i < i1; ++i) {
      T* out = channel + i * at.cols;
      const T* in = x_item + (c * d.height + at.top + i) * d.width + at.left;
      zero_short(out, j0);
      copy_short(out + j0, in + j0, j1 - j0);
      zero_short(out + j1, at.cols - j1);
    }
    std::fill(channel + i1 * at.cols, channel + at.rows * at.cols, T(0));
  }
}


std::atomic<DirectIsa> isa_cap{DirectIsa::Avx512};

}  // namespace

std::pair<int64_t, int64_t> reaching(int64_t first_lo, int64_t first_hi, int64_t dil, int64_t cells, int64_t k) {
  const int64_t begin = std::clamp<int64_t>(ceil_div(-first_hi, dil), 0, k);
  const int64_t end = std::clamp<int64_t>(floor_div(cells - 1 - first_lo, dil) + 1, begin, k);
  return {begin, end};
}

DirectIsa widest_direct_isa() {
#ifdef KNETCNN_X86_DISPATCH
  static const DirectIsa widest = [] {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return DirectIsa::Baseline;
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl")) return DirectIsa::Avx2;
    return DirectIsa::Avx512;
  }();
  return widest;
#else
  return DirectIsa::Baseline;
#endif
}

void cap_direct_isa(DirectIsa widest) { isa_cap.store(widest); }

DirectIsa direct_isa() { return std::min(widest_direct_isa(), isa_cap.load(std::memory_order_relaxed)); }

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
  const bool scatter_columns = column_scatter_fits<T>(d);
  parallel_for(d.items * blocks, fmas_per_task, [&](int64_t begin, int64_t end) {
    std::vector<T> copy;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, r0 = (task % blocks) * rows_per_block;
      const int64_t r1 = std::min(d.out_h, r0 + rows_per_block);
      const T* x_item = x + n * d.channels * d.height * d.width;
      T* y_item = y + n * d.outputs * d.out_h * d.out_w;
      if (scatter_columns) {
        column_scatter_rows(d, x_item, w, y_item, r0, r1);
        continue;
      }
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
