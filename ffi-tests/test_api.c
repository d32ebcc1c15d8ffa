/*
 * Single-process tests of the C ABI: version, status strings, last error, NULL
 * arguments for every object family, unknown handles, out-of-range offsets, memory
 * pool register/alias/unregister, mr_info JSON, options, futures, RDMA availability
 * (RDMA_UNAVAILABLE without libibverbs or a device); and, when the TCP
 * transport is available, two endpoints connected over loopback in this process.
 *
 * Exit status: 0 all passed, 1 a check failed, 77 the non-TCP checks passed but the
 * TCP part could not run (the transport reported DLSLIME_STATUS_UNSUPPORTED).
 */
#include <dlslime.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#ifndef DLSLIME_EXPECT_VERSION
#error "compile with -DDLSLIME_EXPECT_VERSION=\"x.y.z\" (the version in Cargo.toml)"
#endif

static dlslime_future_t *const SENTINEL_FUTURE = (dlslime_future_t *)(uintptr_t)0x5151;

static void test_version(void) {
  char want[64];
  snprintf(want, sizeof want, "%d.%d.%d", DLSLIME_VERSION_MAJOR, DLSLIME_VERSION_MINOR,
           DLSLIME_VERSION_PATCH);
  CHECK(dlslime_version() != NULL);
  CHECK(strcmp(dlslime_version(), want) == 0);
  CHECK(strcmp(dlslime_version(), DLSLIME_EXPECT_VERSION) == 0);
  CHECK(dlslime_version_number() == (uint32_t)DLSLIME_VERSION_NUMBER);
  CHECK(DLSLIME_VERSION_NUMBER == ((DLSLIME_VERSION_MAJOR << 16) | (DLSLIME_VERSION_MINOR << 8) |
                                   DLSLIME_VERSION_PATCH));
}

static void test_status_strings(void) {
  CHECK(DLSLIME_STATUS_OK == 0);
  CHECK(DLSLIME_STATUS_NULL_PARAMETER == 101);
  CHECK(DLSLIME_STATUS_TIMEOUT == 402);
  CHECK(DLSLIME_STATUS_FAILED == 403);
  CHECK(DLSLIME_STATUS_PEER_DISCONNECTED == 405);
  CHECK(DLSLIME_STATUS_PANIC == 599);
  CHECK(strcmp(dlslime_status_str(DLSLIME_STATUS_OK), "ok") == 0);
  CHECK(strcmp(dlslime_status_str(DLSLIME_STATUS_OUT_OF_RANGE), "out of range") == 0);
  CHECK(strcmp(dlslime_status_str(DLSLIME_STATUS_PEER_DISCONNECTED), "peer disconnected") == 0);
  CHECK(strcmp(dlslime_status_str(DLSLIME_STATUS_PANIC), "panic") == 0);
  CHECK(strcmp(dlslime_status_str(12345), "unknown status") == 0);
  CHECK(strcmp(dlslime_status_str(-1), "unknown status") == 0);
  /* Static strings: the same pointer every time. */
  CHECK(dlslime_status_str(DLSLIME_STATUS_IO) == dlslime_status_str(DLSLIME_STATUS_IO));
}

