#include "cpu_conv_columns.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_isa.hpp"
#include "int_division.hpp"

// The vector helpers take vectors wider than the baseline's registers; they are always inlined.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace knetcnn::cpu {
namespace {

// Vectors of columns per tile for a kernel of KW columns: KW * NV accumulators in 30 of the 32
// registers. LeNet's conv4x (KW = 5), one thread, 64 items: NV = 6 0.89 ms, 3 0.99, 2 1.04.
template <int KW>
constexpr int kVectors = std::clamp(30 / KW, 1, 8);

constexpr int kMaxColumns = 8;
constexpr int64_t kMinPasses = 48;  // input channels x row taps per scatter (see column_scatter_fits)
constexpr int64_t kVectorBytes = 32;

template <typename T>
constexpr int64_t kLanes = kVectorBytes / int64_t(sizeof(T));

template <typename T>
constexpr int64_t tile_width(int64_t kw) {
  constexpr int64_t v[kMaxColumns + 1] = {0, kVectors<1>, kVectors<2>, kVectors<3>, kVectors<4>,
                                          kVectors<5>, kVectors<6>, kVectors<7>, kVectors<8>};
  return v[kw] * kLanes<T>;
}

#ifdef KNETCNN_X86_DISPATCH
// One output row i of group g into `line` (zeroed; output column j at line[j - j_lo]). Tiles of
// NV vectors walk the input row; the last one is moved back to end at the row's end, and its
// lanes that the tile before it covered are left out of the scatter.
template <typename T, int KW>
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void scatter_row(const DirectConv& d, const T* x_group,
                                                                      const T* w_group, int64_t i, T* line,
                                                                      int64_t j_lo) {
  typedef T V __attribute__((vector_size(kVectorBytes)));
  constexpr int NV = kVectors<KW>;
  constexpr int64_t lanes = kLanes<T>, width = NV * lanes;
  const int64_t cg = d.channels / d.groups, plane = d.height * d.width;
  const int64_t first = i - d.pad_h;  // tap 0's input row
  const auto [a_begin, a_end] = reaching(first, first, d.dil_h, d.height, d.kh);
  if (a_begin == a_end) return;
  for (int64_t done = 0, m0 = 0; done < d.width; done = m0 + width) {
    m0 = std::min(done, d.width - width);
    V acc[KW][NV];
#pragma GCC unroll 8
    for (int b = 0; b < KW; ++b)
#pragma GCC unroll 8
      for (int q = 0; q < NV; ++q) acc[b][q] = V{};
    for (int64_t c = 0; c < cg; ++c) {
      for (int64_t a = a_begin; a < a_end; ++a) {
        const T* row = x_group + c * plane + (i - d.pad_h + a * d.dil_h) * d.width + m0;
        const T* weights = w_group + (c * d.kh + a) * KW;
        V in[NV];
#pragma GCC unroll 8
        for (int q = 0; q < NV; ++q) std::memcpy(&in[q], row + q * lanes, sizeof(V));
#pragma GCC unroll 8
        for (int b = 0; b < KW; ++b) {
          const T weight = weights[b];
#pragma GCC unroll 8
          for (int q = 0; q < NV; ++q) acc[b][q] += weight * in[q];
        }
      }
    }
    // Input column m, tap b lands on output column m + pad_w - b * dil_w.
    for (int b = 0; b < KW; ++b) {
      T* out = line + m0 + d.pad_w - b * d.dil_w - j_lo;
      for (int q = 0; q < NV; ++q) {
        if (m0 + (q + 1) * lanes <= done) continue;  // lanes the tile before added already
        if (m0 + q * lanes >= done) {
          V sum;
          std::memcpy(&sum, out + q * lanes, sizeof(V));
          sum += acc[b][q];
          std::memcpy(out + q * lanes, &sum, sizeof(V));
        } else {
          for (int64_t l = done - m0 - q * lanes; l < lanes; ++l) out[q * lanes + l] += acc[b][q][l];
        }
      }
    }
  }
}

template <typename T>
using RowFn = void (*)(const DirectConv&, const T*, const T*, int64_t, T*, int64_t);

template <typename T>
RowFn<T> scatter_row_for(int64_t kw) {
  constexpr RowFn<T> table[kMaxColumns + 1] = {nullptr,
                                               scatter_row<T, 1>,
                                               scatter_row<T, 2>,
                                               scatter_row<T, 3>,
                                               scatter_row<T, 4>,
                                               scatter_row<T, 5>,
                                               scatter_row<T, 6>,
                                               scatter_row<T, 7>,
                                               scatter_row<T, 8>};
  return table[kw];
}
#endif

}  // namespace

template <typename T>
bool column_scatter_fits(const DirectConv& d) {
#ifdef KNETCNN_X86_DISPATCH
  if (direct_isa() != DirectIsa::Avx512 || d.outputs != d.groups || d.kw < 1 || d.kw > kMaxColumns) return false;
  // Each tile scatters its accumulators once per output row, after a pass per input channel and
  // row tap; the last tile of a row, moved back, recomputes columns. Measured against the output
  // tiles (float64): LeNet's conv4x (20 x 5 passes, 24 columns: one tile) 0.63x the time; 4
  // channels x 5 rows, 32 columns (two tiles of 24) 1.6x; depthwise 3 x 3 and 5 x 5 1.4-2x;
  // 16 channels x 3 rows, 32 columns (one tile) 0.5x.
  const int64_t width = tile_width<T>(d.kw), tiles = ceil_div(d.width, width);
  return (d.channels / d.groups) * d.kh >= kMinPasses && d.width >= width && tiles * width * 8 <= d.width * 9;
#else
  (void)d;
  return false;
#endif
}

template <typename T>
void column_scatter_rows(const DirectConv& d, const T* x_item, const T* w, T* y_item, int64_t r0, int64_t r1) {
#ifdef KNETCNN_X86_DISPATCH
  // Output columns that input columns reach: [pad_w - (kw - 1) * dil_w, width + pad_w).
  const int64_t j_lo = std::min<int64_t>(0, d.pad_w - (d.kw - 1) * d.dil_w);
  const int64_t j_hi = std::max<int64_t>(d.out_w, d.width + d.pad_w);
  std::vector<T> line(j_hi - j_lo);
  const RowFn<T> row = scatter_row_for<T>(d.kw);
  const int64_t cg = d.channels / d.groups;
  for (int64_t g = 0; g < d.groups; ++g) {
    const T* x_group = x_item + g * cg * d.height * d.width;
    const T* w_group = w + g * cg * d.kh * d.kw;
    for (int64_t i = r0; i < r1; ++i) {
      std::fill(line.begin(), line.end(), T(0));
      row(d, x_group, w_group, i, line.data(), j_lo);
      std::memcpy(y_item + (g * d.out_h + i) * d.out_w, line.data() - j_lo, d.out_w * sizeof(T));
    }
  }
#else
  (void)d, (void)x_item, (void)w, (void)y_item, (void)r0, (void)r1;
#endif
}

template bool column_scatter_fits<float>(const DirectConv&);
template bool column_scatter_fits<double>(const DirectConv&);
template void column_scatter_rows<float>(const DirectConv&, const float*, const float*, float*, int64_t, int64_t);
template void column_scatter_rows<double>(const DirectConv&, const double*, const double*, double*, int64_t,
                                          int64_t);

}  // namespace knetcnn::cpu
