/*
 * The observability snapshot through the C ABI (public header only): off, the snapshot
 * is {"enabled":false}; on, a known workload over a loopback TCP pair (5 writes of 1000
 * bytes, 3 reads of 500 bytes, 1 write refused for an unknown handle) shows exactly in
 * the initiator's counters.
 *
 * Exit status: 0 all passed, 1 a check failed, 2 a fatal error.
 */
#include <dlslime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

typedef struct {
  dlslime_tcp_context_t *ctx;
  dlslime_memory_pool_t *pool;
  dlslime_endpoint_t *ep;
  uint8_t *buf;
  dlslime_mr_handle_t mr;
} side_t;

static void side_open(side_t *s) {
  memset(s, 0, sizeof *s);
  dlslime_tcp_options_t opts;
  dlslime_tcp_options_init(&opts);
  opts.bind = "127.0.0.1:0";
  opts.default_timeout_ms = 10000;
  REQUIRE_OK(dlslime_tcp_context_new(&opts, &s->ctx));
  REQUIRE_OK(dlslime_memory_pool_new(&s->pool));
  s->buf = (uint8_t *)calloc(1, 65536);
  REQUIRE_OK(dlslime_memory_pool_register(s->pool, "buf", s->buf, 65536, &s->mr));
  REQUIRE_OK(dlslime_tcp_endpoint_new(s->ctx, s->pool, &s->ep));
}

static void side_close(side_t *s) {
  dlslime_endpoint_free(s->ep);
  dlslime_memory_pool_free(s->pool);
  dlslime_tcp_context_free(s->ctx);
  free(s->buf);
}

static int contains(const char *hay, const char *needle) {
  if (strstr(hay, needle)) return 1;
  fprintf(stderr, "[%s] snapshot lacks %s\n", g_role, needle);
  return 0;
}

int main(void) {
  g_role = "obs";
  CHECK_STATUS(dlslime_obs_snapshot(NULL), DLSLIME_STATUS_NULL_PARAMETER);

  char *snap = NULL;
  dlslime_obs_set_enabled(false);
  CHECK(!dlslime_obs_enabled());
  REQUIRE_OK(dlslime_obs_snapshot(&snap));
  CHECK(strcmp(snap, "{\"enabled\":false}") == 0);
  dlslime_string_free(snap);

  dlslime_obs_set_enabled(true);
  CHECK(dlslime_obs_enabled());
  side_t A, B;
  side_open(&A);
  side_open(&B);
  char *ia = NULL, *ib = NULL;
  REQUIRE_OK(dlslime_endpoint_info(A.ep, &ia));
  REQUIRE_OK(dlslime_endpoint_info(B.ep, &ib));
  REQUIRE_OK(dlslime_endpoint_connect(A.ep, ib));
  REQUIRE_OK(dlslime_endpoint_connect(B.ep, ia));
  dlslime_string_free(ia);
  dlslime_string_free(ib);
  dlslime_remote_handle_t rb = 0;
  REQUIRE_OK(dlslime_endpoint_remote_handle(A.ep, "buf", &rb));

  for (int i = 0; i < 5; i++) {
    dlslime_assignment_t a = asg(A.mr, rb, (uint64_t)i * 1000, 0, 1000);
    dlslime_future_t *f = NULL;
    CHECK_OK(dlslime_endpoint_write(A.ep, &a, 1, 0, &f));
    CHECK_OK(dlslime_future_wait(f));
    dlslime_future_free(f);
  }
  for (int i = 0; i < 3; i++) {
    dlslime_assignment_t a = asg(A.mr, rb, 0, 8192, 500);
    dlslime_future_t *f = NULL;
    CHECK_OK(dlslime_endpoint_read(A.ep, &a, 1, 0, &f));
    CHECK_OK(dlslime_future_wait(f));
    dlslime_future_free(f);
  }
  dlslime_assignment_t bad = asg((dlslime_mr_handle_t)(A.mr + 77), rb, 0, 0, 10);
  dlslime_future_t *g = NULL;
  CHECK_STATUS(dlslime_endpoint_write(A.ep, &bad, 1, 0, &g), DLSLIME_STATUS_UNKNOWN_HANDLE);

  REQUIRE_OK(dlslime_obs_snapshot(&snap));
  CHECK(contains(snap, "\"enabled\":true"));
  CHECK(contains(snap, "\"schema_version\":1"));
  /* the initiator's write row: keys are sorted */
  CHECK(contains(snap, "\"write\":{\"completed\":5,\"completed_bytes\":5000,\"failed\":0,"
                       "\"failed_bytes\":0,\"latency_ns\":{\"buckets\":"));
  CHECK(contains(snap, "\"pending\":0,\"rejected\":1,\"submitted\":5,\"submitted_bytes\":5000}"));
  CHECK(contains(snap, "\"read\":{\"completed\":3,\"completed_bytes\":1500,"));
  CHECK(contains(snap, "\"submitted\":3,\"submitted_bytes\":1500}"));
  CHECK(contains(snap, "\"errors\":{\"unknown_handle\":1}"));
  CHECK(contains(snap, "\"transport\":\"tcp\""));
  dlslime_string_free(snap);

  side_close(&A);
  side_close(&B);
  return finish("test_obs");
}
