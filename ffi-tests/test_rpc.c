/*
 * SlimeRPC through the C ABI, two processes, once over TCP and once over shared memory
 * (session memory made before connect). The program forks per transport: the child
 * serves (echo, an exception, an unknown tag, a 3 MiB bulk reply), the parent calls:
 * raw and inplace calls, a bulk request with a content check, an exception reply, an
 * unknown method, a wait that times out and a second wait that gets the reply, and
 * close (the child's poll then reports the peer gone). Uses only the public header.
 *
 * Exit status: 0 all passed, 1 a check failed, 2 a fatal error.
 */
#include <dlslime.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "pipe.h"

#define TAG_ECHO 0
#define TAG_FAIL 1
#define TAG_BIG 2
#define TAG_SLEEP 3
#define TAG_UPPER 4 /* upper-cases the request in place, answers from its buffer */
#define BIG_LEN ((size_t)3 << 20)

typedef struct {
  dlslime_tcp_context_t *ctx;
  dlslime_memory_pool_t *pool;
  dlslime_endpoint_t *ep;
  dlslime_rpc_memory_t *mem;
  dlslime_rpc_session_t *sess;
  dlslime_rpc_options_t opts;
} side_t;

static int g_shm = 0;

/* Endpoint + session memory, connected through the pipe pair, then the session. */
static void side_open(side_t *s, int rfd, int wfd) {
  memset(s, 0, sizeof *s);
  dlslime_rpc_options_init(&s->opts);
  s->opts.slot_size = 4096;
  s->opts.slot_count = 4;
  s->opts.default_timeout_ms = 20000;
  REQUIRE_OK(dlslime_memory_pool_new(&s->pool));
  /* memory before connect: on shm the peer maps it */
  REQUIRE_OK(dlslime_rpc_memory_new(s->pool, &s->opts, &s->mem));
  if (g_shm) {
    REQUIRE_OK(dlslime_shm_endpoint_new(s->pool, NULL, &s->ep));
  } else {
    dlslime_tcp_options_t o;
    dlslime_tcp_options_init(&o);
    o.bind = "127.0.0.1:0";
    REQUIRE_OK(dlslime_tcp_context_new(&o, &s->ctx));
    REQUIRE_OK(dlslime_tcp_endpoint_new(s->ctx, s->pool, &s->ep));
  }
  char *info = NULL;
  REQUIRE_OK(dlslime_endpoint_info(s->ep, &info));
  send_msg(wfd, info);
  dlslime_string_free(info);
  char *peer = recv_msg(rfd);
  REQUIRE_OK(dlslime_endpoint_connect(s->ep, peer));
  free(peer);
  REQUIRE_OK(dlslime_rpc_session_new(s->ep, s->mem, &s->opts, &s->sess));
  dlslime_rpc_memory_free(s->mem); /* the session keeps its own reference */
  s->mem = NULL;
}

static void side_close(side_t *s) {
  dlslime_rpc_session_free(s->sess);
  dlslime_endpoint_free(s->ep);
  dlslime_memory_pool_free(s->pool);
  dlslime_tcp_context_free(s->ctx);
}

typedef struct {
  const uint8_t *src;
  size_t n;
} copy_arg_t;

static int64_t copy_writer(void *user, uint8_t *buf, size_t cap) {
  copy_arg_t *a = (copy_arg_t *)user;
  if (a->n > cap) return -1;
  memcpy(buf, a->src, a->n);
  return (int64_t)a->n;
}

static int64_t pattern_writer(void *user, uint8_t *buf, size_t cap) {
  size_t n = *(size_t *)user;
  if (n > cap) return -1;
  for (size_t i = 0; i < n; i++) buf[i] = pat(5, i);
  return (int64_t)n;
}

