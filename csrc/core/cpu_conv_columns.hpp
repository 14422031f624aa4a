// Direct convolution with one output per group (conv4x of a one-channel input, LeNet's first
// layer; depthwise convolutions), input columns in registers: each input row's vectors are
// loaded once and multiplied by every column tap of the kernel, each tap into its own
// accumulators, which are then added into the output row shifted by that tap. Unlike the output
// tiles of cpu_conv_direct.cpp it multiplies no padding: LeNet's conv4x reads 24 columns of dy
// for 28 of dx, where output tiles spend 14% of their multiply-adds on dy's zero border.
#pragma once

#include <cstdint>

#include "cpu_conv_direct.hpp"

namespace knetcnn::cpu {

// Whether column_scatter_rows serves d on this CPU: one output per group, AVX-512VL (its 32
// registers hold a tile's accumulators), kernels of at most 8 columns, and rows of x at least
// one tile wide.
template <typename T>
bool column_scatter_fits(const DirectConv& d);

// Output rows [r0, r1) of every output of one item: y_item (outputs, out_h, out_w) = the
// convolution of x_item (channels, height, width), C-contiguous, with w. Reads x in place (no
// padded copy). Requires column_scatter_fits<T>(d).
template <typename T>
void column_scatter_rows(const DirectConv& d, const T* x_item, const T* w, T* y_item, int64_t r0, int64_t r1);

}  // namespace knetcnn::cpu
