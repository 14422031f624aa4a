// The CPU convolution's data movement: im2col (gather x into GEMM columns) and its adjoint col2im
// (scatter-add columns into dx). The GEMMs themselves stay with BLAS (the Python layer).
//
// Everything is in conv4's forward terms with the spatial axes lifted to three (callers prepend
// size-1 axes: kernel 1, stride 1, dilation 1, padding 0). A call works on one block: a box of
// output positions [out_begin, out_end) for the items of a volume (items, C, S0, S1, S2) that
// holds input cells [origin, origin + S) in unpadded input coordinates. Cells outside the volume
// read as zero (gathers) or are dropped (scatters): that is how padding is handled, so the caller
// passes a volume covering every input cell the box reads and never builds a padded copy.
//
// Columns are C-contiguous (C, K0, K1, K2, items, B0, B1, B2), B = out_end - out_begin: row
// c*prod(K) + k of the (C*prod(K), items*prod(B)) GEMM operand; a group's rows are contiguous.
#pragma once

#include <array>
#include <cstdint>

namespace knetcnn::cpu {

using Axes3 = std::array<int64_t, 3>;

struct ConvWindow {
  Axes3 kernel{1, 1, 1}, stride{1, 1, 1}, dilation{1, 1, 1}, padding{0, 0, 0};
  Axes3 origin{0, 0, 0};  // unpadded input coordinates of the volume's spatial cell (0, 0, 0)
  Axes3 out_begin{0, 0, 0}, out_end{0, 0, 0};
};

// A strided (items, channels, S0, S1, S2) view; strides in elements, of any sign.
template <typename T>
struct Volume {
  T* data = nullptr;
  std::array<int64_t, 5> shape{};
  std::array<int64_t, 5> strides{};
};

// Elements of the columns a window gathers from a volume with `items` items and `channels`
// channels. Throws a ValueError-kind ArgumentError naming `function` if the window is malformed
// (kernel, stride or dilation < 1, padding < 0, out_begin < 0 or > out_end) or if its
// coordinates or the column count would overflow 64 bits.
int64_t column_elements(const char* function, const ConvWindow& window, int64_t items, int64_t channels);

// Throws (as above) unless the strides, sorted, each step past all that the smaller ones span: then
// distinct indices address distinct elements, as col2im's adds (and its threads, which write
// disjoint (item, channel) planes) need.
void check_no_self_overlap(const char* function, const char* argument, const std::array<int64_t, 5>& shape,
                           const std::array<int64_t, 5>& strides);

// col = the window's columns of x. `col` holds column_elements(...) elements. With `parallel`,
// parallel_for's threads split the (channel, kernel index) pairs.
template <typename T>
void im2col(const Volume<const T>& x, const ConvWindow& window, T* col, bool parallel);

// Whether im2col and col2im go through each plane's rows split into their phases (windows
// strided along the last axis whose cells each land in several columns; see cpu_conv.cpp). The
// result is the same either way; tests use this to cover both paths.
template <typename T>
bool splits_into_phases(const Volume<const T>& x, const ConvWindow& window);

// dx += the adjoint of im2col applied to col. dx must not overlap itself. With `parallel`,
// parallel_for's threads split the channels (and items, if there are fewer channels than
// threads): their dx planes are disjoint.
template <typename T>
void col2im(const T* col, const ConvWindow& window, const Volume<T>& dx, bool parallel);

}  // namespace knetcnn::cpu
