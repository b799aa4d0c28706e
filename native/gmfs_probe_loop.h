/* The random 8-byte access loop of bench:access, shared word for word by the addon (mapProbe over a guestmemfs
   mapping) and the C baseline (bench/baselines/random_access.c over a raw mmap), so both sides run identical code. */
#ifndef GMFS_PROBE_LOOP_H
#define GMFS_PROBE_LOOP_H

#include <stdint.h>

/* A 64-bit LCG (Knuth's MMIX constants): the same index sequence on both sides for a given seed. */
static inline uint64_t gmfs_probe_step(uint64_t x) { return x * 6364136223846793005ULL + 1442695040888963407ULL; }

/* An index in [0, count) from the high bits of x, without a division. */
static inline uint64_t gmfs_probe_index(uint64_t x, uint64_t count) {
  return (uint64_t)(((unsigned __int128)(x >> 11) * count) >> 53);
}

/* `ops` random 8-byte reads over words[0, count). Independent reads measure throughput (the CPU overlaps their
   misses); dependent ones, where each address is derived from the value read before, measure latency. The sum is
   returned so that no read can be optimised away. */
static inline uint64_t gmfs_probe_random(const uint64_t *words, uint64_t count, uint64_t ops, uint64_t seed, int dependent) {
  uint64_t x = seed;
  uint64_t sum = 0;
  if (dependent) {
    for (uint64_t i = 0; i < ops; i++) {
      uint64_t value = words[gmfs_probe_index(x, count)];
      sum += value;
      x = gmfs_probe_step(x ^ value);
    }
  } else {
    for (uint64_t i = 0; i < ops; i++) {
      x = gmfs_probe_step(x);
      sum += words[gmfs_probe_index(x, count)];
    }
  }
  return sum;
}

#endif
