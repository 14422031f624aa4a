#include "cpu_pool_rows.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cpu_isa.hpp"

#ifdef KNETCNN_X86_DISPATCH
#include <immintrin.h>
#define KNETCNN_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KNETCNN_VECTOR_CLONES
#endif

// The vector helpers below take and return 32-byte vectors; they are always inlined, so the
// baseline ABI note GCC gives for such signatures (-Wpsabi) concerns no call that exists.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace knetcnn::cpu::rows {
namespace {

template <typename T>
inline Mask<T> mask_if(bool b) {
  return Mask<T>(0) - Mask<T>(b);
}

// v where mask is all ones, +0.0 where it is zero: exact, and never inf * 0.
template <typename T>
inline T masked(T v, Mask<T> mask) {
  Mask<T> bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= mask;
  std::memcpy(&v, &bits, sizeof bits);
  return v;
}

// One row of each kernel; the exported functions below loop over a block's rows.

template <typename T>
[[gnu::always_inline]] inline Mask<T> fold_max_row(const T* __restrict in, int64_t stride, T* __restrict best,
                                                   Mask<T>* __restrict nan, int64_t n, bool first) {
  Mask<T> any = 0;
  if (first) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = in[i * stride];
      best[i] = v;
      nan[i] = mask_if<T>(v != v);
      any |= nan[i];
    }
    return any;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T v = in[i * stride];
    best[i] = v > best[i] ? v : best[i];  // strict: the first of equal maxima stays
    nan[i] |= mask_if<T>(v != v);
    any |= nan[i];
  }
  return any;
}

template <typename T>
[[gnu::always_inline]] inline Mask<T> fold_max_pairs_row(const T* __restrict in, T* __restrict best,
                                                         Mask<T>* __restrict nan, int64_t n, bool first) {
  Mask<T> any = 0;
  if (first) {
    for (int64_t i = 0; i < n; ++i) {
      const T a = in[2 * i], b = in[2 * i + 1];
      best[i] = b > a ? b : a;
      nan[i] = mask_if<T>((a != a) | (b != b));
      any |= nan[i];
    }
    return any;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T a = in[2 * i], b = in[2 * i + 1];
    const T m = a > best[i] ? a : best[i];
    best[i] = b > m ? b : m;
    nan[i] |= mask_if<T>((a != a) | (b != b));
    any |= nan[i];
  }
  return any;
}

template <typename T>
[[gnu::always_inline]] inline void route_row(const T* __restrict in, int64_t stride, const T* __restrict best,
                                             const T* __restrict grad, T alpha, Mask<T>* __restrict done,
                                             T* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const Mask<T> hit = ~done[i] & mask_if<T>(in[i * stride] == best[i]);
    done[i] |= hit;
    out[i * stride] += masked(grad[i] * alpha, hit);
  }
}

template <typename T>
[[gnu::always_inline]] inline void route_pairs_row(const T* __restrict in, const T* __restrict best,
                                                   const T* __restrict grad, T alpha, Mask<T>* __restrict done,
                                                   T* __restrict out, int64_t n, bool assign) {
  if (assign) {  // the only window on these cells: no need to read (or first zero) them
    for (int64_t i = 0; i < n; ++i) {
      const T share = grad[i] * alpha;
      const Mask<T> hit_a = ~done[i] & mask_if<T>(in[2 * i] == best[i]);
      const Mask<T> hit_b = ~(done[i] | hit_a) & mask_if<T>(in[2 * i + 1] == best[i]);
      done[i] |= hit_a | hit_b;
      out[2 * i] = masked(share, hit_a);
      out[2 * i + 1] = masked(share, hit_b);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T share = grad[i] * alpha;
    const Mask<T> hit_a = ~done[i] & mask_if<T>(in[2 * i] == best[i]);
    const Mask<T> hit_b = ~(done[i] | hit_a) & mask_if<T>(in[2 * i + 1] == best[i]);
    done[i] |= hit_a | hit_b;
    out[2 * i] += masked(share, hit_a);
    out[2 * i + 1] += masked(share, hit_b);
  }
}

// 2x2 windows at stride 2, whole: row r's windows read input rows top = in + r * in_row_step and
// top + in_x. The NaN-blind first maximum of each; a window holding NaN is flagged in the result.
template <typename T>
[[gnu::always_inline]] inline T max4(T a0, T a1, T b0, T b1) {
  T m = a1 > a0 ? a1 : a0;  // strict: the first of equal maxima stays
  m = b0 > m ? b0 : m;
  return b1 > m ? b1 : m;
}

template <typename T>
[[gnu::always_inline]] inline Mask<T> any_nan4(T a0, T a1, T b0, T b1) {
  return mask_if<T>((a0 != a0) | (a1 != a1) | (b0 != b0) | (b1 != b1));
}

template <typename T>
[[gnu::always_inline]] inline Mask<T> max_2x2_row(const T* __restrict top, const T* __restrict bottom,
                                                  T* __restrict out, T scale, int64_t n) {
  Mask<T> any = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T a0 = top[2 * i], a1 = top[2 * i + 1], b0 = bottom[2 * i], b1 = bottom[2 * i + 1];
    out[i] = max4(a0, a1, b0, b1) * scale;
    any |= any_nan4(a0, a1, b0, b1);
  }
  return any;
}