static int run_server(int rfd, int wfd) {
  g_role = "server";
  side_t s;
  side_open(&s, rfd, wfd);
  for (;;) {
    dlslime_rpc_request_t *r = NULL;
    int32_t st = dlslime_rpc_poll_request(s.sess, 30000, &r);
    if (st == DLSLIME_STATUS_PEER_DISCONNECTED) break; /* the client closed */
    if (st != DLSLIME_STATUS_OK) {
      fprintf(stderr, "[server] poll: %s: %s\n", dlslime_status_str(st), last_error());
      g_failures++;
      break;
    }
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_OK(dlslime_rpc_request_payload(r, &p, &n));
    switch (dlslime_rpc_request_tag(r)) {
      case TAG_ECHO: {
        copy_arg_t a = {p, n};
        CHECK_OK(dlslime_rpc_request_reply_inplace(r, n, copy_writer, &a));
        /* a second answer is refused */
        CHECK_STATUS(dlslime_rpc_request_reply(r, NULL, 0), DLSLIME_STATUS_INVALID_ARGUMENT);
        break;
      }
      case TAG_FAIL:
        CHECK_OK(dlslime_rpc_request_reply_error(r, "ValueError", "bad value", "tb line"));
        break;
      case TAG_BIG: {
        size_t len = BIG_LEN;
        CHECK_OK(dlslime_rpc_request_reply_inplace(r, len, pattern_writer, &len));
        break;
      }
      case TAG_UPPER: {
        uint8_t *w = (uint8_t *)p; /* the payload is writable until answered */
        for (size_t i = 0; i < n; i++)
          if (w[i] >= 'a' && w[i] <= 'z') w[i] = (uint8_t)(w[i] - 32);
        CHECK_OK(dlslime_rpc_request_reply_from_payload(r, n));
        break;
      }
      case TAG_SLEEP:
        usleep(300 * 1000);
        CHECK_OK(dlslime_rpc_request_reply(r, (const uint8_t *)"zz", 2));
        break;
      default:
        break; /* freed unanswered: the library sends an exception reply */
    }
    dlslime_rpc_request_free(r);
  }
  side_close(&s);
  return finish(g_shm ? "test_rpc shm (server)" : "test_rpc tcp (server)");
}

/* Whether the snapshot's client row of `method` starts with `prefix` (keys are sorted:
 * calls, errors, latency_ns, method, side, timeouts). */
static int client_row_starts(const char *snap, const char *method, const char *prefix) {
  char key[128];
  snprintf(key, sizeof key, "\"method\":\"%s\",\"side\":\"client\"", method);
  const char *at = strstr(snap, key);
  if (at == NULL) {
    fprintf(stderr, "[%s] snapshot lacks %s\n", g_role, key);
    return 0;
  }
  const char *row = at;
  while (row > snap && strncmp(row, "{\"calls\":", 9) != 0) row--;
  if (strncmp(row, prefix, strlen(prefix)) == 0) return 1;
  fprintf(stderr, "[%s] client row of %s: %.40s, expected %s\n", g_role, method, row, prefix);
  return 0;
}

