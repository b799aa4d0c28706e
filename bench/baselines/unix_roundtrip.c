/* Baseline for bench:service: the kernel's floor for a request and its answer between two processes, one 64-byte
   message each way over a UNIX stream socket, as fast as C can do it. No service, sequential or not, beats this for
   one client waiting on each answer. Prints {"roundTripUs": median, "opsPerSec": ...} over ROUNDS round trips. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 100000;
  int pair[2];
  char message[64] = {0};
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    for (int i = 0; i < rounds + 1000; i++) {
      if (read(pair[1], message, sizeof message) <= 0) _exit(1);
      if (write(pair[1], message, sizeof message) != sizeof message) _exit(1);
    }
    _exit(0);
  }
  for (int i = 0; i < 1000; i++) { /* warm up */
    if (write(pair[0], message, sizeof message) != sizeof message || read(pair[0], message, sizeof message) <= 0) return 1;
  }
  double started = now_us();
  for (int i = 0; i < rounds; i++) {
    if (write(pair[0], message, sizeof message) != sizeof message || read(pair[0], message, sizeof message) <= 0) return 1;
  }
  double each = (now_us() - started) / rounds;
  waitpid(child, NULL, 0);
  printf("{\"roundTripUs\": %.3f, \"opsPerSec\": %.0f}\n", each, 1e6 / each);
  return 0;
}
