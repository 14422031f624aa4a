// The inner loops of max pooling over a block of windows: `rows` output rows of n windows each;
// window (r, i) has its cells of one input row at in[r * in_row_step + i * stride + j], its
// scratch or output (best, nan, done, y) at [r * out_row_step + i] and its gradient (dy) at
// [r * grad_row_step + i]. Written so that compilers vectorize
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

struct Block {
  int64_t rows, n, in_row_step, out_row_step, grad_row_step;
};

template <typename T>
using Mask = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;  // all ones or all zeros

// best[i] = max(best[i], column j of window i) (first: best[i] = it), nan[i] |= it is NaN.
// A strict > keeps the first of equal maxima. Returns whether any window holds NaN.
bool fold_max(const float* in, int64_t stride, const Block& b, float* best, Mask<float>* nan, bool first);
bool fold_max(const double* in, int64_t stride, const Block& b, double* best, Mask<double>* nan, bool first);

// fold_max for 2-wide windows at stride 2 (the usual 2x2 pooling): both columns of a row at
// once, with a constant stride the compiler can deinterleave.
bool fold_max_pairs(const float* in, const Block& b, float* best, Mask<float>* nan, bool first);
bool fold_max_pairs(const double* in, const Block& b, double* best, Mask<double>* nan, bool first);

// Routing, in the windows' row-major cell order: column j of window i takes share[i] when it
// equals best[i] and no earlier cell took it (done[i]); out (laid out like in) += grad * alpha
// (grad laid out like best).
void route(const float* in, int64_t stride, const Block& b, const float* best, const float* grad, float alpha, Mask<float>* done, float* out);
void route(const double* in, int64_t stride, const Block& b, const double* best, const double* grad, double alpha, Mask<double>* done, double* out);

// route for 2-wide windows at stride 2: both columns of a row at once. assign: out = instead of
// out +=, for windows that are the only ones on their cells (out need not be zeroed first).
void route_pairs(const float* in, const Block& b, const float* best, const float* grad, float alpha, Mask<float>* done, float* out,
                 bool assign);
void route_pairs(const double* in, const Block& b, const double* best, const double* grad, double alpha, Mask<double>* done, double* out,
                 bool assign);

// 2x2 windows at stride 2, no padding, whole (the usual max pooling, fused): window (r, i) is
// cells 2i, 2i + 1 of input rows in + r * in_row_step and in_x further. max_2x2 writes
// out[r * out_row_step + i] = scale * its NaN-blind first maximum; max_2x2_backward assigns
// every cell of every window its share of grad * alpha (the first maximum's) or zero. Both
// return whether any window holds NaN: those windows' results (all four dx cells, for the
// backward) are arbitrary here, and the caller redoes them one by one.
bool max_2x2(const float* in, int64_t in_x, const Block& b, float scale, float* out);
bool max_2x2(const double* in, int64_t in_x, const Block& b, double scale, double* out);

// How max_2x2_backward moves memory; the results are the same whichever. cached: plain loads
// and stores. prefetch: also asks for in's and out's lines a few KiB ahead (arrays too large
// for the caches). stream: asks for in's lines ahead and writes out with non-temporal stores,
// which skip reading out's lines first and leave the caches to in (outputs too large to stay
// cached); only the AVX2 version streams, and only rows whose 32-byte steps are aligned (out
// and in_x * sizeof(T) multiples of 32), the others take prefetch.
enum class Traffic { cached, prefetch, stream };
bool max_2x2_backward(const float* in, int64_t in_x, const Block& b, const float* grad, float alpha, float* out,
                      Traffic traffic);
bool max_2x2_backward(const double* in, int64_t in_x, const Block& b, const double* grad, double alpha, double* out,
                      Traffic traffic);
// The Traffic for a 2x2 backward over x_bytes of x (dx as large, dy a quarter) on a CPU whose
// last-level cache holds cache_bytes.
Traffic traffic_for_2x2_backward(int64_t x_bytes, int64_t cache_bytes);

}  // namespace knetcnn::cpu::rows
