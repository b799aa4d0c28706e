/* Baseline for bench:access: random 8-byte reads over a raw mmap of a file (hugetlbfs for huge pages, tmpfs with
   MADV_NOHUGEPAGE for 4 KiB pages), with the loop the addon runs (native/gmfs_probe_loop.h). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "gmfs_probe_loop.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s FILE LENGTH OPS DEPENDENT_OPS SEED small-pages|huge-pages\n", argv[0]);
    return 2;
  }
  size_t length = strtoull(argv[2], NULL, 10);
  uint64_t ops = strtoull(argv[3], NULL, 10);
  uint64_t dependentOps = strtoull(argv[4], NULL, 10);
  uint64_t seed = strtoull(argv[5], NULL, 10);
  int small = strcmp(argv[6], "small-pages") == 0;
  int fd = open(argv[1], O_RDWR);
  if (fd < 0) { perror("open"); return 1; }
  if (small && ftruncate(fd, (off_t)length) != 0) { perror("ftruncate"); return 1; }
  uint64_t *words = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | (small ? 0 : MAP_POPULATE), fd, 0);
  if (words == MAP_FAILED) { perror("mmap"); return 1; }
  if (small) {
    /* 4 KiB pages for real: no transparent huge pages, every page faulted in before the timing. */
    if (madvise(words, length, MADV_NOHUGEPAGE) != 0) { perror("madvise"); return 1; }
    if (madvise(words, length, MADV_POPULATE_WRITE) != 0) { perror("madvise(MADV_POPULATE_WRITE)"); return 1; }
  }
  /* Warm-up, as the addon side does before each timed run: caches, TLB and clock frequency settle first. */
  uint64_t sum = gmfs_probe_random(words, length / 8, ops / 10, seed + 1, 0);
  double t0 = now_ns();
  sum += gmfs_probe_random(words, length / 8, ops, seed, 0);
  double t1 = now_ns();
  sum += gmfs_probe_random(words, length / 8, dependentOps, seed, 1);
  double t2 = now_ns();
  printf("{\"throughputNsPerRead\":%.4f,\"latencyNsPerRead\":%.4f,\"sum\":\"%llu\"}\n", (t1 - t0) / ops, (t2 - t1) / dependentOps, (unsigned long long)sum);
  munmap(words, length);
  close(fd);
  return 0;
}