static void test_last_error(void) {
  char buf[256];
  size_t n = 99;
  dlslime_last_error_clear();
  CHECK_OK(dlslime_last_error_message(buf, sizeof buf, &n));
  CHECK(n == 0 && buf[0] == '\0');

  CHECK_STATUS(dlslime_memory_pool_new(NULL), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_LAST_ERROR_HAS("out");
  CHECK_LAST_ERROR_HAS("NULL");

  /* Length query without a buffer, then truncation. */
  size_t full = 0;
  CHECK_OK(dlslime_last_error_message(NULL, 0, &full));
  CHECK(full > 4);
  char small[4];
  memset(small, 'x', sizeof small);
  n = 0;
  CHECK_OK(dlslime_last_error_message(small, sizeof small, &n));
  CHECK(n == full);
  CHECK(small[3] == '\0' && strlen(small) == 3);
  CHECK_OK(dlslime_last_error_message(buf, sizeof buf, NULL));
  CHECK(strlen(buf) == full);
  CHECK_STATUS(dlslime_last_error_message(NULL, 5, &n), DLSLIME_STATUS_NULL_PARAMETER);

  /* A successful call leaves the message alone. */
  dlslime_memory_pool_t *pool = NULL;
  CHECK_STATUS(dlslime_memory_pool_new(NULL), DLSLIME_STATUS_NULL_PARAMETER);
  REQUIRE_OK(dlslime_memory_pool_new(&pool));
  CHECK_LAST_ERROR_HAS("NULL");
  dlslime_memory_pool_free(pool);

  /* Per thread: another thread sees its own (empty) message. */
  dlslime_last_error_clear();
  CHECK(strcmp(last_error(), "") == 0);
}

static void *other_thread_error(void *arg) {
  size_t *len = (size_t *)arg;
  dlslime_last_error_message(NULL, 0, len);
  return NULL;
}

static void test_last_error_is_per_thread(void) {
  CHECK_STATUS(dlslime_memory_pool_new(NULL), DLSLIME_STATUS_NULL_PARAMETER);
  size_t len = 12345;
  pthread_t t;
  CHECK(pthread_create(&t, NULL, other_thread_error, &len) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(len == 0);
  CHECK_LAST_ERROR_HAS("NULL");
}

static void test_pool(void) {
  dlslime_memory_pool_t *pool = NULL;
  REQUIRE_OK(dlslime_memory_pool_new(&pool));
  static uint8_t a[4096], b[4096];
  dlslime_mr_handle_t h = 777, h2 = 777;

  CHECK_OK(dlslime_memory_pool_register(pool, "a", a, 1024, &h));
  CHECK(h == 0);
  /* Same pointer, smaller: alias to the same handle. */
  CHECK_OK(dlslime_memory_pool_register(pool, "a2", a, 512, &h2));
  CHECK(h2 == h);
  h2 = 777;
  CHECK_OK(dlslime_memory_pool_handle(pool, "a2", &h2));
  CHECK(h2 == 0);
  /* Same pointer, larger: same handle, grown. */
  h2 = 777;
  CHECK_OK(dlslime_memory_pool_register(pool, NULL, a, 4096, &h2));
  CHECK(h2 == 0);
  /* A name bound to another address: conflict, nothing registered, out untouched. */
  h2 = 777;
  CHECK_STATUS(dlslime_memory_pool_register(pool, "a", b, 64, &h2), DLSLIME_STATUS_NAME_CONFLICT);
  CHECK(h2 == 777);
  CHECK_LAST_ERROR_HAS("already bound");
  /* Default name mr_<handle>. */
  CHECK_OK(dlslime_memory_pool_register(pool, NULL, b, 4096, &h2));
  CHECK(h2 == 1);
  dlslime_mr_handle_t hb = 777;
  CHECK_OK(dlslime_memory_pool_handle(pool, "mr_1", &hb));
  CHECK(hb == 1);

  /* mr_info JSON. */
  char *info = NULL;
  CHECK_OK(dlslime_memory_pool_mr_info(pool, &info));
  CHECK(info != NULL);
  if (info) {
    char addr[64];
    snprintf(addr, sizeof addr, "\"addr\":%llu", (unsigned long long)(uintptr_t)a);
    CHECK(info[0] == '{');
    CHECK(strstr(info, "\"a\":{") != NULL);
    CHECK(strstr(info, "\"a2\":{") != NULL);
    CHECK(strstr(info, "\"mr_1\":{") != NULL);
    CHECK(strstr(info, addr) != NULL);
    CHECK(strstr(info, "\"length\":4096") != NULL);
    CHECK(strstr(info, "\"rkey\":") != NULL);
    CHECK(strstr(info, "\"handle\":1") != NULL);
    dlslime_string_free(info);
  }

  /* Bad input. */
  CHECK_STATUS(dlslime_memory_pool_register(pool, "z", a, 0, &h2), DLSLIME_STATUS_INVALID_ARGUMENT);
  const char bad_utf8[] = {'\xff', '\xfe', 0};
  CHECK_STATUS(dlslime_memory_pool_register(pool, bad_utf8, a, 8, &h2), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_LAST_ERROR_HAS("UTF-8");
  CHECK_STATUS(dlslime_memory_pool_register(pool, "wrap", (void *)(uintptr_t)(UINTPTR_MAX - 8), 64, &h2),
               DLSLIME_STATUS_OUT_OF_RANGE);
  CHECK_STATUS(dlslime_memory_pool_handle(pool, "nope", &h2), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_STATUS(dlslime_memory_pool_unregister(pool, 99), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_STATUS(dlslime_memory_pool_unregister_name(pool, "nope"), DLSLIME_STATUS_UNKNOWN_HANDLE);

  /* Unregister removes every alias; handles are never reused. */
  CHECK_OK(dlslime_memory_pool_unregister(pool, 0));
  CHECK_STATUS(dlslime_memory_pool_unregister(pool, 0), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_STATUS(dlslime_memory_pool_handle(pool, "a", &h2), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_STATUS(dlslime_memory_pool_handle(pool, "a2", &h2), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_OK(dlslime_memory_pool_register(pool, "a", a, 16, &h2));
  CHECK(h2 == 2);
  CHECK_OK(dlslime_memory_pool_unregister_name(pool, "mr_1"));
  CHECK_STATUS(dlslime_memory_pool_unregister_name(pool, "mr_1"), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_OK(dlslime_memory_pool_mr_info(pool, &info));
  if (info) {
    CHECK(strstr(info, "\"mr_1\"") == NULL);
    dlslime_string_free(info);
  }
  dlslime_memory_pool_free(pool);
}

static void test_null_parameters(void) {
  const int32_t NP = DLSLIME_STATUS_NULL_PARAMETER;
  dlslime_memory_pool_t *pool = NULL;
  REQUIRE_OK(dlslime_memory_pool_new(&pool));
  static uint8_t mem[64];
  dlslime_mr_handle_t h = 4242;
  char *s = (char *)(uintptr_t)0x77;

  /* Memory pool. */
  CHECK_STATUS(dlslime_memory_pool_new(NULL), NP);
  CHECK_STATUS(dlslime_memory_pool_register(NULL, "x", mem, 8, &h), NP);
  CHECK_STATUS(dlslime_memory_pool_register(pool, "x", NULL, 8, &h), NP);
  CHECK_LAST_ERROR_HAS("ptr");
  CHECK_STATUS(dlslime_memory_pool_register(pool, "x", mem, 8, NULL), NP);
  CHECK_LAST_ERROR_HAS("out_handle");
  CHECK_STATUS(dlslime_memory_pool_unregister(NULL, 0), NP);
  CHECK_STATUS(dlslime_memory_pool_unregister_name(NULL, "x"), NP);
  CHECK_STATUS(dlslime_memory_pool_unregister_name(pool, NULL), NP);
  CHECK_STATUS(dlslime_memory_pool_handle(NULL, "x", &h), NP);
  CHECK_STATUS(dlslime_memory_pool_handle(pool, NULL, &h), NP);
  CHECK_STATUS(dlslime_memory_pool_handle(pool, "x", NULL), NP);
  CHECK_STATUS(dlslime_memory_pool_mr_info(NULL, &s), NP);
  CHECK_STATUS(dlslime_memory_pool_mr_info(pool, NULL), NP);
  CHECK(h == 4242 && s == (char *)(uintptr_t)0x77); /* out-params untouched */
  dlslime_memory_pool_free(NULL);

  /* TCP context. */
  dlslime_tcp_options_t opts;
  dlslime_tcp_options_init(&opts);
  dlslime_tcp_options_init(NULL);
  dlslime_tcp_context_t *ctx = NULL;
  CHECK_STATUS(dlslime_tcp_context_new(&opts, NULL), NP);
  CHECK_STATUS(dlslime_tcp_context_local_addr(NULL, &s), NP);
  dlslime_tcp_context_free(NULL);

  /* TCP endpoint constructor. */
  dlslime_endpoint_t *ep = (dlslime_endpoint_t *)(uintptr_t)0x99;
  CHECK_STATUS(dlslime_tcp_endpoint_new(NULL, pool, &ep), NP);
  CHECK_STATUS(dlslime_tcp_endpoint_new(ctx, pool, &ep), NP);
  CHECK(ep == (dlslime_endpoint_t *)(uintptr_t)0x99);

  /* Endpoint. */
  dlslime_future_t *f = SENTINEL_FUTURE;
  dlslime_assignment_t a;
  memset(&a, 0, sizeof a);
  dlslime_remote_handle_t rh = 4242;
  size_t n = 4242;
  CHECK_STATUS(dlslime_endpoint_info(NULL, &s), NP);
  CHECK_STATUS(dlslime_endpoint_connect(NULL, "{}"), NP);
  CHECK_STATUS(dlslime_endpoint_register_remote(NULL, "r", "{}", &rh), NP);
  CHECK_STATUS(dlslime_endpoint_remote_handle(NULL, "r", &rh), NP);
  CHECK_STATUS(dlslime_endpoint_read(NULL, &a, 1, 0, &f), NP);
  CHECK_STATUS(dlslime_endpoint_write(NULL, &a, 1, 0, &f), NP);
  CHECK_STATUS(dlslime_endpoint_write_with_imm(NULL, &a, 1, 7, 0, &f), NP);
  CHECK_STATUS(dlslime_endpoint_imm_recv(NULL, 0, &f), NP);
  CHECK_STATUS(dlslime_endpoint_send(NULL, mem, 8, 0, &f), NP);
  CHECK_STATUS(dlslime_endpoint_recv(NULL, mem, 8, 0, &f), NP);
  CHECK_STATUS(dlslime_endpoint_cancel_all(NULL, &n), NP);
  CHECK_STATUS(dlslime_endpoint_shutdown(NULL), NP);
  CHECK(f == SENTINEL_FUTURE && rh == 4242 && n == 4242);
  dlslime_endpoint_free(NULL);

  /* Future. */
  CHECK_STATUS(dlslime_future_wait(NULL), NP);
  CHECK_STATUS(dlslime_future_wait_for(NULL, 10), NP);
  CHECK_STATUS(dlslime_future_status(NULL), NP);
  CHECK(dlslime_future_done(NULL) == false);
  CHECK(dlslime_future_imm_data(NULL) == 0);
  CHECK(dlslime_future_nbytes(NULL) == 0);
  int32_t imm_out = 7;
  uint64_t nbytes_out = 7;
  CHECK_STATUS(dlslime_future_get_imm_data(NULL, &imm_out), NP);
  CHECK_STATUS(dlslime_future_get_nbytes(NULL, &nbytes_out), NP);
  CHECK(imm_out == 7 && nbytes_out == 7);
  dlslime_future_free(NULL);

  /* Strings. */
  dlslime_string_free(NULL);
  dlslime_memory_pool_free(pool);
}

static void test_options(void) {
  dlslime_tcp_options_t opts;
  dlslime_tcp_options_init(&opts);
  CHECK(opts.size == sizeof opts);
  CHECK(opts.bind == NULL && opts.lanes == 0 && opts.default_timeout_ms == 0);
  dlslime_tcp_context_t *ctx = (dlslime_tcp_context_t *)(uintptr_t)0x99;

  opts.size = sizeof(size_t);
  CHECK_STATUS(dlslime_tcp_context_new(&opts, &ctx), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_LAST_ERROR_HAS("size");
  dlslime_tcp_options_init(&opts);
  opts.bind = "not an address";
  CHECK_STATUS(dlslime_tcp_context_new(&opts, &ctx), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_LAST_ERROR_HAS("bind");
  CHECK(ctx == (dlslime_tcp_context_t *)(uintptr_t)0x99);
  /* lanes is capped: 1000 lanes would start hundreds of threads and sockets. */
  dlslime_tcp_options_init(&opts);
  opts.bind = "127.0.0.1:0";
  opts.lanes = 1000;
  CHECK_STATUS(dlslime_tcp_context_new(&opts, &ctx), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_LAST_ERROR_HAS("lanes");
  CHECK(ctx == (dlslime_tcp_context_t *)(uintptr_t)0x99);

  /* A caller compiled against a newer, larger struct: unknown fields must be zero. */
  struct {
    dlslime_tcp_options_t base;
    uint64_t newer_field;
  } big;
  memset(&big, 0, sizeof big);
  dlslime_tcp_options_init(&big.base);
  big.base.size = sizeof big;
  big.base.bind = "127.0.0.1:0";
  big.newer_field = 1;
  CHECK_STATUS(dlslime_tcp_context_new(&big.base, &ctx), DLSLIME_STATUS_UNSUPPORTED);
  CHECK(ctx == (dlslime_tcp_context_t *)(uintptr_t)0x99);
}

static void test_shared_memory_api(void) {
  void *p = (void *)(uintptr_t)0x77;
  CHECK_STATUS(dlslime_alloc_shared(0, &p), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK(p == (void *)(uintptr_t)0x77);
  CHECK_STATUS(dlslime_alloc_shared(4096, NULL), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_OK(dlslime_alloc_shared(10000, &p));
  CHECK(p != NULL && ((uintptr_t)p & 4095) == 0);
  if (p) {
    const uint8_t *b = (const uint8_t *)p;
    int zero = 1;
    for (size_t i = 0; i < 10000; i++) zero &= b[i] == 0;
    CHECK(zero);
    memset(p, 0xab, 10000);
  }
  int heap = 0;
  CHECK_STATUS(dlslime_free_shared(&heap), DLSLIME_STATUS_UNKNOWN_HANDLE);
  CHECK_STATUS(dlslime_free_shared(NULL), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_OK(dlslime_free_shared(p));
  CHECK_STATUS(dlslime_free_shared(p), DLSLIME_STATUS_UNKNOWN_HANDLE);

  dlslime_shm_options_t o;
  dlslime_shm_options_init(&o);
  CHECK(o.size == sizeof o && o.flags == 0 && o.spin_us == 0);
  dlslime_memory_pool_t *pool = NULL;
  REQUIRE_OK(dlslime_memory_pool_new(&pool));
  dlslime_endpoint_t *ep = (dlslime_endpoint_t *)(uintptr_t)0x99;
  o.flags = 1u << 20;
  CHECK_STATUS(dlslime_shm_endpoint_new(pool, &o, &ep), DLSLIME_STATUS_UNSUPPORTED);
  CHECK_LAST_ERROR_HAS("flags");
  o.flags = 0;
  o.size = 4;
  CHECK_STATUS(dlslime_shm_endpoint_new(pool, &o, &ep), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK(ep == (dlslime_endpoint_t *)(uintptr_t)0x99);
  CHECK_STATUS(dlslime_shm_endpoint_new(NULL, NULL, &ep), DLSLIME_STATUS_NULL_PARAMETER);
  dlslime_shm_options_init(&o);
  o.flags = DLSLIME_SHM_FLAG_NO_SPIN | DLSLIME_SHM_FLAG_FORCE_STAGED;
  CHECK_OK(dlslime_shm_endpoint_new(pool, &o, &ep));
  char *info = NULL;
  CHECK_OK(dlslime_endpoint_info(ep, &info));
  CHECK(info != NULL && strstr(info, "\"transport\":\"shm\"") != NULL);
  dlslime_string_free(info);
  /* an operation before connect fails at once, with no future */
  dlslime_future_t *f = NULL;
  CHECK_STATUS(dlslime_endpoint_imm_recv(ep, 0, &f), DLSLIME_STATUS_NOT_CONNECTED);
  CHECK(f == NULL);
  dlslime_endpoint_free(ep);
  dlslime_memory_pool_free(pool);
}

/* ---- Loopback endpoints in one process (needs the TCP transport). ---- */

typedef struct {
  dlslime_tcp_context_t *ctx;
  dlslime_memory_pool_t *pool;
  dlslime_endpoint_t *ep;
  uint8_t *buf;
  size_t len;
  dlslime_mr_handle_t mr;
} side_t;

/* Returns the status of dlslime_tcp_context_new (UNSUPPORTED: transport not built). */
static int32_t side_open(side_t *s, size_t len, uint8_t fill) {
  memset(s, 0, sizeof *s);
  dlslime_tcp_options_t opts;
  dlslime_tcp_options_init(&opts);
  opts.bind = "127.0.0.1:0";
  opts.default_timeout_ms = 10000;
  int32_t st = dlslime_tcp_context_new(&opts, &s->ctx);
  if (st != DLSLIME_STATUS_OK) return st;
  REQUIRE_OK(dlslime_memory_pool_new(&s->pool));
  s->len = len;
  s->buf = (uint8_t *)malloc(len);
  memset(s->buf, fill, len);
  REQUIRE_OK(dlslime_memory_pool_register(s->pool, "buf", s->buf, len, &s->mr));
  REQUIRE_OK(dlslime_tcp_endpoint_new(s->ctx, s->pool, &s->ep));
  return DLSLIME_STATUS_OK;
}

static void side_close(side_t *s) {
  dlslime_endpoint_free(s->ep);
  dlslime_memory_pool_free(s->pool);
  dlslime_tcp_context_free(s->ctx);
  free(s->buf);
}

static void connect_pair(side_t *x, side_t *y) {
  char *ix = NULL, *iy = NULL;
  REQUIRE_OK(dlslime_endpoint_info(x->ep, &ix));
  REQUIRE_OK(dlslime_endpoint_info(y->ep, &iy));
  CHECK(strstr(ix, "\"transport\":\"tcp\"") != NULL);
  CHECK(strstr(ix, "\"mr_info\"") != NULL);
  REQUIRE_OK(dlslime_endpoint_connect(x->ep, iy));
  REQUIRE_OK(dlslime_endpoint_connect(y->ep, ix));
  dlslime_string_free(ix);
  dlslime_string_free(iy);
}

static int all_bytes(const uint8_t *p, size_t n, uint8_t v) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) return 0;
  return 1;
}

typedef struct {
  dlslime_future_t *f;
  int32_t status;
} waiter_t;

static void *wait_thread(void *arg) {
  waiter_t *w = (waiter_t *)arg;
  w->status = dlslime_future_wait_for(w->f, 10000);
  return NULL;
}

static int test_loopback(void) {
  side_t A, B;
  int32_t st = side_open(&A, 1 << 20, 0xAA);
  if (st == DLSLIME_STATUS_UNSUPPORTED) {
    printf("[%s] SKIPPED loopback endpoint tests: %s\n", g_role, last_error());
    return 0;
  }
  REQUIRE_OK(st);
  REQUIRE_OK(side_open(&B, 1 << 20, 0xBB));

  char *addr = NULL;
  CHECK_OK(dlslime_tcp_context_local_addr(A.ctx, &addr));
  CHECK(addr && strncmp(addr, "127.0.0.1:", 10) == 0 && strcmp(addr, "127.0.0.1:0") != 0);
  dlslime_string_free(addr);

  /* Not connected yet: operations fail (synchronously or through the future). */
  connect_pair(&A, &B);

  dlslime_remote_handle_t rb = 99;
  CHECK_OK(dlslime_endpoint_remote_handle(A.ep, "buf", &rb));
  CHECK(rb == 0);
  CHECK_STATUS(dlslime_endpoint_remote_handle(A.ep, "nope", &rb), DLSLIME_STATUS_UNKNOWN_HANDLE);

  dlslime_future_t *f = NULL;
  /* write A[0..4096] -> B[8192..] */
  memset(A.buf, 0x11, 4096);
  dlslime_assignment_t w = asg(A.mr, rb, 8192, 0, 4096);
  CHECK_OK(dlslime_endpoint_write(A.ep, &w, 1, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  CHECK(dlslime_future_done(f));
  CHECK_STATUS(dlslime_future_status(f), DLSLIME_STATUS_OK);
  CHECK_OK(dlslime_future_wait(f)); /* again: same outcome */
  CHECK(all_bytes(B.buf + 8192, 4096, 0x11));
  CHECK(B.buf[8191] == 0xBB && B.buf[8192 + 4096] == 0xBB);
  dlslime_future_free(f);

  /* read B[0..100] -> A[100..200], two assignments in one op. */
  dlslime_assignment_t rd[2];
  rd[0] = asg(A.mr, rb, 0, 100, 50);
  rd[1] = asg(A.mr, rb, 50, 150, 50);
  CHECK_OK(dlslime_endpoint_read(A.ep, rd, 2, 0, &f));
  CHECK_OK(dlslime_future_wait_for(f, 10000));
  CHECK(all_bytes(A.buf + 100, 100, 0xBB));
  dlslime_future_free(f);

  /* Empty assignment list. */
  CHECK_OK(dlslime_endpoint_write(A.ep, NULL, 0, 0, &f));
  CHECK_OK(dlslime_future_wait_for(f, 10000));
  dlslime_future_free(f);
  CHECK_STATUS(dlslime_endpoint_write(A.ep, NULL, 1, 0, &f), DLSLIME_STATUS_NULL_PARAMETER);

  /* Unknown handles and out-of-range offsets: refused, no future, no memory touched. */
  memset(A.buf, 0x22, A.len);
  memset(B.buf, 0x33, B.len);
  dlslime_future_t *g = SENTINEL_FUTURE;
  dlslime_assignment_t bad;
  bad = asg(99, rb, 0, 0, 8);
  CHECK_STATUS(dlslime_endpoint_write(A.ep, &bad, 1, 0, &g), DLSLIME_STATUS_UNKNOWN_HANDLE);
  bad = asg(A.mr, 99, 0, 0, 8);
  CHECK_STATUS(dlslime_endpoint_read(A.ep, &bad, 1, 0, &g), DLSLIME_STATUS_UNKNOWN_HANDLE);
  bad = asg(A.mr, rb, 0, A.len - 4, 8);
  CHECK_STATUS(dlslime_endpoint_read(A.ep, &bad, 1, 0, &g), DLSLIME_STATUS_OUT_OF_RANGE);
  CHECK_LAST_ERROR_HAS("local");
  bad = asg(A.mr, rb, B.len - 4, 0, 8);
  CHECK_STATUS(dlslime_endpoint_write(A.ep, &bad, 1, 0, &g), DLSLIME_STATUS_OUT_OF_RANGE);
  bad = asg(A.mr, rb, UINT64_MAX, 0, 2);
  CHECK_STATUS(dlslime_endpoint_write_with_imm(A.ep, &bad, 1, 5, 0, &g), DLSLIME_STATUS_OUT_OF_RANGE);
  bad = asg(A.mr, rb, 0, UINT64_MAX - 1, 4);
  CHECK_STATUS(dlslime_endpoint_read(A.ep, &bad, 1, 0, &g), DLSLIME_STATUS_OUT_OF_RANGE);
  /* A good assignment followed by a bad one: the whole op is refused. */
  dlslime_assignment_t mixed[2];
  mixed[0] = asg(A.mr, rb, 0, 0, 8);
  mixed[1] = asg(A.mr, rb, B.len, 0, 1);
  CHECK_STATUS(dlslime_endpoint_write(A.ep, mixed, 2, 0, &g), DLSLIME_STATUS_OUT_OF_RANGE);
  CHECK(g == SENTINEL_FUTURE);
  usleep(50 * 1000);
  CHECK(all_bytes(A.buf, A.len, 0x22));
  CHECK(all_bytes(B.buf, B.len, 0x33));

  /* write_with_imm + imm_recv, several waiters on one future from several threads. */
  dlslime_future_t *imm = NULL;
  CHECK_OK(dlslime_endpoint_imm_recv(B.ep, 0, &imm));
  waiter_t ws[4];
  pthread_t ts[4];
  for (int i = 0; i < 4; i++) {
    ws[i].f = imm;
    ws[i].status = -1;
    CHECK(pthread_create(&ts[i], NULL, wait_thread, &ws[i]) == 0);
  }
  memset(A.buf, 0x44, 256);
  w = asg(A.mr, rb, 1000, 0, 256);
  CHECK_OK(dlslime_endpoint_write_with_imm(A.ep, &w, 1, -1234567, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  /* Only an imm_recv's future has immediate data: the write's is refused, out untouched. */
  int32_t not_imm = 99;
  CHECK_STATUS(dlslime_future_get_imm_data(f, &not_imm), DLSLIME_STATUS_INVALID_ARGUMENT);
  CHECK_LAST_ERROR_HAS("only for futures of imm_recv");
  CHECK(not_imm == 99);
  dlslime_future_free(f);
  for (int i = 0; i < 4; i++) {
    CHECK(pthread_join(ts[i], NULL) == 0);
    CHECK_STATUS(ws[i].status, DLSLIME_STATUS_OK);
  }
  CHECK(dlslime_future_imm_data(imm) == -1234567);
  int32_t got_imm = 0;
  CHECK_OK(dlslime_future_get_imm_data(imm, &got_imm));
  CHECK(got_imm == -1234567);
  CHECK(all_bytes(B.buf + 1000, 256, 0x44));
  dlslime_future_free(imm);

  /* send / recv, nbytes, truncation. */
  char msg[64], got[64];
  snprintf(msg, sizeof msg, "hello over loopback");
  memset(got, 0, sizeof got);
  dlslime_future_t *rf = NULL;
  CHECK_OK(dlslime_endpoint_recv(B.ep, got, sizeof got, 0, &rf));
  /* Not completed yet: nbytes is not defined, and out is not written. */
  uint64_t got_n = 12345;
  CHECK_STATUS(dlslime_future_get_nbytes(rf, &got_n), DLSLIME_STATUS_PENDING);
  CHECK_LAST_ERROR_HAS("not completed");
  CHECK(got_n == 12345);
  CHECK_OK(dlslime_endpoint_send(A.ep, msg, strlen(msg) + 1, 0, &f));
  CHECK_OK(dlslime_future_wait(f));
  CHECK_OK(dlslime_future_wait(rf));
  CHECK(dlslime_future_nbytes(rf) == strlen(msg) + 1);
  CHECK_OK(dlslime_future_get_nbytes(rf, &got_n));
  CHECK(got_n == strlen(msg) + 1);
  CHECK(strcmp(got, msg) == 0);
  dlslime_future_free(f);
  dlslime_future_free(rf);
  CHECK_OK(dlslime_endpoint_recv(B.ep, got, 4, 0, &rf));
  CHECK_OK(dlslime_endpoint_send(A.ep, msg, 16, 0, &f));
  CHECK_STATUS(dlslime_future_wait(rf), DLSLIME_STATUS_TRUNCATED);
  CHECK_STATUS(dlslime_future_status(rf), DLSLIME_STATUS_TRUNCATED);
  CHECK_STATUS(dlslime_future_get_nbytes(rf, &got_n), DLSLIME_STATUS_TRUNCATED);
  dlslime_future_wait_for(f, 10000);
  dlslime_future_free(f);
  dlslime_future_free(rf);
  CHECK_STATUS(dlslime_endpoint_send(A.ep, NULL, 8, 0, &f), DLSLIME_STATUS_NULL_PARAMETER);

  /* wait_for gives up without failing the op; the op deadline fails it; cancel_all. */
  CHECK_OK(dlslime_endpoint_imm_recv(B.ep, 0, &imm));
  double t0 = now_ms();
  CHECK_STATUS(dlslime_future_wait_for(imm, 50), DLSLIME_STATUS_TIMEOUT);
  CHECK(now_ms() - t0 >= 45);
  CHECK_STATUS(dlslime_future_status(imm), DLSLIME_STATUS_PENDING);
  CHECK(!dlslime_future_done(imm));
  size_t cancelled = 0;
  CHECK_OK(dlslime_endpoint_cancel_all(B.ep, &cancelled));
  CHECK(cancelled >= 1);
  CHECK_STATUS(dlslime_future_wait_for(imm, 10000), DLSLIME_STATUS_CANCELLED);
  CHECK_STATUS(dlslime_future_status(imm), DLSLIME_STATUS_CANCELLED);
  dlslime_future_free(imm);
  CHECK_OK(dlslime_endpoint_imm_recv(B.ep, 100, &imm));
  t0 = now_ms();
  CHECK_STATUS(dlslime_future_wait_for(imm, 10000), DLSLIME_STATUS_TIMEOUT);
  CHECK_STATUS(dlslime_future_status(imm), DLSLIME_STATUS_TIMEOUT);
  CHECK(now_ms() - t0 < 5000);
  dlslime_future_free(imm);

  /* Malformed endpoint_info and remote-region JSON. */
  CHECK_STATUS(dlslime_endpoint_connect(A.ep, "{nope"), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  CHECK_STATUS(dlslime_endpoint_connect(A.ep, "[1]"), DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  CHECK_STATUS(dlslime_endpoint_connect(A.ep, "{\"transport\":\"shm\",\"version\":1}"),
               DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  CHECK_STATUS(dlslime_endpoint_register_remote(A.ep, "r", "{\"addr\":1}", &rb),
               DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  CHECK_STATUS(dlslime_endpoint_register_remote(A.ep, "r", "nope", &rb),
               DLSLIME_STATUS_INVALID_ENDPOINT_INFO);
  dlslime_remote_handle_t rr = 99;
  CHECK_OK(dlslime_endpoint_register_remote(A.ep, "r", "{\"addr\":4096,\"length\":16,\"rkey\":7}", &rr));
  CHECK(rr == 1);

  /* Shutdown: idempotent; later operations fail. */
  dlslime_future_t *pending = NULL;
  CHECK_OK(dlslime_endpoint_recv(A.ep, got, sizeof got, 0, &pending));
  CHECK_OK(dlslime_endpoint_shutdown(A.ep));
  CHECK_OK(dlslime_endpoint_shutdown(A.ep));
  CHECK_STATUS(dlslime_future_wait_for(pending, 10000), DLSLIME_STATUS_CANCELLED);
  dlslime_future_free(pending);
  w = asg(A.mr, 0, 0, 0, 8);
  f = NULL;
  st = dlslime_endpoint_write(A.ep, &w, 1, 0, &f);
  if (st == DLSLIME_STATUS_OK) {
    st = dlslime_future_wait_for(f, 10000);
    dlslime_future_free(f);
  }
  CHECK_STATUS(st, DLSLIME_STATUS_SHUT_DOWN);

  side_close(&A);
  side_close(&B);
  return 1;
}

/* RDMA where this host has it or not: no libibverbs (scripts/test-rdma.sh hides it) or no
 * device (the build machines) -> DLSLIME_STATUS_RDMA_UNAVAILABLE naming what is missing;
 * with a device (the soft-RoCE VM) a context opens on it. NULL arguments are refused. */
static void test_rdma_availability(void) {
  char *nics = NULL;
  dlslime_rdma_context_t *ctx = NULL;
  CHECK_STATUS(dlslime_rdma_available_nics(NULL), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_rdma_context_new(NULL, NULL), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_rdma_endpoint_new(NULL, NULL, 1, NULL), DLSLIME_STATUS_NULL_PARAMETER);
  int32_t st = dlslime_rdma_available_nics(&nics);
  if (st != DLSLIME_STATUS_OK) {
    CHECK_STATUS(st, DLSLIME_STATUS_RDMA_UNAVAILABLE);
    CHECK_LAST_ERROR_HAS("libibverbs.so.1");
    CHECK_STATUS(dlslime_rdma_context_new(NULL, &ctx), DLSLIME_STATUS_RDMA_UNAVAILABLE);
    CHECK_LAST_ERROR_HAS("libibverbs.so.1");
    printf("[%s] verified: without libibverbs RDMA calls fail with RDMA_UNAVAILABLE\n", g_role);
    return;
  }
  dlslime_rdma_options_t o;
  dlslime_rdma_options_init(&o);
  o.device = "no_such_nic";
  CHECK_STATUS(dlslime_rdma_context_new(&o, &ctx), DLSLIME_STATUS_RDMA_UNAVAILABLE);
  CHECK_LAST_ERROR_HAS("no_such_nic");
  CHECK(ctx == NULL);
  if (strcmp(nics, "[]") == 0) {
    CHECK_STATUS(dlslime_rdma_context_new(NULL, &ctx), DLSLIME_STATUS_RDMA_UNAVAILABLE);
    CHECK_LAST_ERROR_HAS("no RDMA device");
    printf("[%s] verified: without a device RDMA calls fail with RDMA_UNAVAILABLE\n", g_role);
  } else {
    CHECK_OK(dlslime_rdma_context_new(NULL, &ctx));
    char *name = NULL;
    CHECK_OK(dlslime_rdma_context_device(ctx, &name));
    CHECK(name != NULL && strstr(nics, name) != NULL);
    dlslime_string_free(name);
    dlslime_rdma_context_free(ctx);
    printf("[%s] verified: RDMA devices %s, a context opens\n", g_role, nics);
  }
  dlslime_string_free(nics);
}

/* CUDA is loaded at run time: where there is no driver (every build machine), device
 * memory is refused with DLSLIME_STATUS_DEVICE_UNAVAILABLE naming libcuda, nothing is
 * registered, and host memory works as before. With a driver (make test-gpu machines) a
 * heap pointer claimed as device memory is INVALID_ARGUMENT. */
static void test_cuda_availability(void) {
  int32_t n = -1;
  dlslime_memory_pool_t *pool = NULL;
  dlslime_mr_handle_t h = 0;
  int32_t dev = 7;
  static char host[64];
  CHECK_STATUS(dlslime_cuda_device_count(NULL), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_STATUS(dlslime_future_signal_stream(NULL, 0), DLSLIME_STATUS_NULL_PARAMETER);
  CHECK_OK(dlslime_memory_pool_new(&pool));
  CHECK_STATUS(dlslime_memory_pool_register_device(pool, "d", NULL, 64, &h), DLSLIME_STATUS_NULL_PARAMETER);
  int32_t st = dlslime_cuda_device_count(&n);
  if (st != DLSLIME_STATUS_OK) {
    CHECK_STATUS(st, DLSLIME_STATUS_DEVICE_UNAVAILABLE);
    CHECK(n == -1); /* out-parameter untouched on failure */
    CHECK(strstr(last_error(), "libcuda") != NULL || strstr(last_error(), "DLSLIME_DISABLE_CUDA") != NULL);
    CHECK_STATUS(dlslime_memory_pool_register_device(pool, "d", (void *)(uintptr_t)0x7f0000000000ull, 64, &h),
                 DLSLIME_STATUS_DEVICE_UNAVAILABLE);
    CHECK_STATUS(dlslime_memory_pool_handle(pool, "d", &h), DLSLIME_STATUS_UNKNOWN_HANDLE);
    /* stream ordering needs the driver too, whatever the stream */
    CHECK_STATUS(dlslime_cuda_stream_wait(0), DLSLIME_STATUS_DEVICE_UNAVAILABLE);
    CHECK_STATUS(dlslime_cuda_stream_wait((uintptr_t)0x1234), DLSLIME_STATUS_DEVICE_UNAVAILABLE);
    CHECK(strstr(last_error(), "libcuda") != NULL || strstr(last_error(), "DLSLIME_DISABLE_CUDA") != NULL);
    printf("[%s] verified: without a CUDA driver device memory and streams fail with DEVICE_UNAVAILABLE\n",
           g_role);
  } else {
    CHECK_STATUS(dlslime_memory_pool_register_device(pool, "d", host, sizeof host, &h),
                 DLSLIME_STATUS_INVALID_ARGUMENT);
    printf("[%s] verified: %d CUDA device(s); a host pointer is not device memory\n", g_role, n);
  }
  CHECK_OK(dlslime_memory_pool_register(pool, "h", host, sizeof host, &h));
  CHECK_OK(dlslime_memory_pool_region_device(pool, h, &dev));
  CHECK(dev == -1);
  CHECK_STATUS(dlslime_memory_pool_region_device(pool, 999, &dev), DLSLIME_STATUS_UNKNOWN_HANDLE);
  dlslime_memory_pool_free(pool);
}

int main(void) {
  g_role = "api";
  alarm(120); /* hard deadline for the whole program */
  test_version();
  test_status_strings();
  test_last_error();
  test_last_error_is_per_thread();
  test_pool();
  test_null_parameters();
  test_options();
  test_shared_memory_api();
  test_rdma_availability();
  test_cuda_availability();
  int tcp_ran = test_loopback();
  int rc = finish("test_api");
  if (rc == 0 && !tcp_ran) {
    printf("[%s] NOT RUN: the loopback endpoint part (TCP transport unavailable)\n", g_role);
    return 77;
  }
  return rc;
}