// max_2x2_backward on whole vectors of windows. Two vectors of a row's cells (a0, a1 of
// consecutive windows, interleaved) are split into a vector of a0s and one of a1s with shuffles
// that stay inside 128-bit lanes (unpcklpd / shufps), so the windows come out in a fixed
// permuted order; dy is loaded in that order too, and the results are interleaved back before
// the stores. Everything between is vertical, with none of the scalar loop's stride-2 gathers.
// GCC's vector extensions: one source for the 16-byte (baseline) and 32-byte (AVX2) versions
// chosen below. Lanes<T, Bytes> holds the shuffles of one vector width.
template <typename T, int Bytes>
struct Lanes;

template <>
struct Lanes<double, 32> {  // windows in the order 0 2 1 3
  typedef double V __attribute__((vector_size(32)));
  [[gnu::always_inline]] static V evens(V p, V q) { return __builtin_shufflevector(p, q, 0, 4, 2, 6); }
  [[gnu::always_inline]] static V odds(V p, V q) { return __builtin_shufflevector(p, q, 1, 5, 3, 7); }
  [[gnu::always_inline]] static V in_order(V g) { return __builtin_shufflevector(g, g, 0, 2, 1, 3); }
  [[gnu::always_inline]] static V low(V e, V o) { return __builtin_shufflevector(e, o, 0, 4, 2, 6); }
  [[gnu::always_inline]] static V high(V e, V o) { return __builtin_shufflevector(e, o, 1, 5, 3, 7); }
};
template <>
struct Lanes<double, 16> {  // windows in order
  typedef double V __attribute__((vector_size(16)));
  [[gnu::always_inline]] static V evens(V p, V q) { return __builtin_shufflevector(p, q, 0, 2); }
  [[gnu::always_inline]] static V odds(V p, V q) { return __builtin_shufflevector(p, q, 1, 3); }
  [[gnu::always_inline]] static V in_order(V g) { return g; }
  [[gnu::always_inline]] static V low(V e, V o) { return __builtin_shufflevector(e, o, 0, 2); }
  [[gnu::always_inline]] static V high(V e, V o) { return __builtin_shufflevector(e, o, 1, 3); }
};
template <>
struct Lanes<float, 32> {  // windows in the order 0 1 4 5 2 3 6 7
  typedef float V __attribute__((vector_size(32)));
  [[gnu::always_inline]] static V evens(V p, V q) { return __builtin_shufflevector(p, q, 0, 2, 8, 10, 4, 6, 12, 14); }
  [[gnu::always_inline]] static V odds(V p, V q) { return __builtin_shufflevector(p, q, 1, 3, 9, 11, 5, 7, 13, 15); }
  [[gnu::always_inline]] static V in_order(V g) { return __builtin_shufflevector(g, g, 0, 1, 4, 5, 2, 3, 6, 7); }
  [[gnu::always_inline]] static V low(V e, V o) { return __builtin_shufflevector(e, o, 0, 8, 1, 9, 4, 12, 5, 13); }
  [[gnu::always_inline]] static V high(V e, V o) { return __builtin_shufflevector(e, o, 2, 10, 3, 11, 6, 14, 7, 15); }
};
template <>
struct Lanes<float, 16> {  // windows in order
  typedef float V __attribute__((vector_size(16)));
  [[gnu::always_inline]] static V evens(V p, V q) { return __builtin_shufflevector(p, q, 0, 2, 4, 6); }
  [[gnu::always_inline]] static V odds(V p, V q) { return __builtin_shufflevector(p, q, 1, 3, 5, 7); }
  [[gnu::always_inline]] static V in_order(V g) { return g; }
  [[gnu::always_inline]] static V low(V e, V o) { return __builtin_shufflevector(e, o, 0, 4, 1, 5); }
  [[gnu::always_inline]] static V high(V e, V o) { return __builtin_shufflevector(e, o, 2, 6, 3, 7); }
};

