/*
 * Two-process test of the C ABI over one transport, named by the first argument: "tcp"
 * (the default), "shm" (regions from dlslime_alloc_shared, so one-sided operations
 * take the mapped single-copy path) or "rdma" (two data QPs on a verbs device: the
 * soft-RoCE VM of scripts/test-rdma.sh; DLSLIME_TEST_RDMA_DEVICES="target,initiator"
 * picks the devices). Over RDMA a refused access breaks the connection on both sides
 * (RC), so the bad-access step ends with the wrong-key write and the SIGKILL step is
 * left to tests/rdma_endpoint.rs. The program forks: the child is the target, the
 * parent the initiator. They exchange endpoint_info over a pipe, connect, and check
 * with content checks: write, read (striped over lanes), write_with_imm + imm_recv,
 * send/recv both ways; malformed, wrong-transport and wrong-version endpoint_info; a
 * wrong remote key and an address outside every region (the op fails, the target is
 * untouched and keeps serving); and the target killed with SIGKILL mid-transfer (every
 * pending future fails with DLSLIME_STATUS_PEER_DISCONNECTED within 3 s).
 *
 * Exit status: 0 all passed, 1 a check failed, 2 a fatal error, 77 the transport is not
 * available (DLSLIME_STATUS_UNSUPPORTED): not run.
 */
#include <dlslime.h>

#include <errno.h>
#include <inttypes.h>
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

#define BUF_LEN ((size_t)4 << 20)

/* ---- one side: context + pool + registered buffer + endpoint ---- */

typedef struct {
  dlslime_tcp_context_t *ctx;
  dlslime_rdma_context_t *rctx;
  dlslime_memory_pool_t *pool;
  dlslime_endpoint_t *ep;
  uint8_t *buf;
  dlslime_mr_handle_t mr;
} side_t;

static const char *g_transport = "tcp";

static int is_shm(void) { return strcmp(g_transport, "shm") == 0; }

static int is_rdma(void) { return strcmp(g_transport, "rdma") == 0; }

/* A new endpoint of the transport under test over the side's pool. */
static int32_t endpoint_new(side_t *s, dlslime_endpoint_t **out) {
  if (is_shm()) {
    dlslime_shm_options_t o;
    dlslime_shm_options_init(&o);
    o.default_timeout_ms = 20000;
    return dlslime_shm_endpoint_new(s->pool, &o, out);
  }
  if (is_rdma()) return dlslime_rdma_endpoint_new(s->rctx, s->pool, 2, out);
  return dlslime_tcp_endpoint_new(s->ctx, s->pool, out);
}

/* The TCP or RDMA context of a side (shared memory has none). */
static int32_t context_open(side_t *s) {
  if (is_rdma()) {
    /* "target,initiator" device names, or the first device for both */
    char dev[64] = "";
    const char *want = getenv("DLSLIME_TEST_RDMA_DEVICES");
    if (want) {
      const char *comma = strchr(want, ',');
      const char *mine = (strcmp(g_role, "target") == 0 || !comma) ? want : comma + 1;
      size_t n = strcspn(mine, ",");
      if (n >= sizeof dev) n = sizeof dev - 1;
      memcpy(dev, mine, n);
      dev[n] = '\0';
    }
    dlslime_rdma_options_t ro;
    dlslime_rdma_options_init(&ro);
    ro.device = dev;
    ro.default_timeout_ms = 20000;
    return dlslime_rdma_context_new(&ro, &s->rctx);
  }
  dlslime_tcp_options_t opts;
  dlslime_tcp_options_init(&opts);
  opts.bind = "127.0.0.1:0";
  opts.lanes = 2;
  opts.chunk_size = 256 * 1024; /* stripe the MiB-sized transfers over both lanes */
  opts.default_timeout_ms = 20000;
  return dlslime_tcp_context_new(&opts, &s->ctx);
}

