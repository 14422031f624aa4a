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

template <typename T>
[[gnu::always_inline]] inline void fold_max_impl(const T* __restrict in, int64_t stride, T* __restrict best, Mask<T>* __restrict nan, int64_t n,
                     bool first) {
  if (first) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = in[i * stride];
      best[i] = v;
      nan[i] = mask_if<T>(v != v);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T v = in[i * stride];
    best[i] = v > best[i] ? v : best[i];
    nan[i] |= mask_if<T>(v != v);
  }
}

template <typename T>
[[gnu::always_inline]] inline void fold_max_pairs_impl(const T* __restrict in, T* __restrict best, Mask<T>* __restrict nan, int64_t n, bool first) {
  if (first) {
    for (int64_t i = 0; i < n; ++i) {
      const T a = in[2 * i], b = in[2 * i + 1];
      best[i] = b > a ? b : a;
      nan[i] = mask_if<T>((a != a) | (b != b));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T a = in[2 * i], b = in[2 * i + 1];
    T m = a > best[i] ? a : best[i];
    best[i] = b > m ? b : m;
    nan[i] |= mask_if<T>((a != a) | (b != b));
  }
}

template <typename T>
[[gnu::always_inline]] inline void route_impl(const T* __restrict in, int64_t stride, const T* __restrict best, const T* __restrict share,
                  Mask<T>* __restrict done, T* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const Mask<T> hit = ~done[i] & mask_if<T>(in[i * stride] == best[i]);
    done[i] |= hit;
    out[i * stride] += masked(share[i], hit);
  }
}

template <typename T>
[[gnu::always_inline]] inline void route_pairs_impl(const T* __restrict in, const T* __restrict best, const T* __restrict share,
                        Mask<T>* __restrict done, T* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const Mask<T> hit_a = ~done[i] & mask_if<T>(in[2 * i] == best[i]);
    const Mask<T> hit_b = ~(done[i] | hit_a) & mask_if<T>(in[2 * i + 1] == best[i]);
    done[i] |= hit_a | hit_b;
    out[2 * i] += masked(share[i], hit_a);
    out[2 * i + 1] += masked(share[i], hit_b);
  }
}

}  // namespace

// The exported overloads, one per dtype, each compiled for AVX2 and for the baseline ISA where
// the compiler supports function clones (chosen at load time by the CPU's features): the
// baseline's 2-lane doubles leave the pair loops scalar.
#define KNETCNN_OVERLOADS(T)                                                                          \
  KNETCNN_VECTOR_CLONES void fold_max(const T* in, int64_t stride, T* best, Mask<T>* nan, int64_t n, bool first) { \
    fold_max_impl(in, stride, best, nan, n, first);                                                 \
  }                                                                                                 \
  KNETCNN_VECTOR_CLONES void fold_max_pairs(const T* in, T* best, Mask<T>* nan, int64_t n, bool first) {          \
    fold_max_pairs_impl(in, best, nan, n, first);                                                   \
  }                                                                                                 \
  KNETCNN_VECTOR_CLONES void route(const T* in, int64_t stride, const T* best, const T* share, Mask<T>* done,       \
                                   T* out, int64_t n) {                                             \
    route_impl(in, stride, best, share, done, out, n);                                              \
  }                                                                                                 \
  KNETCNN_VECTOR_CLONES void route_pairs(const T* in, const T* best, const T* share, Mask<T>* done, T* out,         \
                                         int64_t n) {                                               \
    route_pairs_impl(in, best, share, done, out, n);                                                \
  }
KNETCNN_OVERLOADS(float)
KNETCNN_OVERLOADS(double)
#undef KNETCNN_OVERLOADS

}  // namespace knetcnn::cpu::rows
