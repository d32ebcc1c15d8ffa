/* The C side of bench/python/small_op.py: the same submit + wait loop as the Python
 * one, on the same endpoint, through the same library. The library's functions are
 * passed in as pointers (taken from the Python package's loaded libdlslime), so both
 * loops call exactly the same code. Built by small_op.py with cc -O2 -shared. */
#include <stdint.h>
#include <time.h>

#include "dlslime.h"

typedef dlslime_status_t (*write_fn)(const dlslime_endpoint_t *, const dlslime_assignment_t *, size_t, uint64_t,
                                     dlslime_future_t **);
typedef dlslime_status_t (*wait_fn)(const dlslime_future_t *);
typedef void (*free_fn)(dlslime_future_t *);

static uint64_t clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs `iters` write(assignment) + wait + free; returns 0 or the first failing status,
 * the elapsed wall-clock nanoseconds in out_ns[0] and this thread's CPU nanoseconds in
 * out_ns[1]. */
int32_t c_write_loop(const dlslime_endpoint_t *ep, const dlslime_assignment_t *a, uint64_t iters, write_fn w,
                     wait_fn wt, free_fn fr, uint64_t *out_ns) {
  uint64_t t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  for (uint64_t i = 0; i < iters; i++) {
    dlslime_future_t *f = 0;
    dlslime_status_t st = w(ep, a, 1, 0, &f);
    if (st != DLSLIME_STATUS_OK) return st;
    st = wt(f);
    fr(f);
    if (st != DLSLIME_STATUS_OK) return st;
  }
  out_ns[0] = clock_ns(CLOCK_MONOTONIC) - t0;
  out_ns[1] = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
  return 0;
}
