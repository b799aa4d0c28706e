/* Baseline for bench:map: the floor for re-mapping a preserved pool, one open + mmap(MAP_SHARED|MAP_POPULATE) of a file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s POOL LENGTH SWEEP_BYTES\n", argv[0]);
    return 2;
  }
  size_t length = strtoull(argv[2], NULL, 10);
  size_t sweep = strtoull(argv[3], NULL, 10);
  /* Same cache state as the addon's child: populate walks one struct folio and page-cache node per huge page,
     and whether those lines are still cached decides the time (0.7 ms hot, 2-5 ms after 64-256 MiB of other work).
     The caller sweeps more than the last-level cache, so both sides start cold. */
  if (sweep) {
    unsigned char *buffer = malloc(sweep);
    memset(buffer, 1, sweep);
    volatile unsigned char sink = buffer[sweep - 1];
    (void)sink;
    free(buffer);
  }
  double open_start = now_ms();
  int fd = open(argv[1], O_RDWR | O_CLOEXEC);
  if (fd < 0) { perror("open"); return 1; }
  double start = now_ms();
  void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) { perror("mmap"); return 1; }
  double elapsed = now_ms() - start;
  /* Touch the first and last page so the compiler and kernel cannot skip the mapping. */
  volatile uint8_t sink = ((uint8_t *)p)[0] ^ ((uint8_t *)p)[length - 1];
  (void)sink;
  printf("{\"ms\":%.4f,\"openMs\":%.4f}\n", elapsed, start - open_start);
  munmap(p, length);
  close(fd);
  return 0;
}
