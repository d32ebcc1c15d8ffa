/*
 * The slot ring through the C ABI only: the local ring (write, gather write, read,
 * try_read, views consumed and released, slot states, ready references, metrics, the
 * handle, stale references after a lap, SLOT_BUSY when full without overwriting, bad
 * arguments), then the remote path in two processes per transport (tcp, shm): the
 * child creates a ring and serves it on an endpoint, the parent fetches by reference
 * (into pooled payloads and into its own buffer), gets STALE_SLOT for a consumed
 * reference, runs a batch fetch and reads the counters.
 *
 * Exit status: 0 all passed, 1 a check failed, 2 a fatal error.
 */
#include <dlslime.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PIPE_TIMEOUT_MS 60000
#include "check.h"
#include "pipe.h"

#define CAP ((size_t)1 << 20)
#define NPAY 6

/* ---- the local ring ---- */

static void local_ring(void) {
  dlslime_ring_options_t o;
  dlslime_ring_options_init(&o);
  o.name = "local";
  o.slot_count = 4;
  o.slot_capacity = 4096;
  dlslime_ring_t *r = NULL;
  REQUIRE_OK(dlslime_ring_new(&o, &r));
  CHECK(dlslime_ring_slot_count(r) == 4);
  CHECK(dlslime_ring_slot_capacity(r) == 4096);
  CHECK(dlslime_ring_ready_count(r) == 0);
  uint32_t st = 99;
  CHECK_OK(dlslime_ring_slot_state(r, 0, &st));
  CHECK(st == DLSLIME_SLOT_STATE_FREE);
  CHECK_STATUS(dlslime_ring_slot_state(r, 4, &st), DLSLIME_STATUS_OUT_OF_RANGE);

  uint8_t buf[4096];
  fill(buf, sizeof buf, 1);
  dlslime_slot_ref_t a, b, c;
  CHECK_OK(dlslime_ring_write(r, buf, sizeof buf, 0, &a));
  CHECK(a.slot == 0 && a.generation == 0);
  const void *parts[2] = {buf, buf + 100};
  size_t lens[2] = {100, 50};
  CHECK_OK(dlslime_ring_write_parts(r, parts, lens, 2, 0, &b));
  CHECK(b.slot == 1 && b.generation == 1);
  CHECK_STATUS(dlslime_ring_write(r, buf, 4097, 0, &c), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK(dlslime_ring_ready_count(r) == 2);

  dlslime_slot_ref_t ready[8];
  size_t n = 0;
  CHECK_OK(dlslime_ring_ready_slots(r, ready, 8, &n));
  CHECK(n == 2 && ready[0].generation == 0 && ready[1].generation == 1);

  /* a view is the slot itself; a second reader meets SLOT_BUSY; release puts it back */
  dlslime_ring_view_t *v = NULL;
  CHECK_OK(dlslime_ring_read_view(r, a, &v));
  const void *data = NULL;
  size_t len = 0;
  CHECK_OK(dlslime_ring_view_data(v, &data, &len));
  CHECK(len == 4096 && matches((const uint8_t *)data, len, 1));
  CHECK_OK(dlslime_ring_slot_state(r, 0, &st));
  CHECK(st == DLSLIME_SLOT_STATE_READING);
  uint8_t out[4096];
  CHECK_STATUS(dlslime_ring_read(r, a, out, sizeof out, &len), DLSLIME_STATUS_SLOT_BUSY);
  bool got = true;
  CHECK_OK(dlslime_ring_try_read(r, a, out, sizeof out, &len, &got));
  CHECK(!got);
  CHECK_OK(dlslime_ring_view_release(v));
  CHECK_STATUS(dlslime_ring_view_data(v, &data, &len), DLSLIME_STATUS_STALE_SLOT);
  dlslime_ring_view_free(v);
  CHECK(dlslime_ring_ready_count(r) == 2);

  CHECK_OK(dlslime_ring_read_view(r, a, &v));
  CHECK_OK(dlslime_ring_view_consume(v));
  CHECK_STATUS(dlslime_ring_view_consume(v), DLSLIME_STATUS_STALE_SLOT);
  dlslime_ring_view_free(v);
  CHECK_STATUS(dlslime_ring_read(r, a, out, sizeof out, &len), DLSLIME_STATUS_STALE_SLOT);

  /* read into a buffer too small: refused, the payload stays */
  CHECK_STATUS(dlslime_ring_read(r, b, out, 10, &len), DLSLIME_STATUS_OUT_OF_RANGE);
  CHECK_OK(dlslime_ring_try_read(r, b, out, sizeof out, &len, &got));
  CHECK(got && len == 150 && matches(out, 100, 1) && out[100] == pat(1, 100));

  /* lap the ring: 4 more writes; the oldest unconsumed reference goes stale */
  dlslime_slot_ref_t last;
  for (int i = 0; i < 4; i++) CHECK_OK(dlslime_ring_write(r, buf, 10, 0, &last));
  CHECK(last.generation == 5 && last.slot == 1);
  CHECK_OK(dlslime_ring_write(r, buf, 10, 0, &last)); /* overwrites generation 2 */
  dlslime_ring_metrics_t m;
  CHECK_OK(dlslime_ring_metrics(r, &m));
  CHECK(m.writes == 7 && m.reads == 2 && m.drops == 1 && m.ready == 4);
  dlslime_slot_ref_t g2 = {2, 2};
  CHECK_STATUS(dlslime_ring_read(r, g2, out, sizeof out, &len), DLSLIME_STATUS_STALE_SLOT);
  /* no overwriting for this write: SLOT_BUSY, nothing written */
  CHECK_STATUS(dlslime_ring_write(r, buf, 10, DLSLIME_RING_FLAG_NO_OVERWRITE, &c),
               DLSLIME_STATUS_SLOT_BUSY);

  /* the handle maps the same ring */
  char *h = NULL;
  CHECK_OK(dlslime_ring_handle(r, &h));
  CHECK(h != NULL && strstr(h, "\"buffer_name\":\"local\"") != NULL);
  dlslime_ring_t *r2 = NULL;
  CHECK_OK(dlslime_ring_attach(h, &r2));
  CHECK(dlslime_ring_ready_count(r2) == 4);
  dlslime_string_free(h);
  CHECK_STATUS(dlslime_ring_attach("{\"type\":1}", &r2), DLSLIME_STATUS_INVALID_ARGUMENT);
  dlslime_ring_free(r2);

  /* bad arguments */
  CHECK_STATUS(dlslime_ring_write(NULL, buf, 1, 0, &c), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_ring_write(r, NULL, 1, 0, &c), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_ring_write(r, buf, 1, 77, &c), DLSLIME_STATUS_INVALID_ARGUMENT);
  dlslime_slot_ref_t bad = {1, 2};
  CHECK_STATUS(dlslime_ring_read(r, bad, out, sizeof out, &len), DLSLIME_STATUS_INVALID_ARGUMENT);
  o.flags = 0x80;
  CHECK_STATUS(dlslime_ring_new(&o, &r2), DLSLIME_STATUS_UNSUPPORTED);
  dlslime_ring_free(r);
  dlslime_ring_free(NULL);
  dlslime_ring_view_free(NULL);
}

/* ---- the remote path ---- */

static const char *g_transport = "tcp";

static dlslime_endpoint_t *endpoint(dlslime_memory_pool_t *pool, dlslime_tcp_context_t **ctx) {
  dlslime_endpoint_t *ep = NULL;
  if (strcmp(g_transport, "shm") == 0) {
    REQUIRE_OK(dlslime_shm_endpoint_new(pool, NULL, &ep));
    return ep;
  }
  dlslime_tcp_options_t o;
  dlslime_tcp_options_init(&o);
  o.bind = "127.0.0.1:0";
  REQUIRE_OK(dlslime_tcp_context_new(&o, ctx));
  REQUIRE_OK(dlslime_tcp_endpoint_new(*ctx, pool, &ep));
  return ep;
}

/* Both sides: send our info, receive the peer's, connect. */
static void pair(dlslime_endpoint_t *ep, int rfd, int wfd) {
  char *info = NULL;
  REQUIRE_OK(dlslime_endpoint_info(ep, &info));
  send_msg(wfd, info);
  dlslime_string_free(info);
  char *peer = recv_msg(rfd);
  REQUIRE_OK(dlslime_endpoint_connect(ep, peer));
  free(peer);
}

static int server(int rfd, int wfd) {
  g_role = "server";
  dlslime_ring_options_t o;
  dlslime_ring_options_init(&o);
  o.name = "rollouts";
  o.slot_count = 8;
  o.slot_capacity = CAP;
  dlslime_ring_t *r = NULL;
  REQUIRE_OK(dlslime_ring_new(&o, &r)); /* before connect: a shm peer maps it */
  dlslime_memory_pool_t *pool = NULL;
  REQUIRE_OK(dlslime_memory_pool_new(&pool));
  dlslime_tcp_context_t *ctx = NULL;
  dlslime_endpoint_t *ep = endpoint(pool, &ctx);
  dlslime_ring_server_t *s = NULL;
  REQUIRE_OK(dlslime_ring_server_new(NULL, &s));
  REQUIRE_OK(dlslime_ring_server_add_ring(s, r));
  CHECK_STATUS(dlslime_ring_server_add_ring(s, r), DLSLIME_STATUS_NAME_CONFLICT);
  pair(ep, rfd, wfd);
  REQUIRE_OK(dlslime_ring_server_serve_endpoint(s, ep));
  dlslime_slot_ref_t refs[NPAY];
  uint8_t *buf = (uint8_t *)malloc(CAP);
  for (unsigned i = 0; i < NPAY; i++) {
    fill(buf, CAP - i * 1000, 100 + i);
    REQUIRE_OK(dlslime_ring_write(r, buf, CAP - i * 1000, 0, &refs[i]));
  }
  free(buf);
  write_all(wfd, refs, sizeof refs);
  char *done = recv_msg(rfd);
  CHECK(strcmp(done, "done") == 0);
  free(done);
  dlslime_ring_server_counters_t k;
  CHECK_OK(dlslime_ring_server_counters(s, &k));
  /* one more grant: the fetch into a too small buffer, aborted */
  CHECK(k.grants == NPAY + 1 && k.commits == NPAY && k.aborts == 1);
  dlslime_ring_metrics_t m;
  CHECK_OK(dlslime_ring_metrics(r, &m));
  CHECK(m.reads == NPAY && m.ready == 0 && m.stale_reads == 1);
  CHECK_OK(dlslime_ring_server_stop(s));
  dlslime_ring_server_free(s);
  dlslime_endpoint_free(ep);
  dlslime_tcp_context_free(ctx);
  dlslime_memory_pool_free(pool);
  dlslime_ring_free(r);
  send_msg(wfd, "bye");
  return finish("test_ring server");
}

static void client(int rfd, int wfd) {
  g_role = "client";
  dlslime_memory_pool_t *pool = NULL;
  REQUIRE_OK(dlslime_memory_pool_new(&pool));
  dlslime_tcp_context_t *ctx = NULL;
  dlslime_endpoint_t *ep = endpoint(pool, &ctx);
  pair(ep, rfd, wfd);
  dlslime_ring_client_options_t o;
  dlslime_ring_client_options_init(&o);
  o.timeout_ms = 10000;
  dlslime_ring_client_t *c = NULL;
  REQUIRE_OK(dlslime_ring_client_new(&o, &c));
  REQUIRE_OK(dlslime_ring_client_add_endpoint(c, "rollouts", ep));
  /* attempts x (timeout + commit grace); a batch: rounds x that + the backoffs */
  CHECK(dlslime_ring_client_worst_case_ms(c, 0) == 2 * (10000 + 1000));
  CHECK(dlslime_ring_client_worst_case_ms(c, 4) == 3 * 22000 + 2 * 50);
  dlslime_slot_ref_t refs[NPAY];
  read_exact(rfd, refs, sizeof refs);

  /* a pooled payload */
  dlslime_ring_payload_t *p = NULL;
  REQUIRE_OK(dlslime_ring_client_fetch(c, "rollouts", refs[0], &p));
  CHECK(dlslime_ring_payload_len(p) == CAP);
  CHECK(matches((const uint8_t *)dlslime_ring_payload_data(p), CAP, 100));
  dlslime_ring_payload_free(p);
  /* consumed: the same reference is stale */
  p = NULL;
  CHECK_STATUS(dlslime_ring_client_fetch(c, "rollouts", refs[0], &p), DLSLIME_STATUS_STALE_SLOT);
  CHECK(p == NULL);
  /* into our buffer; a too small one is refused and the payload stays */
  uint8_t *mine = (uint8_t *)malloc(CAP);
  size_t n = 0;
  CHECK_STATUS(dlslime_ring_client_fetch_into(c, "rollouts", refs[1], mine, 100, &n),
               DLSLIME_STATUS_OUT_OF_RANGE);
  CHECK_OK(dlslime_ring_client_fetch_into(c, "rollouts", refs[1], mine, CAP, &n));
  CHECK(n == CAP - 1000 && matches(mine, n, 101));
  free(mine);
  /* a batch */
  dlslime_ring_payload_t *ps[4];
  int32_t sts[4];
  CHECK_OK(dlslime_ring_client_fetch_batch(c, "rollouts", refs + 2, 4, ps, sts));
  for (unsigned i = 0; i < 4; i++) {
    CHECK_STATUS(sts[i], DLSLIME_STATUS_OK);
    CHECK(ps[i] != NULL && dlslime_ring_payload_len(ps[i]) == CAP - (i + 2) * 1000);
    CHECK(ps[i] != NULL && matches((const uint8_t *)dlslime_ring_payload_data(ps[i]),
                                   CAP - (i + 2) * 1000, 102 + i));
    dlslime_ring_payload_free(ps[i]);
  }
  CHECK_STATUS(dlslime_ring_client_fetch(c, "nobody", refs[2], &p), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_STATUS(dlslime_ring_client_fetch(NULL, "rollouts", refs[2], &p),
               DLSLIME_STATUS_NULL_PARAMETER);
  dlslime_ring_client_counters_t k;
  CHECK_OK(dlslime_ring_client_counters(c, &k));
  CHECK(k.fetched == NPAY && k.stale == 1 && k.quarantines == 0 && k.sessions_created == 1);
  CHECK_OK(dlslime_ring_client_close(c));
  dlslime_ring_client_free(c);
  dlslime_endpoint_free(ep);
  dlslime_tcp_context_free(ctx);
  dlslime_memory_pool_free(pool);
  send_msg(wfd, "done");
  char *bye = recv_msg(rfd);
  free(bye);
}

typedef struct {
  pid_t pid;
  int rfd, wfd;
} child_t;

/* Forks the server of `transport` (before this process makes any library call). */
static child_t spawn_server(const char *transport) {
  child_t ch;
  int p2c[2], c2p[2];
  if (pipe(p2c) != 0 || pipe(c2p) != 0) {
    perror("pipe");
    exit(2);
  }
  fflush(NULL);
  ch.pid = fork();
  if (ch.pid < 0) {
    perror("fork");
    exit(2);
  }
  if (ch.pid == 0) {
    g_transport = transport;
    close(p2c[1]);
    close(c2p[0]);
    exit(server(p2c[0], c2p[1]));
  }
  close(p2c[0]);
  close(c2p[1]);
  ch.rfd = c2p[0];
  ch.wfd = p2c[1];
  return ch;
}

static void remote(const char *transport, child_t ch) {
  g_transport = transport;
  client(ch.rfd, ch.wfd);
  int status = 0;
  waitpid(ch.pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(ch.rfd);
  close(ch.wfd);
}

int main(void) {
  child_t tcp = spawn_server("tcp");
  child_t shm = spawn_server("shm");
  remote("tcp", tcp);
  remote("shm", shm);
  g_role = "local";
  local_ring();
  return finish("test_ring");
}
