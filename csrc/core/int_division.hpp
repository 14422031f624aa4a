// Integer division rounding down and up, for window and tap bounds that may start below zero
// (C++'s / truncates toward zero).
#pragma once

#include <cstdint>

namespace knetcnn::cpu {

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  return a / b - ((a % b != 0) && (a < 0));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }  // b > 0

}  // namespace knetcnn::cpu