static int32_t side_open(side_t *s) {
  memset(s, 0, sizeof *s);
  if (!is_shm()) {
    int32_t st = context_open(s);
    if (st != DLSLIME_STATUS_OK) return st;
  }
  REQUIRE_OK(dlslime_memory_pool_new(&s->pool));
  if (is_shm()) {
    void *p = NULL;
    REQUIRE_OK(dlslime_alloc_shared(BUF_LEN, &p));
    s->buf = (uint8_t *)p;
  } else {
    s->buf = (uint8_t *)malloc(BUF_LEN);
  }
  fill(s->buf, BUF_LEN, 9);
  REQUIRE_OK(dlslime_memory_pool_register(s->pool, "buf", s->buf, BUF_LEN, &s->mr));
  return endpoint_new(s, &s->ep);
}

static void side_close(side_t *s) {
  dlslime_endpoint_free(s->ep);
  dlslime_memory_pool_free(s->pool);
  dlslime_tcp_context_free(s->ctx);
  dlslime_rdma_context_free(s->rctx);
  if (is_shm()) {
    CHECK_OK(dlslime_free_shared(s->buf));
    /* a second free is refused, not a double munmap */
    CHECK_STATUS(dlslime_free_shared(s->buf), DLSLIME_STATUS_UNKNOWN_HANDLE);
  } else {
    free(s->buf);
  }
}

/* ---- the target (child) ---- */

static int run_target(int rfd, int wfd) {
  g_role = "target";
  alarm(90);
  side_t s;
  int32_t st = side_open(&s);
  if (st != DLSLIME_STATUS_OK) {
    int unavailable = st == DLSLIME_STATUS_UNSUPPORTED || st == DLSLIME_STATUS_RDMA_UNAVAILABLE;
    if (unavailable) fprintf(stderr, "[%s] transport unavailable: %s\n", g_role, last_error());
    send_msg(wfd, unavailable ? "unsupported" : "error");
    return unavailable ? 77 : 2;
  }
  char *info = NULL;
  REQUIRE_OK(dlslime_endpoint_info(s.ep, &info));
  send_msg(wfd, info);
  dlslime_string_free(info);
  char *peer = recv_msg(rfd);
  REQUIRE_OK(dlslime_endpoint_connect(s.ep, peer));
  free(peer);
  send_msg(wfd, "ready");

  static uint8_t rbuf[65536];
  for (;;) {
    char *cmd = recv_msg(rfd);
    unsigned long long off = 0, len = 0;
    unsigned seed = 0;
    char reply[256];
    if (sscanf(cmd, "check %llu %llu %u", &off, &len, &seed) == 3) {
      send_msg(wfd, matches(s.buf + off, (size_t)len, seed) ? "ok" : "bad content");
    } else if (sscanf(cmd, "expect_imm %llu %llu %u", &off, &len, &seed) == 3) {
      dlslime_future_t *f = NULL;
      REQUIRE_OK(dlslime_endpoint_imm_recv(s.ep, 0, &f));
      send_msg(wfd, "posted");
      int32_t w = dlslime_future_wait_for(f, 15000);
      int ok = w == DLSLIME_STATUS_OK && matches(s.buf + off, (size_t)len, seed);
      snprintf(reply, sizeof reply, "%s imm=%" PRId32 " status=%d", ok ? "ok" : "bad", dlslime_future_imm_data(f), (int)w);
      dlslime_future_free(f);
      send_msg(wfd, reply);
    } else if (sscanf(cmd, "recv_then_reply %llu %u", &len, &seed) == 2) {
      dlslime_future_t *f = NULL;
      REQUIRE_OK(dlslime_endpoint_recv(s.ep, rbuf, sizeof rbuf, 0, &f));
      send_msg(wfd, "posted");
      int32_t w = dlslime_future_wait_for(f, 15000);
      int ok = w == DLSLIME_STATUS_OK && dlslime_future_nbytes(f) == len && matches(rbuf, (size_t)len, seed);
      dlslime_future_free(f);
      /* Reply with 777 bytes of pattern seed+1. */
      fill(rbuf, 777, seed + 1);
      REQUIRE_OK(dlslime_endpoint_send(s.ep, rbuf, 777, 0, &f));
      int32_t w2 = dlslime_future_wait_for(f, 15000);
      dlslime_future_free(f);
      snprintf(reply, sizeof reply, "%s recv=%d send=%d", ok && w2 == DLSLIME_STATUS_OK ? "ok" : "bad", (int)w, (int)w2);
      send_msg(wfd, reply);
    } else if (strcmp(cmd, "idle") == 0) {
      send_msg(wfd, "idle");
    } else if (strcmp(cmd, "quit") == 0) {
      free(cmd);
      break;
    } else {
      send_msg(wfd, "unknown command");
    }
    free(cmd);
  }
  side_close(&s);
  return 0;
}

