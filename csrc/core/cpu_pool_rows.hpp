// The inner loops of max pooling over one row of windows (windows i = 0..n-1 of an output row,
// window i's cells in an input row at in[i * stride + j]), written so that compilers vectorize
// them: no branches (maxima of random data are unpredictable), no aliasing, and masks held in
// integers as wide as T so that every array in a loop has lanes of one width.
//
// They live in their own translation unit, out of line: inlined into the kernels, compilers lose
// the __restrict promises and stop vectorizing (measured: 4x slower).
//
// NaN-blind by design: comparisons with NaN are false, so a NaN never becomes a maximum here
// (except as a window's first cell). Callers flag the windows holding NaN (`nan` masks) and
// route those one by one with the careful scan.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace knetcnn::cpu::rows {

template <typename T>
using Mask = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;  // all ones or all zeros

// best[i] = max(best[i], column j of window i) (first: best[i] = it), nan[i] |= it is NaN.
// A strict > keeps the first of equal maxima.
void fold_max(const float* in, int64_t stride, float* best, Mask<float>* nan, int64_t n, bool first);
void fold_max(const double* in, int64_t stride, double* best, Mask<double>* nan, int64_t n, bool first);

// fold_max for 2-wide windows at stride 2 (the usual 2x2 pooling): both columns of a row at
// once, with a constant stride the compiler can deinterleave.
void fold_max_pairs(const float* in, float* best, Mask<float>* nan, int64_t n, bool first);
void fold_max_pairs(const double* in, double* best, Mask<double>* nan, int64_t n, bool first);

// Routing, in the windows' row-major cell order: column j of window i takes share[i] when it
// equals best[i] and no earlier cell took it (done[i]); out[i * stride] += that share.
void route(const float* in, int64_t stride, const float* best, const float* share, Mask<float>* done, float* out, int64_t n);
void route(const double* in, int64_t stride, const double* best, const double* share, Mask<double>* done, double* out, int64_t n);

// route for 2-wide windows at stride 2: both columns of a row at once.
void route_pairs(const float* in, const float* best, const float* share, Mask<float>* done, float* out, int64_t n);
void route_pairs(const double* in, const double* best, const double* share, Mask<double>* done, double* out, int64_t n);

}  // namespace knetcnn::cpu::rows