template <typename T, int Bytes>
constexpr int64_t kLanes = Bytes / int64_t(sizeof(T));  // windows per step

template <typename V>
[[gnu::always_inline]] inline V load(const void* from) {
  V v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

// Stream: a non-temporal store, which writes the line to memory without first reading it into
// the caches. Only the AVX2 steps stream, to 32-byte-aligned cells. Written as an asm statement
// because the intrinsic would need the AVX target on every always-inline caller in between.
template <bool Stream, typename T, typename V>
[[gnu::always_inline]] inline void store(T* to, const V& v) {
#ifdef KNETCNN_X86_DISPATCH
  if constexpr (Stream) {
    static_assert(sizeof(V) == 32, "only the AVX2 steps stream");
    struct Cells {  // the 32 bytes written, as chars: they may alias the caller's T
      char bytes[32];
    };
    if constexpr (sizeof(T) == 8)
      asm volatile("vmovntpd %1, %0" : "=m"(*reinterpret_cast<Cells*>(to)) : "x"(v));
    else
      asm volatile("vmovntps %1, %0" : "=m"(*reinterpret_cast<Cells*>(to)) : "x"(v));
    return;
  }
#endif
  std::memcpy(to, &v, sizeof v);
}

// Where a step's cells are: two vectors' worth (kLanes / 2 windows each) of a top row, the
// bottom row's under them, and the same cells of dx. The halves are adjacent, except in
// max_2x2_backward_flat, where they may end one row and start the next.
template <typename T>
struct Halves {
  const T* top[2];
  const T* bottom[2];
  T* dtop[2];
  T* dbottom[2];
};

// The step whose halves start at cells c0 and c1 of rows top, bottom (dx rows dtop, dbottom).
template <typename T>
[[gnu::always_inline]] inline Halves<T> halves_at(const T* top, const T* bottom, T* dtop, T* dbottom, int64_t c0,
                                                  int64_t c1) {
  return {{top + c0, top + c1}, {bottom + c0, bottom + c1}, {dtop + c0, dtop + c1}, {dbottom + c0, dbottom + c1}};
}

// Windows [0, kLanes) of a step: every cell of theirs gets its share or zero. NaN-blind (a NaN
// window's cells get whatever the comparisons give); returns a mask, nonzero in some lane if
// any of these windows holds NaN, for the caller to redo those windows.
template <typename T, int Bytes, bool Stream = false>
[[gnu::always_inline]] inline auto max_2x2_backward_step(const Halves<T>& at, const T* grad, T alpha) {
  using L = Lanes<T, Bytes>;
  using V = typename L::V;
  const V t0 = load<V>(at.top[0]), t1 = load<V>(at.top[1]), u0 = load<V>(at.bottom[0]), u1 = load<V>(at.bottom[1]);
  const V a0 = L::evens(t0, t1), a1 = L::odds(t0, t1), b0 = L::evens(u0, u1), b1 = L::odds(u0, u1);
  const auto nan = (a0 != a0) | (a1 != a1) | (b0 != b0) | (b1 != b1);
  V m = a1 > a0 ? a1 : a0;  // strict: the first of equal maxima stays (only its value matters here)
  m = b0 > m ? b0 : m;
  m = b1 > m ? b1 : m;
  // The first cell in row-major order (a0 a1 b0 b1) equal to the maximum takes the share.
  const auto h0 = a0 == m;
  auto seen = h0;
  const auto h1 = (a1 == m) & ~seen;
  seen |= h1;
  const auto h2 = (b0 == m) & ~seen;
  seen |= h2;
  const auto h3 = (b1 == m) & ~seen;
  using M = decltype(seen);
  const M share = reinterpret_cast<M>(L::in_order(load<V>(grad)) * alpha);
  const V d0 = reinterpret_cast<V>(share & h0), d1 = reinterpret_cast<V>(share & h1);
  const V e0 = reinterpret_cast<V>(share & h2), e1 = reinterpret_cast<V>(share & h3);
  const V out[4] = {L::low(d0, d1), L::high(d0, d1), L::low(e0, e1), L::high(e0, e1)};
  store<Stream>(at.dtop[0], out[0]);
  store<Stream>(at.dtop[1], out[1]);
  store<Stream>(at.dbottom[0], out[2]);
  store<Stream>(at.dbottom[1], out[3]);
  return nan;
}

// How far ahead of a step the 2x2 backward asks for x's and dx's cache lines. Planes larger
// than the caches (AlexNet's 227 x 227) otherwise wait on memory at every step: the hardware
// prefetcher does not run far enough ahead of two input and two output rows at once. 4 KiB
// ahead, one thread, float64 poolx: AlexNet's 0.56-0.59 ms against 1.4-1.8 ms without, VGG's
// 0.75-0.78 against 0.85-1.27; 1, 2, 8 or 16 KiB ahead helped less.
constexpr int64_t kPrefetchBytes = 4096;

template <typename T, bool Outputs>
[[gnu::always_inline]] inline void prefetch_ahead(const T* top, const T* bottom, T* dtop, T* dbottom) {
  constexpr int64_t ahead = kPrefetchBytes / int64_t(sizeof(T));
  __builtin_prefetch(top + ahead);
  __builtin_prefetch(bottom + ahead);
  if constexpr (Outputs) {
    __builtin_prefetch(dtop + ahead, 1);
    __builtin_prefetch(dbottom + ahead, 1);
  }
}

template <typename M>
[[gnu::always_inline]] inline bool any_lane(M m) {
  for (size_t l = 0; l < sizeof(M) / sizeof(m[0]); ++l)
    if (m[l]) return true;
  return false;
}

// Steps of Bytes-wide vectors over windows [0, n), n >= kLanes: the last step starts at
// n - kLanes and may redo windows of the one before. That is harmless (each step only assigns
// cells from x and dy, which dx does not overlap) and spares short rows a scalar tail: ResNet's
// 7 windows a row take two 4-window steps instead of one step and three scalar windows.
// Stream: the steps at multiples of kLanes (aligned where the row is) store non-temporally, and
// dx's lines are not prefetched; an overlapping last step is unaligned and stores plainly.
template <typename T, int Bytes, bool Stream = false>
[[gnu::always_inline]] inline bool max_2x2_backward_steps(const T* __restrict top, const T* __restrict bottom,
                                                          const T* __restrict grad, T alpha, T* __restrict dtop,
                                                          T* __restrict dbottom, int64_t n, bool prefetch) {
  constexpr int64_t step = kLanes<T, Bytes>;
  decltype(max_2x2_backward_step<T, Bytes>(Halves<T>{}, grad, alpha)) nan = {};
  for (int64_t i = 0;; i += step) {
    const bool whole = i + step <= n;
    i = std::min(i, n - step);
    if (prefetch) prefetch_ahead<T, !Stream>(top + 2 * i, bottom + 2 * i, dtop + 2 * i, dbottom + 2 * i);
    const Halves<T> at = halves_at(top, bottom, dtop, dbottom, 2 * i, 2 * i + kLanes<T, Bytes>);
    if constexpr (Stream) {
      if (whole)
        nan |= max_2x2_backward_step<T, Bytes, true>(at, grad + i, alpha);
      else
        nan |= max_2x2_backward_step<T, Bytes>(at, grad + i, alpha);
    } else {
      nan |= max_2x2_backward_step<T, Bytes>(at, grad + i, alpha);
    }
    if (i + step >= n) break;
  }
  return any_lane(nan);
}

// Every cell of a row's n windows gets its window's share (at its first maximum) or zero;
// windows holding NaN get arbitrary values here, and the return value says whether there are
// any (the caller redoes them). Wide: the widest vector in bytes (32 with AVX2, else 16).
template <typename T, int Wide>
[[gnu::always_inline]] inline bool max_2x2_backward_row(const T* __restrict top, const T* __restrict bottom,
                                                        const T* __restrict grad, T alpha, T* __restrict dtop,
                                                        T* __restrict dbottom, int64_t n, bool prefetch) {
  if (n >= kLanes<T, Wide>) return max_2x2_backward_steps<T, Wide>(top, bottom, grad, alpha, dtop, dbottom, n, prefetch);
  if (Wide > 16 && n >= kLanes<T, 16>)
    return max_2x2_backward_steps<T, 16>(top, bottom, grad, alpha, dtop, dbottom, n, prefetch);
  bool any = false;
  for (int64_t i = 0; i < n; ++i) {  // rows shorter than one 16-byte step
    const T a0 = top[2 * i], a1 = top[2 * i + 1], b0 = bottom[2 * i], b1 = bottom[2 * i + 1];
    const T m = max4(a0, a1, b0, b1), share = grad[i] * alpha;
    any |= any_nan4(a0, a1, b0, b1) != 0;
    const Mask<T> h0 = mask_if<T>(a0 == m);
    Mask<T> seen = h0;
    const Mask<T> h1 = ~seen & mask_if<T>(a1 == m);
    seen |= h1;
    const Mask<T> h2 = ~seen & mask_if<T>(b0 == m);
    seen |= h2;
    const Mask<T> h3 = ~seen & mask_if<T>(b1 == m);
    dtop[2 * i] = masked(share, h0);
    dtop[2 * i + 1] = masked(share, h1);
    dbottom[2 * i] = masked(share, h2);
    dbottom[2 * i + 1] = masked(share, h3);
  }
  return any;
}

// Whether max_2x2_backward_flat takes the block: rows of whole vectors (a multiple of
// kLanes / 2 windows) but not of whole steps, which the row loop would end with an overlapping
// step each (LeNet-2's 6 windows, 4 a step: 2 steps a row, 1.5 flat), and grad rows n apart.
template <typename T, int Bytes>
bool flat_fits(const Block& b) {
  constexpr int64_t lanes = kLanes<T, Bytes>;
  return b.n % (lanes / 2) == 0 && b.n % lanes != 0 && b.grad_row_step == b.n && b.rows * b.n >= lanes;
}

// The block's windows in order, a step at a time, as one flat sequence of vectors: a step's two
// halves may end one row and start the next. An odd number of halves ends with an overlapping
// step (harmless, as in max_2x2_backward_steps).
template <typename T, int Bytes>
[[gnu::always_inline]] inline bool max_2x2_backward_flat(const T* in, int64_t in_x, const Block& b, const T* grad,
                                                         T alpha, T* out, bool prefetch) {
  constexpr int64_t half = kLanes<T, Bytes> / 2;  // windows in a vector of cells
  const int64_t per_row = b.n / half, halves = b.rows * per_row;
  auto at = [&](int64_t c0, int64_t c1) { return halves_at(in, in + in_x, out, out + in_x, c0, c1); };
  decltype(max_2x2_backward_step<T, Bytes>(Halves<T>{}, grad, alpha)) nan = {};
  int64_t row = 0, k = 0;  // the next half: its row's first cell, and its place in the row
  auto take = [&] {
    const int64_t c = row + 2 * half * k;
    if (++k == per_row) k = 0, row += b.in_row_step;
    return c;
  };
  for (int64_t h = 0; h + 2 <= halves; h += 2) {
    const int64_t c0 = take(), c1 = take();
    if (prefetch) prefetch_ahead<T, true>(in + c0, in + c0 + in_x, out + c0, out + c0 + in_x);
    nan |= max_2x2_backward_step<T, Bytes>(at(c0, c1), grad + h * half, alpha);
  }
  if (halves % 2 != 0) {
    auto cell = [&](int64_t h) { return h / per_row * b.in_row_step + 2 * half * (h % per_row); };
    nan |= max_2x2_backward_step<T, Bytes>(at(cell(halves - 2), cell(halves - 1)), grad + (halves - 2) * half, alpha);
  }
  return any_lane(nan);
}

template <typename T, int Wide, bool Stream = false>
[[gnu::always_inline]] inline bool max_2x2_backward_block(const T* in, int64_t in_x, const Block& b, const T* grad,
                                                          T alpha, T* out, bool prefetch) {
  if constexpr (!Stream) {
    if (flat_fits<T, Wide>(b)) return max_2x2_backward_flat<T, Wide>(in, in_x, b, grad, alpha, out, prefetch);
  }
  bool any = false;
  for (int64_t r = 0; r < b.rows; ++r) {
    const int64_t at = r * b.in_row_step;
    const T* g = grad + r * b.grad_row_step;
    if constexpr (Stream)  // streamable: rows of at least one whole step
      any |= max_2x2_backward_steps<T, Wide, true>(in + at, in + at + in_x, g, alpha, out + at, out + at + in_x,
                                                   b.n, prefetch);
    else
      any |= max_2x2_backward_row<T, Wide>(in + at, in + at + in_x, g, alpha, out + at, out + at + in_x, b.n,
                                           prefetch);
  }
  return any;
}

// Whether the block's 32-byte steps at multiples of kLanes store to 32-byte-aligned cells of
// out, on every row: out, the row length and the rows' distance aligned, and a whole step a row.
template <typename T>
bool streamable(int64_t in_x, const Block& b, const T* out) {
  constexpr int64_t align = 32;
  return reinterpret_cast<uintptr_t>(out) % align == 0 && in_x * int64_t(sizeof(T)) % align == 0 &&
         b.in_row_step * int64_t(sizeof(T)) % align == 0 && b.n >= kLanes<T, 32>;
}

// Chosen by hand rather than by target_clones: the 32-byte steps lowered to the baseline's
// 16-byte registers are 14x slower (their shuffles cross the halves), so the baseline version
// uses 16-byte steps, which only the source, not the clone, can say.
#ifdef KNETCNN_X86_DISPATCH
template <typename T>
__attribute__((target("avx2"))) bool max_2x2_backward_avx2(const T* in, int64_t in_x, const Block& b, const T* grad,
                                                           T alpha, T* out, Traffic traffic) {
  if (traffic == Traffic::stream && streamable(in_x, b, out)) {
    const bool any = max_2x2_backward_block<T, 32, true>(in, in_x, b, grad, alpha, out, true);
    _mm_sfence();  // the streamed stores are ordered before the caller's (and other threads') next access
    return any;
  }
  return max_2x2_backward_block<T, 32>(in, in_x, b, grad, alpha, out, traffic != Traffic::cached);
}
#endif

template <typename T>
bool max_2x2_backward_any_isa(const T* in, int64_t in_x, const Block& b, const T* grad, T alpha, T* out,
                              Traffic traffic) {
#ifdef KNETCNN_X86_DISPATCH
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return max_2x2_backward_avx2(in, in_x, b, grad, alpha, out, traffic);
#endif
  return max_2x2_backward_block<T, 16>(in, in_x, b, grad, alpha, out, traffic != Traffic::cached);
}

}  // namespace

