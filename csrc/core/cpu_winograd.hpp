// Winograd F(2x2, 3x3) transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016) for stride-1, undilated 3x3 2-D convolutions on the CPU.
//
// Why: a 3x3 convolution through im2col costs 9 multiply-adds per output, channel and filter.
// Cut into 2x2 output tiles, each tile is 16 pointwise products of transformed 4x4 input tiles
// and transformed filters: 4 multiply-adds per output, as 16 GEMMs of (O, C) x (C, tiles) that
// the Python layer runs on BLAS. These kernels move data between the arrays and those GEMMs'
// matrices; the filter-side transforms (3x3 <-> 4x4, small) stay in NumPy (cpu/_winograd.py).
//
// The transforms, with d a 4x4 input tile, m a 4x4 product tile and g a 2x2 gradient tile:
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]    input:    B^T d B
//   A^T = [1 1 1 0; 0 1 -1 -1]                        output:   A^T m A  (2x2)
//   A   = the transpose of A^T                        gradient: A g A^T  (4x4, backward filter)
// Point p of a 4x4 transform is element (p / 4, p % 4). Each kernel runs its (item, channel) planes
// on parallel_for's threads where `parallel` is set, else on the calling thread.
#pragma once

#include <cstdint>

namespace knetcnn::cpu {

constexpr int64_t kWinogradPoints = 16;

// A 4-D C-contiguous array (items, channels, height, width) cut into tiles_h x tiles_w tiles a
// item: tile (i, j) reads or writes from row 2i - top, column 2j - left.
struct WinogradTiles {
  int64_t items = 0, channels = 0, height = 0, width = 0;
  int64_t tiles_h = 0, tiles_w = 0;
  int64_t top = 0, left = 0;
};

// items * tiles_h * tiles_w, the columns of the transformed matrices. Throws a ValueError-kind
// ArgumentError naming `function` unless every size is >= 0, top and left are in [0, 2], and no
// element count overflows 64 bits; with `covering` (winograd_output and winograd_gradient), also
// unless the tiles exactly cover the array from (0, 0): tiles_h = ceil(height / 2), tiles_w =
// ceil(width / 2), top = left = 0.
int64_t winograd_tile_count(const char* function, const WinogradTiles& t, bool covering);

// v[p][c][tile] = (B^T d B)[p] for the 4x4 tile d of x at (2i - top, 2j - left) in channel c,
// zero outside x; tile = (n * tiles_h + i) * tiles_w + j. v is (16, channels, tiles).
template <typename T>
void winograd_input(const T* x, const WinogradTiles& t, T* v, bool parallel);

// y[n][c][2i + r][2j + s] = (A^T m A)[r][s] for the cells inside y, with m[p] = m_points[p][c][tile]
// (top = left = 0). m_points is (16, channels, tiles); y is overwritten.
template <typename T>
void winograd_output(const T* m_points, const WinogradTiles& t, T* y, bool parallel);

// g[p][c][tile] = (A e A^T)[p] for the 2x2 tile e of dy at (2i, 2j) in channel c, zero outside dy
// (top = left = 0). g is (16, channels, tiles).
template <typename T>
void winograd_gradient(const T* dy, const WinogradTiles& t, T* g, bool parallel);

}  // namespace knetcnn::cpu
