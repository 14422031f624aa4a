#include "cpu_pool_rows.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
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

}  // namespace

// The exported overloads, one per dtype, each compiled for AVX2 and for the baseline ISA where
// the compiler supports function clones (chosen at load time by the CPU's features): with the
// baseline's 2-lane doubles the pair loops stay scalar.
#define KNETCNN_OVERLOADS(T)                                                                            \
  KNETCNN_VECTOR_CLONES bool fold_max(const T* in, int64_t stride, const Block& b, T* best, Mask<T>* nan,  \
                                      bool first) {                                                     \
    Mask<T> any = 0;                                                                                    \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      any |= fold_max_row(in + r * b.in_row_step, stride, best + r * b.out_row_step,                    \
                          nan + r * b.out_row_step, b.n, first);                                        \
    return any != 0;                                                                                    \
  }                                                                                                     \
  KNETCNN_VECTOR_CLONES bool fold_max_pairs(const T* in, const Block& b, T* best, Mask<T>* nan, bool first) { \
    Mask<T> any = 0;                                                                                    \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      any |= fold_max_pairs_row(in + r * b.in_row_step, best + r * b.out_row_step,                      \
                                nan + r * b.out_row_step, b.n, first);                                  \
    return any != 0;                                                                                    \
  }                                                                                                     \
  KNETCNN_VECTOR_CLONES void route(const T* in, int64_t stride, const Block& b, const T* best,          \
                                   const T* grad, T alpha, Mask<T>* done, T* out) {                     \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      route_row(in + r * b.in_row_step, stride, best + r * b.out_row_step, grad + r * b.out_row_step,   \
                alpha, done + r * b.out_row_step, out + r * b.in_row_step, b.n);                        \
  }                                                                                                     \
  KNETCNN_VECTOR_CLONES void route_pairs(const T* in, const Block& b, const T* best, const T* grad,     \
                                         T alpha, Mask<T>* done, T* out, bool assign) {                 \
    for (int64_t r = 0; r < b.rows; ++r)                                                                \
      route_pairs_row(in + r * b.in_row_step, best + r * b.out_row_step, grad + r * b.out_row_step,     \
                      alpha, done + r * b.out_row_step, out + r * b.in_row_step, b.n, assign);          \
  }
KNETCNN_OVERLOADS(float)
KNETCNN_OVERLOADS(double)
#undef KNETCNN_OVERLOADS

}  // namespace knetcnn::cpu::rows
