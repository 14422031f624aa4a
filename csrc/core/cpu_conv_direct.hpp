// Direct 2-D convolution at stride 1 for short reductions: no im2col, no BLAS.
//
// y[n, o, r, j] = sum over c of o's group, a < kh, b < kw of
//                 w[o, c, a, b] * x[n, g*cg + c, r - pad_h + a*dil_h, j - pad_w + b*dil_w]
// with x zero outside its bounds. w is used as given (callers flip it and fold alpha in).
// Padding may be negative (the output starts inside x) and the output size is free: cells no tap
// reaches stay zero, so conv4x / deconv4 run here as this convolution of dy with w's flipped
// transpose. 1-D callers pass height 1.
//
// Why: when each output sums few terms (LeNet's first layer: 1 channel x 25 taps), im2col's
// copies cost as much as the thin BLAS product. Here each output row is computed in registers
// from x's rows, which stay in L1. (The Python layer sends it reductions of up to 500 terms in
// float64 and 64 in float32; cpu/_direct.py has what was measured beyond.)
#pragma once

#include <cstdint>
#include <utility>

namespace knetcnn::cpu {

struct DirectConv {
  int64_t items = 0, channels = 0, height = 0, width = 0;  // x: (items, channels, height, width)
  int64_t outputs = 0, groups = 1, kh = 1, kw = 1;         // w: (outputs, channels / groups, kh, kw)
  int64_t pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int64_t out_h = 0, out_w = 0;                            // y: (items, outputs, out_h, out_w)
};

// Throws a ValueError-kind ArgumentError naming `function` unless the sizes are consistent:
// all >= 0 (kh, kw, dil_h, dil_w, groups >= 1), channels and outputs divisible by groups, and
// no index or element count overflows 64 bits.
void check_direct_conv(const char* function, const DirectConv& d);

// y = the convolution above. x, w, y C-contiguous with the shapes above; y is overwritten (it
// need not be initialized). Items and output rows are split over parallel_for's threads.
template <typename T>
void direct_conv2d(const DirectConv& d, const T* x, const T* w, T* y);

// Taps [begin, end) of a kernel of k taps at dilation `dil` that reach cells [0, cells) from
// outputs whose tap 0 reads cells first_lo..first_hi: the other taps read only padding.
std::pair<int64_t, int64_t> reaching(int64_t first_lo, int64_t first_hi, int64_t dil, int64_t cells, int64_t k);

// The kernel's versions, by instruction set: SSE2's 16-byte vectors; AVX2's 32-byte vectors;
// AVX-512VL's 32-byte vectors in 32 registers (room for one-output tiles that share loads across
// rows). Each call runs the widest one the CPU has, up to a process-wide cap that lets tests run
// every version this CPU can (cap_direct_isa is not meant to be called while convolutions run).
enum class DirectIsa { Baseline, Avx2, Avx512 };
DirectIsa widest_direct_isa();
DirectIsa direct_isa();
void cap_direct_isa(DirectIsa widest);

}  // namespace knetcnn::cpu
