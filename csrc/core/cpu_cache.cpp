#include "cpu_cache.hpp"

#include <cctype>
#include <fstream>
#include <limits>

namespace knetcnn::cpu {

int64_t parse_cache_size(const std::string& text) {
  size_t end = 0;
  int64_t value = 0;
  for (; end < text.size() && std::isdigit(static_cast<unsigned char>(text[end])); ++end) {
    if (value > (int64_t(1) << 40)) return 0;  // no cache is this large: not a size
    value = value * 10 + (text[end] - '0');
  }
  if (end == 0) return 0;
  int shift = 0;
  if (end < text.size()) {
    switch (text[end]) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      default: return 0;
    }
    ++end;
  }
  while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
  if (end != text.size() || value > (std::numeric_limits<int64_t>::max() >> shift)) return 0;
  return value << shift;
}

namespace {

int64_t read_last_level_cache_bytes() {
  int best_level = 0;
  int64_t bytes = 0;
  for (int index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || !std::getline(size_file, size)) continue;
    const int64_t parsed = parse_cache_size(size);
    if (level > best_level && parsed > 0) {
      best_level = level;
      bytes = parsed;
    }
  }
  return bytes > 0 ? bytes : kAssumedLastLevelCacheBytes;
}

}  // namespace

int64_t last_level_cache_bytes() {
  static const int64_t bytes = read_last_level_cache_bytes();
  return bytes;
}

}  // namespace knetcnn::cpu