/* ---- the initiator (parent) ---- */

static int g_rfd, g_wfd;

/* Checks that the target's next answer (to `what`) starts with `want`. */
static void expect(const char *what, const char *want) {
  char *r = recv_msg(g_rfd);
  g_checks++;
  if (strncmp(r, want, strlen(want)) != 0) {
    g_failures++;
    fprintf(stderr, "[%s] FAIL: target answered \"%s\" to \"%s\", want \"%s\"\n", g_role, r, what, want);
  }
  free(r);
}

/* Sends a command to the target and checks that its answer starts with `want`. */
static void ask(const char *cmd, const char *want) {
  send_msg(g_wfd, cmd);
  expect(cmd, want);
}

/* Value of numeric field `key` inside the object `"name":{...}` of a JSON text. */
static unsigned long long json_u64(const char *json, const char *name, const char *key) {
  char pat_name[128], pat_key[128];
  snprintf(pat_name, sizeof pat_name, "\"%s\":{", name);
  snprintf(pat_key, sizeof pat_key, "\"%s\":", key);
  const char *obj = strstr(json, pat_name);
  if (!obj) return 0;
  const char *end = strchr(obj, '}');
  const char *k = strstr(obj, pat_key);
  if (!k || (end && k > end)) return 0;
  return strtoull(k + strlen(pat_key), NULL, 10);
}

/* Copy of `s` with the first `from` replaced by `to`; NULL if `from` is absent. */
static char *replace_once(const char *s, const char *from, const char *to) {
  const char *p = strstr(s, from);
  if (!p) return NULL;
  size_t n = strlen(s) - strlen(from) + strlen(to);
  char *out = (char *)malloc(n + 1);
  size_t head = (size_t)(p - s);
  memcpy(out, s, head);
  strcpy(out + head, to);
  strcat(out, p + strlen(from));
  return out;
}

