// The size of the cache that this process's CPU shares with the cores next to it (its last
// level), for choosing how kernels whose arrays outgrow it move memory.
#pragma once

#include <cstdint>
#include <string>

namespace knetcnn::cpu {

// Assumed where the system does not say (no Linux sysfs): a current server core complex's L3.
constexpr int64_t kAssumedLastLevelCacheBytes = int64_t(32) << 20;

// Bytes of the highest-level cache of CPU 0, read once from Linux's sysfs
// (/sys/devices/system/cpu/cpu0/cache/index*/{level,size}). Not sysconf's _SC_LEVEL3_CACHE_SIZE:
// on this project's AMD EPYC machines that said 320 MiB (the socket's), where a core shares 32.
int64_t last_level_cache_bytes();

// A sysfs cache size ("32768K", "1M", "512") in bytes; 0 if it is not one.
int64_t parse_cache_size(const std::string& text);

}  // namespace knetcnn::cpu
