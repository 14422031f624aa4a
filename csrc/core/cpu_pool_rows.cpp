#include "cpu_pool_rows.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define KNETCNN_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KNETCNN_VECTOR_CLONES
#endif

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

// Each window's share goes to its first maximum; every cell of the windows is written (assigned),
// windows holding NaN get zeros here.
template <typename T>
[[gnu::always_inline]] inline Mask<T> max_2x2_backward_row(const T* __restrict top, const T* __restrict bottom,
                                                           const T* __restrict grad, T alpha, T* __restrict dtop,
                                                           T* __restrict dbottom, int64_t n) {
  Mask<T> any = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T a0 = top[2 * i], a1 = top[2 * i + 1], b0 = bottom[2 * i], b1 = bottom[2 * i + 1];
    const T m = max4(a0, a1, b0, b1), share = grad[i] * alpha;
    const Mask<T> nan = any_nan4(a0, a1, b0, b1);
    any |= nan;
    const Mask<T> h0 = ~nan & mask_if<T>(a0 == m);
    Mask<T> done = nan | h0;
    const Mask<T> h1 = ~done & mask_if<T>(a1 == m);
    done |= h1;
    const Mask<T> h2 = ~done & mask_if<T>(b0 == m);
    done |= h2;
    const Mask<T> h3 = ~done & mask_if<T>(b1 == m);
    dtop[2 * i] = masked(share, h0);
    dtop[2 * i + 1] = masked(share, h1);
    dbottom[2 * i] = masked(share, h2);
    dbottom[2 * i + 1] = masked(share, h3);
  }
  return any;
}

}  // namespace

// The exported overloads, one per dtype. The double ones are compiled for AVX2 and for the
// baseline ISA where the compiler supports function clones (chosen at load time by the CPU's
// features): with the baseline's 2-lane doubles the pair loops stay scalar. The float ones stay
// baseline: its 4 lanes beat AVX2's 8 on the short rows of small planes (ResNet's 7 windows,
// LeNet's 6), and large planes are memory-bound either way (measured).
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
  CLONES bool max_2x2_backward(const T* in, int64_t in_x, const Block& b, const T* grad, \
                                              T alpha, T* out) {                                        \
    Mask<T> any = 0;                                                                                    \
    for (int64_t r = 0; r < b.rows; ++r) {                                                              \
      const int64_t at = r * b.in_row_step;                                                             \
      any |= max_2x2_backward_row(in + at, in + at + in_x, grad + r * b.grad_row_step, alpha, out + at,  \
                                  out + at + in_x, b.n);                                                \
    }                                                                                                   \
    return any != 0;                                                                                    \
  }
KNETCNN_OVERLOADS(float, /* baseline only */)
KNETCNN_OVERLOADS(double, KNETCNN_VECTOR_CLONES)
#undef KNETCNN_OVERLOADS

}  // namespace knetcnn::cpu::rows