static int run_client(int rfd, int wfd, pid_t child) {
  g_role = "client";
  side_t s;
  side_open(&s, rfd, wfd);
  CHECK(dlslime_rpc_session_slot_capacity(s.sess) == 4096 - 16);

  /* method names for the per-method counters (index = tag); bad arguments change nothing */
  dlslime_obs_set_enabled(true);
  const char *names[] = {"echo", "fail", "big", "sleep", "upper"};
  CHECK_OK(dlslime_rpc_session_set_method_names(s.sess, names, 5));
  const char *holes[] = {"x", NULL};
  const char *not_utf8[] = {"x", "\xff"};
  CHECK_STATUS(dlslime_rpc_session_set_method_names(NULL, names, 5), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_rpc_session_set_method_names(s.sess, NULL, 2), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_rpc_session_set_method_names(s.sess, holes, 2), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_rpc_session_set_method_names(s.sess, not_utf8, 2), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(dlslime_rpc_session_set_method_names(s.sess, names, 65537), DLSLIME_STATUS_INVALID_ARGUMENT);

  /* raw echo, small and bulk (5 slots' worth) */
  size_t sizes[] = {0, 1, 4080, 4081, 5 * 4096 + 3};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    uint8_t *m = (uint8_t *)malloc(n + 1);
    for (size_t i = 0; i < n; i++) m[i] = pat((unsigned)k, i);
    dlslime_rpc_call_t *c = NULL;
    REQUIRE_OK(dlslime_rpc_call(s.sess, TAG_ECHO, m, n, &c));
    CHECK_OK(dlslime_rpc_call_wait(c, 0));
    const uint8_t *r = NULL;
    size_t rn = 99;
    CHECK_OK(dlslime_rpc_call_reply(c, &r, &rn));
    CHECK(rn == n);
    CHECK(!dlslime_rpc_call_is_exception(c));
    CHECK(n == 0 || (r != NULL && memcmp(r, m, n) == 0));
    dlslime_rpc_call_free(c);
    free(m);
  }

  /* inplace request, 1 MiB (bulk): the server echoes it */
  size_t n = (size_t)1 << 20;
  dlslime_rpc_call_t *c = NULL;
  REQUIRE_OK(dlslime_rpc_call_inplace(s.sess, TAG_ECHO, n, pattern_writer, &n, &c));
  CHECK_OK(dlslime_rpc_call_wait(c, 0));
  const uint8_t *r = NULL;
  size_t rn = 0;
  CHECK_OK(dlslime_rpc_call_reply(c, &r, &rn));
  CHECK(rn == n);
  int same = rn == n;
  for (size_t i = 0; same && i < n; i++) same = r[i] == pat(5, i);
  CHECK(same);
  dlslime_rpc_call_free(c);

  /* a writer that fails: nothing is sent */
  size_t too_big = 10;
  CHECK_STATUS(dlslime_rpc_call_inplace(s.sess, TAG_ECHO, 5, pattern_writer, &too_big, &c),
               DLSLIME_STATUS_INVALID_ARGUMENT);

  /* reply from the request's own buffer, slot-sized and bulk (zero-copy) */
  size_t un[] = {7, 100000};
  for (size_t k = 0; k < 2; k++) {
    uint8_t *m = (uint8_t *)malloc(un[k]);
    for (size_t i = 0; i < un[k]; i++) m[i] = (uint8_t)('a' + i % 26);
    REQUIRE_OK(dlslime_rpc_call(s.sess, TAG_UPPER, m, un[k], &c));
    CHECK_OK(dlslime_rpc_call_wait(c, 0));
    CHECK_OK(dlslime_rpc_call_reply(c, &r, &rn));
    CHECK(rn == un[k]);
    int up = rn == un[k];
    for (size_t i = 0; up && i < un[k]; i++) up = r[i] == (uint8_t)('A' + i % 26);
    CHECK(up);
    dlslime_rpc_call_free(c);
    free(m);
  }

  /* bulk reply built in place by the server */
  REQUIRE_OK(dlslime_rpc_call(s.sess, TAG_BIG, NULL, 0, &c));
  CHECK_OK(dlslime_rpc_call_wait(c, 0));
  CHECK_OK(dlslime_rpc_call_reply(c, &r, &rn));
  CHECK(rn == BIG_LEN);
  same = rn == BIG_LEN;
  for (size_t i = 0; same && i < BIG_LEN; i++) same = r[i] == pat(5, i);
  CHECK(same);
  dlslime_rpc_call_free(c);

  /* exception reply */
  REQUIRE_OK(dlslime_rpc_call(s.sess, TAG_FAIL, (const uint8_t *)"x", 1, &c));
  CHECK_OK(dlslime_rpc_call_wait(c, 0));
  CHECK(dlslime_rpc_call_is_exception(c));
  CHECK_OK(dlslime_rpc_call_reply(c, &r, &rn));
  CHECK(rn > 0 && memmem(r, rn, "\"type\":\"ValueError\"", 19) != NULL);
  CHECK(rn > 0 && memmem(r, rn, "bad value", 9) != NULL);
  dlslime_rpc_call_free(c);

  /* the calls so far, under the names set above */
  char *snap = NULL;
  REQUIRE_OK(dlslime_obs_snapshot(&snap));
  CHECK(client_row_starts(snap, "upper", "{\"calls\":2,\"errors\":0,"));
  CHECK(client_row_starts(snap, "big", "{\"calls\":1,\"errors\":0,"));
  CHECK(client_row_starts(snap, "fail", "{\"calls\":1,\"errors\":1,"));
  CHECK(client_row_starts(snap, "echo", "{\"calls\":"));
  CHECK(strstr(snap, "\"method\":\"tag:") == NULL);
  dlslime_string_free(snap);

  /* unknown method: the server frees the request unanswered -> exception reply */
  REQUIRE_OK(dlslime_rpc_call(s.sess, 77, NULL, 0, &c));
  CHECK_OK(dlslime_rpc_call_wait(c, 0));
  CHECK(dlslime_rpc_call_is_exception(c));
  dlslime_rpc_call_free(c);

  /* reply before wait: PENDING; a short wait times out; the next one gets the reply */
  REQUIRE_OK(dlslime_rpc_call(s.sess, TAG_SLEEP, NULL, 0, &c));
  CHECK_STATUS(dlslime_rpc_call_reply(c, &r, &rn), DLSLIME_STATUS_PENDING);
  double t0 = now_ms();
  CHECK_STATUS(dlslime_rpc_call_wait(c, 50), DLSLIME_STATUS_TIMEOUT);
  CHECK(now_ms() - t0 >= 45);
  CHECK_OK(dlslime_rpc_call_wait(c, 0));
  CHECK_OK(dlslime_rpc_call_reply(c, &r, &rn));
  CHECK(rn == 2 && memcmp(r, "zz", 2) == 0);
  dlslime_rpc_call_free(c);

  /* a tag with flag bits is refused; NULL arguments are reported */
  CHECK_STATUS(dlslime_rpc_call(s.sess, 1u << 29, NULL, 0, &c), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(dlslime_rpc_call(NULL, 0, NULL, 0, &c), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_rpc_call(s.sess, 0, NULL, 3, &c), DLSLIME_STATUS_NULL_PARAMETER);

  /* close: later calls fail, the server's poll reports the peer gone and it exits 0 */
  CHECK_OK(dlslime_rpc_session_close(s.sess));
  CHECK(dlslime_rpc_session_closed(s.sess));
  CHECK_STATUS(dlslime_rpc_call(s.sess, TAG_ECHO, NULL, 0, &c), DLSLIME_STATUS_SHUT_DOWN);
  int status = 0;
  double deadline = now_ms() + 30000;
  pid_t w = 0;
  while ((w = waitpid(child, &status, WNOHANG)) == 0 && now_ms() < deadline) usleep(10000);
  if (w == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
  }
  CHECK(w == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  side_close(&s);
  return finish(g_shm ? "test_rpc shm (client)" : "test_rpc tcp (client)");
}

static int run(int shm) {
  g_shm = shm;
  g_failures = 0;
  g_checks = 0;
  int to_child, from_child;
  pid_t pid = fork_child(run_server, exit, &to_child, &from_child);
  if (pid < 0) return 2;
  int rc = run_client(from_child, to_child, pid);
  close(from_child);
  close(to_child);
  return rc;
}

int main(void) {
  /* One fresh process per transport, forked before any library call, so every fork in
   * run() happens in a process without library threads. */
  int rc = 0;
  for (int shm = 0; shm <= 1; shm++) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) exit(run(shm));
    int st = 0;
    waitpid(pid, &st, 0);
    int r = WIFEXITED(st) ? WEXITSTATUS(st) : 2;
    if (r != 0) fprintf(stderr, "test_rpc %s: exit status %d\n", shm ? "shm" : "tcp", r);
    if (rc == 0) rc = r;
  }
  return rc;
}
