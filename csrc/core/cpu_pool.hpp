// Pooling on the CPU: max and average pooling and their gradients, on C-contiguous float or
// double arrays, for 1-3 spatial axes (lifted to 3). Python-free: the NumPy backend binds these
// through csrc/bindings/bind_cpu_pool.cpp.
//
// All kernels work in pool's forward terms of a PoolGeometry, on `planes` (batch, channel)
// planes: x holds planes of geometry.input's spatial shape, y and dy of geometry.output's (the
// caller may pass any block of whole planes, e.g. to convert float16 a block at a time, or a band
// of rows with its own geometry). For unpool (a transposed geometry) the same kernels run
// unchanged: unpool is an average-pool backward, unpoolx an average-pool forward.
//
// Semantics (semantics.md §1, identical to cuDNN's):
// - max pooling (modes 0 and 3) never counts padding. maxpoolingNanOpt=1: a window holding NaN
//   gives NaN; =0: NaNs are skipped, and a window of only NaNs gives `all_nan_value`.
// - average pooling divides by prod(window) (mode 1, padding counted as zeros) or by the number
//   of in-bounds cells (mode 2).
// - the max-pool gradient of a window goes to one cell: the first in-bounds cell, in row-major
//   order, holding the window's maximum (recomputed from x), or its first NaN when the window is
//   NaN (maxpoolingNanOpt=1); a window of only NaNs with maxpoolingNanOpt=0 routes nowhere.
#pragma once

#include "geometry.hpp"

namespace knetcnn::cpu {

// Scratch per thread, in windows: the kernels cut bands and column tiles to fit (a few hundred
// KiB). The backward kernels add overlapping windows group by group, so the Python layer, which
// cuts huge planes into bands that must sum in the same order, reads this (cpu/pool.py).
inline constexpr int64_t kPoolScratchWindows = 1 << 14;

// y = scale * pool(x), `mode` one of 0-3 (the geometry's own mode is not consulted, so unpoolx
// can pool with Knet's mapped mode). Writes every element of y.
template <typename T>
void pool_forward(const PoolGeometry& geometry, int64_t planes, int mode, const T* x, T* y, T scale, T all_nan_value);

// dx = the max-pool gradient for dy scaled by alpha. Writes every element of dx.
template <typename T>
void max_pool_backward(const PoolGeometry& geometry, int64_t planes, const T* x, const T* dy, T* dx, T alpha);

// dx = the average-pool gradient (mode 1 or 2) for dy scaled by `scale`. Writes every element of dx.
template <typename T>
void average_pool_backward(const PoolGeometry& geometry, int64_t planes, int mode, const T* dy, T* dx, T scale);

}  // namespace knetcnn::cpu