// The exported overloads, one per dtype. The double ones are compiled for AVX2 and for the
// baseline ISA where the compiler supports function clones (chosen at load time by the CPU's
// features): with the baseline's 2-lane doubles the pair loops stay scalar. The float ones stay
// baseline (its 4 lanes beat AVX2's 8 on the short rows of small planes: ResNet's 7 windows,
// LeNet's 6). max_2x2_backward picks its own version (above): its AVX2 steps are faster for
// floats too, as its overlapping last step serves short rows at any width.
#define KNETCNN_OVERLOADS(T, CLONES)                                                                            \
  CLONES bool fold_max(const T* in, int64_t stride, const Block& b, T* best, Mask<T>* nan,  \
                                      bool first) {                                                     \
    Mask<T> any = 0;                                                                                    \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      any |= fold_max_row(in + r * b.in_row_step, stride, best + r * b.out_row_step,                    \
                          nan + r * b.out_row_step, b.n, first);                                        \
    return any != 0;                                                                                    \
  }                                                                                                     \
  CLONES bool fold_max_pairs(const T* in, const Block& b, T* best, Mask<T>* nan, bool first) { \
    Mask<T> any = 0;                                                                                    \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      any |= fold_max_pairs_row(in + r * b.in_row_step, best + r * b.out_row_step,                      \
                                nan + r * b.out_row_step, b.n, first);                                  \
    return any != 0;                                                                                    \
  }                                                                                                     \
  CLONES void route(const T* in, int64_t stride, const Block& b, const T* best,          \
                                   const T* grad, T alpha, Mask<T>* done, T* out) {                     \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      route_row(in + r * b.in_row_step, stride, best + r * b.out_row_step, grad + r * b.grad_row_step,   \
                alpha, done + r * b.out_row_step, out + r * b.in_row_step, b.n);                        \
  }                                                                                                     \
  CLONES void route_pairs(const T* in, const Block& b, const T* best, const T* grad,     \
                                         T alpha, Mask<T>* done, T* out, bool assign) {                 \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      route_pairs_row(in + r * b.in_row_step, best + r * b.out_row_step, grad + r * b.grad_row_step,     \
                      alpha, done + r * b.out_row_step, out + r * b.in_row_step, b.n, assign);          \
  }                                                                                                     \
  CLONES bool max_2x2(const T* in, int64_t in_x, const Block& b, T scale, T* out) {      \
    Mask<T> any = 0;                                                                                    \
    for (int64_t r = 0; r < b.rows; ++r) {                                                              \
      const T* top = in + r * b.in_row_step;                                                            \
      any |= max_2x2_row(top, top + in_x, out + r * b.out_row_step, scale, b.n);                       \
    }                                                                                                   \
    return any != 0;                                                                                    \
  }                                                                                                     \
  bool max_2x2_backward(const T* in, int64_t in_x, const Block& b, const T* grad, T alpha, T* out,       \
                        Traffic traffic) {                                                              \
    return max_2x2_backward_any_isa(in, in_x, b, grad, alpha, out, traffic);                            \
  }
