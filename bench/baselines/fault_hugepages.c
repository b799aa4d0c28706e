/* Baseline for bench:alloc: the floor for a first allocation of guest memory, faulting LENGTH bytes of fresh huge
   pages (the kernel zeroes each one) with one mmap(MAP_ANONYMOUS|MAP_HUGETLB|MAP_POPULATE). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LENGTH PAGE_SIZE_LOG2\n", argv[0]);
    return 2;
  }
  size_t length = strtoull(argv[1], NULL, 10);
  int shift = atoi(argv[2]);
  double t0 = now_ms();
  void *memory = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE | (shift << MAP_HUGE_SHIFT), -1, 0);
  double t1 = now_ms();
  if (memory == MAP_FAILED) { perror("mmap"); return 1; }
  printf("{\"ms\":%.4f}\n", t1 - t0);
  munmap(memory, length);
  return 0;
}
