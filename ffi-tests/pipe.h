/* Helpers of the two-process C tests: length-prefixed messages over a pipe (every read
 * with a deadline: a silent peer is a FATAL exit 2, never a hang) and the data pattern
 * both processes check payloads against. Include after check.h; a test may define
 * PIPE_TIMEOUT_MS first. */
#ifndef DLSLIME_FFI_TESTS_PIPE_H
#define DLSLIME_FFI_TESTS_PIPE_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fork.h"

#ifndef PIPE_TIMEOUT_MS
#define PIPE_TIMEOUT_MS 30000
#endif

static inline void write_all(int fd, const void *p, size_t n) {
  const char *c = (const char *)p;
  while (n > 0) {
    ssize_t k = write(fd, c, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      fprintf(stderr, "[%s] FATAL pipe write: %s\n", g_role, strerror(errno));
      exit(2);
    }
    c += k;
    n -= (size_t)k;
  }
}

static inline void read_exact(int fd, void *p, size_t n) {
  char *c = (char *)p;
  double deadline = now_ms() + PIPE_TIMEOUT_MS;
  while (n > 0) {
    int left = (int)(deadline - now_ms());
    struct pollfd pfd;
    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (left <= 0 || poll(&pfd, 1, left) == 0) {
      fprintf(stderr, "[%s] FATAL: peer did not answer within %d ms\n", g_role, PIPE_TIMEOUT_MS);
      exit(2);
    }
    ssize_t k = read(fd, c, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      fprintf(stderr, "[%s] FATAL: pipe closed (peer died?)\n", g_role);
      exit(2);
    }
    c += k;
    n -= (size_t)k;
  }
}

static inline void send_msg(int fd, const char *s) {
  uint32_t n = (uint32_t)strlen(s);
  write_all(fd, &n, sizeof n);
  write_all(fd, s, n);
}

/* Returns a malloc'd NUL-terminated message. */
static inline char *recv_msg(int fd) {
  uint32_t n = 0;
  read_exact(fd, &n, sizeof n);
  char *s = (char *)malloc((size_t)n + 1);
  read_exact(fd, s, n);
  s[n] = '\0';
  return s;
}

/* Byte i of the payload of `seed`. */
static inline uint8_t pat(unsigned seed, size_t i) {
  return (uint8_t)(i * 131u + seed * 17u + (i >> 9));
}

static inline void fill(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = pat(seed, i);
}

static inline int matches(const uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pat(seed, i)) return 0;
  return 1;
}

#endif /* DLSLIME_FFI_TESTS_PIPE_H */