KNETCNN_OVERLOADS(float, /* baseline only */)
KNETCNN_OVERLOADS(double, KNETCNN_VECTOR_CLONES)
#undef KNETCNN_OVERLOADS

Traffic traffic_for_2x2_backward(int64_t x_bytes, int64_t cache_bytes) {
  // Below 4 MiB of x the arrays come from the caches and prefetching only costs (LeNet-2's
  // 1.5 MB x: ~7%). A call's x, dx and dy past half the cache do not stay cached from call to
  // call, nor beside the caller's other arrays: streaming dx leaves the cache to x. Measured on
  // this project's 32 MiB L3, float64 poolx, 2 threads, medians of 15 (ms, plain / streamed):
  // 6.4 MB x (14.4 MB in all) 0.19-0.20 / 0.24-0.25; 9.6 MB x (21.6 MB) 0.44-0.70 / 0.39-0.42;
  // VGG's 12.8 MB x (28.8 MB) 1.03-1.28 / 0.53-0.72.
  constexpr int64_t prefetch_from = int64_t(4) << 20;
  if (x_bytes < prefetch_from) return Traffic::cached;
  const int64_t touched = x_bytes + x_bytes + x_bytes / 4;
  return touched > cache_bytes / 2 ? Traffic::stream : Traffic::prefetch;
}

}  // namespace knetcnn::cpu::rows
