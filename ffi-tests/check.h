/* Test helpers for the C tests. Uses only the public header and libc. */
#ifndef DLSLIME_FFI_TESTS_CHECK_H
#define DLSLIME_FFI_TESTS_CHECK_H

#include <dlslime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_failures = 0;
static int g_checks = 0;
static const char *g_role = "test";

static inline const char *last_error(void) {
  static char buf[1024];
  size_t n = 0;
  if (dlslime_last_error_message(buf, sizeof buf, &n) != DLSLIME_STATUS_OK) {
    return "(dlslime_last_error_message failed)";
  }
  return buf;
}

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    g_checks++;                                                                        \
    if (!(cond)) {                                                                     \
      g_failures++;                                                                    \
      fprintf(stderr, "[%s] FAIL %s:%d: %s\n", g_role, __FILE__, __LINE__, #cond);     \
    }                                                                                  \
  } while (0)

/* Checks that `call` returns `want`; prints both statuses and the last error if not. */
#define CHECK_STATUS(call, want)                                                       \
  do {                                                                                 \
    int32_t got_ = (int32_t)(call);                                                    \
    int32_t want_ = (int32_t)(want);                                                   \
    g_checks++;                                                                        \
    if (got_ != want_) {                                                               \
      g_failures++;                                                                    \
      fprintf(stderr, "[%s] FAIL %s:%d: %s\n    got %d (%s), want %d (%s); last error: %s\n", \
              g_role, __FILE__, __LINE__, #call, got_, dlslime_status_str(got_), want_,  \
              dlslime_status_str(want_), last_error());                                  \
    }                                                                                  \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, DLSLIME_STATUS_OK)

/* Aborts the test program: for failures after which nothing else can run. */
#define REQUIRE_OK(call)                                                               \
  do {                                                                                 \
    int32_t got_ = (int32_t)(call);                                                    \
    if (got_ != DLSLIME_STATUS_OK) {                                                   \
      fprintf(stderr, "[%s] FATAL %s:%d: %s -> %d (%s); last error: %s\n", g_role,     \
              __FILE__, __LINE__, #call, got_, dlslime_status_str(got_), last_error());  \
      exit(2);                                                                         \
    }                                                                                  \
  } while (0)

static inline double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The last error must mention `needle`. */
#define CHECK_LAST_ERROR_HAS(needle)                                                   \
  do {                                                                                 \
    const char *m_ = last_error();                                                     \
    g_checks++;                                                                        \
    if (strstr(m_, (needle)) == NULL) {                                                \
      g_failures++;                                                                    \
      fprintf(stderr, "[%s] FAIL %s:%d: last error \"%s\" lacks \"%s\"\n", g_role,     \
              __FILE__, __LINE__, m_, (needle));                                        \
    }                                                                                  \
  } while (0)

/* One assignment, in the original DLSlime tuple order. */
static inline dlslime_assignment_t asg(dlslime_mr_handle_t l, dlslime_remote_handle_t r,
                                       uint64_t roff, uint64_t loff, uint64_t len) {
  dlslime_assignment_t a = {l, r, roff, loff, len};
  return a;
}

static inline int finish(const char *name) {
  if (g_failures) {
    fprintf(stderr, "[%s] %s: %d of %d checks FAILED\n", g_role, name, g_failures, g_checks);
    return 1;
  }
  printf("[%s] %s: all %d checks passed\n", g_role, name, g_checks);
  return 0;
}

#endif