static void bad_endpoint_info(side_t *me, const char *target_info) {
  dlslime_endpoint_t *e2 = NULL;
  REQUIRE_OK(endpoint_new(me, &e2));
  CHECK_STATUS(dlslime_endpoint_connect(e2, "{not json"), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  CHECK_STATUS(dlslime_endpoint_connect(e2, ""), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  CHECK_STATUS(dlslime_endpoint_connect(e2, "42"), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  char *v = replace_once(target_info, "\"version\":1", "\"version\":99");
  CHECK(v != NULL);
  if (v) {
    CHECK_STATUS(dlslime_endpoint_connect(e2, v), DLSLIME_STATUS_VERSION_MISMATCH);
    CHECK_LAST_ERROR_HAS("99");
  }
  free(v);
  v = is_shm()    ? replace_once(target_info, "\"transport\":\"shm\"", "\"transport\":\"tcp\"")
      : is_rdma() ? replace_once(target_info, "\"transport\":\"rdma\"", "\"transport\":\"tcp\"")
                  : replace_once(target_info, "\"transport\":\"tcp\"", "\"transport\":\"shm\"");
  CHECK(v != NULL);
  if (v) CHECK_STATUS(dlslime_endpoint_connect(e2, v), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  free(v);
  v = replace_once(target_info, "\"rkey\"", "\"rkex\"");
  CHECK(v != NULL);
  if (v) CHECK_STATUS(dlslime_endpoint_connect(e2, v), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  free(v);
  dlslime_endpoint_free(e2);
}

static int run_initiator(pid_t child) {
  g_role = "initiator";
  alarm(90);
  char *tinfo = recv_msg(g_rfd);
  if (strcmp(tinfo, "unsupported") == 0) {
    printf("[%s] NOT RUN: the %s transport is not available (DLSLIME_STATUS_UNSUPPORTED)\n", g_role, g_transport);
    free(tinfo);
    waitpid(child, NULL, 0);
    return 77;
  }
  side_t s;
  REQUIRE_OK(side_open(&s));
  char *info = NULL;
  REQUIRE_OK(dlslime_endpoint_info(s.ep, &info));
  send_msg(g_wfd, info);
  dlslime_string_free(info);
  REQUIRE_OK(dlslime_endpoint_connect(s.ep, tinfo));
  char *ready = recv_msg(g_rfd);
  CHECK(strcmp(ready, "ready") == 0);
  free(ready);

  dlslime_remote_handle_t rb = 99;
  REQUIRE_OK(dlslime_endpoint_remote_handle(s.ep, "buf", &rb));
  dlslime_future_t *f = NULL;
  const size_t MiB = (size_t)1 << 20;

  /* 1. write: local[0, 1 MiB) -> remote[0, 1 MiB), then 3 MiB as 3 assignments. */
  fill(s.buf, MiB, 1);
  dlslime_assignment_t a = asg(s.mr, rb, 0, 0, MiB);
  CHECK_OK(dlslime_endpoint_write(s.ep, &a, 1, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  dlslime_future_free(f);
  ask("check 0 1048576 1", "ok");
  printf("[%s] verified: write of 1 MiB applied at the target\n", g_role);

  /* 2. read: remote[1 MiB, 2 MiB) (the target's initial pattern 9) -> local[2 MiB, ...). */
  memset(s.buf + 2 * MiB, 0, MiB);
  dlslime_assignment_t rd[4];
  for (int i = 0; i < 4; i++) rd[i] = asg(s.mr, rb, MiB + (size_t)i * MiB / 4, 2 * MiB + (size_t)i * MiB / 4, MiB / 4);
  CHECK_OK(dlslime_endpoint_read(s.ep, rd, 4, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  dlslime_future_free(f);
  {
    /* pattern 9 as seen from offset 1 MiB of the target's buffer */
    int ok = 1;
    for (size_t i = 0; i < MiB; i++)
      if (s.buf[2 * MiB + i] != pat(9, MiB + i)) { ok = 0; break; }
    CHECK(ok);
  }
  printf("[%s] verified: read of 1 MiB (4 assignments) matches the target's memory\n", g_role);

  /* 3. write_with_imm + imm_recv at the target. */
  send_msg(g_wfd, "expect_imm 2097152 4096 3");
  char *r = recv_msg(g_rfd);
  CHECK(strcmp(r, "posted") == 0);
  free(r);
  fill(s.buf + 3 * MiB, 4096, 3);
  a = asg(s.mr, rb, 2 * MiB, 3 * MiB, 4096);
  CHECK_OK(dlslime_endpoint_write_with_imm(s.ep, &a, 1, 0x5eed, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  dlslime_future_free(f);
  expect("imm_recv at target", "ok imm=24301 ");
  printf("[%s] verified: write_with_imm data and imm 0x5eed arrived at the target\n", g_role);

  /* 4. send/recv both ways. */
  static uint8_t msg[65536], back[4096];
  dlslime_future_t *rf = NULL;
  memset(back, 0, sizeof back);
  CHECK_OK(dlslime_endpoint_recv(s.ep, back, sizeof back, 0, &rf));
  send_msg(g_wfd, "recv_then_reply 50000 5");
  r = recv_msg(g_rfd);
  CHECK(strcmp(r, "posted") == 0);
  free(r);
  fill(msg, 50000, 5);
  CHECK_OK(dlslime_endpoint_send(s.ep, msg, 50000, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  dlslime_future_free(f);
  expect("target recv/reply", "ok");
  CHECK_OK(dlslime_future_wait_for(rf, 15000));
  CHECK(dlslime_future_nbytes(rf) == 777);
  CHECK(matches(back, 777, 6));
  dlslime_future_free(rf);
  printf("[%s] verified: send 50000 B -> target, target replied 777 B\n", g_role);

  /* 5. malformed / wrong-version / wrong-transport endpoint_info. */
  bad_endpoint_info(&s, tinfo);
  printf("[%s] verified: malformed, wrong-transport and wrong-version endpoint_info refused\n", g_role);

  /* 6. wrong key, address outside every region: fails, target untouched and serving. */
  unsigned long long taddr = json_u64(tinfo, "buf", "addr");
  unsigned long long tkey = json_u64(tinfo, "buf", "rkey");
  CHECK(taddr != 0);
  char region[256];
  dlslime_remote_handle_t bad_key = 0, outside = 0;
  snprintf(region, sizeof region, "{\"addr\":%llu,\"length\":4096,\"rkey\":%llu}", taddr, tkey ^ 1u);
  CHECK_OK(dlslime_endpoint_register_remote(s.ep, "bad_key", region, &bad_key));
  snprintf(region, sizeof region, "{\"addr\":%llu,\"length\":4096,\"rkey\":%llu}",
           taddr + (unsigned long long)BUF_LEN + 65536, tkey);
  CHECK_OK(dlslime_endpoint_register_remote(s.ep, "outside", region, &outside));
  fill(s.buf, 4096, 7);
  a = asg(s.mr, bad_key, 0, 0, 4096);
  CHECK_OK(dlslime_endpoint_write(s.ep, &a, 1, 0, &f));
  CHECK_STATUS(dlslime_future_wait(f), DLSLIME_STATUS_REMOTE_ACCESS);
  dlslime_future_free(f);
  if (is_rdma()) {
    ask("check 0 4096 1", "ok"); /* untouched; the connection is broken now (RC) */
    CHECK_STATUS(dlslime_endpoint_write(s.ep, &a, 1, 0, &f), DLSLIME_STATUS_REMOTE_ACCESS);
    printf("[%s] verified: wrong rkey refused by the target's NIC, target untouched\n", g_role);
    send_msg(g_wfd, "quit");
    int wst = 0;
    CHECK(waitpid(child, &wst, 0) == child);
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    free(tinfo);
    side_close(&s);
    return finish("test_two_process rdma");
  }
  a = asg(s.mr, outside, 0, 0, 4096);
  CHECK_OK(dlslime_endpoint_write(s.ep, &a, 1, 0, &f));
  CHECK_STATUS(dlslime_future_wait(f), DLSLIME_STATUS_REMOTE_ACCESS);
  dlslime_future_free(f);
  memset(s.buf + 3 * MiB, 0xEE, 4096);
  a = asg(s.mr, outside, 0, 3 * MiB, 4096);
  CHECK_OK(dlslime_endpoint_read(s.ep, &a, 1, 0, &f));
  CHECK_STATUS(dlslime_future_wait(f), DLSLIME_STATUS_REMOTE_ACCESS);
  dlslime_future_free(f);
  {
    int untouched = 1;
    for (size_t i = 0; i < 4096; i++)
      if (s.buf[3 * MiB + i] != 0xEE) untouched = 0;
    CHECK(untouched);
  }
  ask("check 0 4096 1", "ok"); /* still the step-1 content */
  fill(s.buf, 4096, 8);
  a = asg(s.mr, rb, 3 * MiB, 0, 4096);
  CHECK_OK(dlslime_endpoint_write(s.ep, &a, 1, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  dlslime_future_free(f);
  ask("check 3145728 4096 8", "ok");
  printf("[%s] verified: wrong key and out-of-region address refused; target untouched and serving\n", g_role);

  /* 7. SIGKILL the target mid-transfer: every pending future fails within 3 s. */
  ask("idle", "idle");
  dlslime_future_t *pend_recv = NULL, *pend_imm = NULL, *big = NULL;
  CHECK_OK(dlslime_endpoint_recv(s.ep, back, sizeof back, 0, &pend_recv));
  CHECK_OK(dlslime_endpoint_imm_recv(s.ep, 0, &pend_imm));
  dlslime_assignment_t many[16];
  for (int i = 0; i < 16; i++) many[i] = asg(s.mr, rb, 0, 0, BUF_LEN);
  CHECK_OK(dlslime_endpoint_write(s.ep, many, 16, 0, &big)); /* 64 MiB */
  kill(child, SIGKILL);
  double t0 = now_ms();
  int32_t st_recv = dlslime_future_wait_for(pend_recv, 5000);
  int32_t st_imm = dlslime_future_wait_for(pend_imm, 5000);
  int32_t st_big = dlslime_future_wait_for(big, 5000);
  double elapsed = now_ms() - t0;
  CHECK_STATUS(st_recv, DLSLIME_STATUS_PEER_DISCONNECTED);
  CHECK_STATUS(st_imm, DLSLIME_STATUS_PEER_DISCONNECTED);
  CHECK(st_big == DLSLIME_STATUS_OK || st_big == DLSLIME_STATUS_PEER_DISCONNECTED);
  if (st_big != DLSLIME_STATUS_OK && st_big != DLSLIME_STATUS_PEER_DISCONNECTED)
    fprintf(stderr, "[%s] 64 MiB write ended with %d (%s): %s\n", g_role, (int)st_big, dlslime_status_str(st_big), last_error());
  CHECK(elapsed <= 3000.0);
  printf("[%s] verified: after SIGKILL pending recv/imm_recv failed with \"%s\"/\"%s\" in %.0f ms; "
         "the in-flight 64 MiB write ended \"%s\"\n",
         g_role, dlslime_status_str(st_recv), dlslime_status_str(st_imm), elapsed, dlslime_status_str(st_big));
  dlslime_future_free(pend_recv);
  dlslime_future_free(pend_imm);
  dlslime_future_free(big);
  /* A new operation to the dead peer fails too, within its deadline. */
  a = asg(s.mr, rb, 0, 0, 4096);
  int32_t st_after = dlslime_endpoint_write(s.ep, &a, 1, 3000, &f);
  if (st_after == DLSLIME_STATUS_OK) {
    st_after = dlslime_future_wait_for(f, 6000);
    dlslime_future_free(f);
  }
  CHECK(st_after != DLSLIME_STATUS_OK);
  int wst = 0;
  CHECK(waitpid(child, &wst, 0) == child);
  CHECK(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);

  free(tinfo);
  side_close(&s);
  return finish(is_shm() ? "test_two_process shm" : "test_two_process tcp");
}

int main(int argc, char **argv) {
  if (argc > 1) g_transport = argv[1];
  if (strcmp(g_transport, "tcp") != 0 && !is_shm() && !is_rdma()) {
    fprintf(stderr, "usage: %s [tcp|shm|rdma]\n", argv[0]);
    return 2;
  }
  int p2c[2], c2p[2];
  if (pipe(p2c) != 0 || pipe(c2p) != 0) {
    perror("pipe");
    return 2;
  }
  fflush(NULL);
  pid_t pid = fork(); /* before any library call: no Rust threads exist yet */
  if (pid < 0) {
    perror("fork");
    return 2;
  }
  if (pid == 0) {
    close(p2c[1]);
    close(c2p[0]);
    int rc = run_target(p2c[0], c2p[1]);
    if (g_failures) {
      char name[64];
      snprintf(name, sizeof name, "test_two_process %s (target)", g_transport);
      rc = finish(name);
    }
    exit(rc);
  }
  close(p2c[0]);
  close(c2p[1]);
  g_rfd = c2p[0];
  g_wfd = p2c[1];
  return run_initiator(pid);
}
