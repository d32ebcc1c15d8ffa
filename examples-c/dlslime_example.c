/*
 * dlslime C example: two processes, one binary, two roles.
 *
 *   dlslime_example target      prints "INFO <endpoint_info>" on stdout, reads the
 *                               initiator's "INFO ..." line from stdin, then serves
 *   dlslime_example initiator   reads the target's "INFO ..." line from stdin, prints
 *                               its own, then drives write, read, write_with_imm and
 *                               send/recv against the target
 *   dlslime_example demo        starts both roles as two processes with their stdin and
 *                               stdout cross-wired, and reports their exit status
 *
 * Protocol lines go to stdout; what was verified goes to stderr. Environment:
 * DLSLIME_EXAMPLE_BIND (default "127.0.0.1:0") is the address the role's TCP listener
 * binds; use the host's IP to run the two roles on two hosts (relay the INFO lines).
 * DLSLIME_EXAMPLE_RDMA="TARGET_DEVICE[,INITIATOR_DEVICE]" runs the roles over RDMA on
 * those NICs instead of TCP (an empty name: the first NIC); nothing else changes.
 */
#include <dlslime.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_LEN ((size_t)1 << 20)
#define OP_TIMEOUT_MS 10000

static const char *role = "example";

static void die_on(dlslime_status_t st, const char *what) {
  if (st == DLSLIME_STATUS_OK) return;
  char msg[512];
  dlslime_last_error_message(msg, sizeof msg, NULL);
  fprintf(stderr, "%s: %s failed: %s (%d): %s\n", role, what, dlslime_status_str(st), (int)st, msg);
  exit(1);
}

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "%s: CHECK FAILED: %s\n", role, what);
    exit(1);
  }
  fprintf(stderr, "%s: verified %s\n", role, what);
}

static uint8_t pattern(unsigned seed, size_t i) { return (uint8_t)(i * 31u + seed); }

typedef struct {
  dlslime_tcp_context_t *ctx;
  dlslime_rdma_context_t *rctx;
  dlslime_memory_pool_t *pool;
  dlslime_endpoint_t *ep;
  uint8_t *buf;
  dlslime_mr_handle_t mr;
} node_t;

/* The RDMA device of this role from DLSLIME_EXAMPLE_RDMA ("target[,initiator]"), or
 * NULL for TCP. The result is malloc'd ("" means the first NIC). */
static char *rdma_device(void) {
  const char *env = getenv("DLSLIME_EXAMPLE_RDMA");
  if (!env) return NULL;
  const char *comma = strchr(env, ',');
  const char *start = env;
  size_t len = comma ? (size_t)(comma - env) : strlen(env);
  if (comma && strcmp(role, "initiator") == 0) {
    start = comma + 1;
    len = strlen(start);
  }
  char *dev = (char *)malloc(len + 1);
  memcpy(dev, start, len);
  dev[len] = '\0';
  return dev;
}

static void node_open(node_t *n, unsigned seed) {
  memset(n, 0, sizeof *n);
  char *dev = rdma_device();
  if (dev) {
    dlslime_rdma_options_t ro;
    dlslime_rdma_options_init(&ro);
    ro.device = dev[0] ? dev : NULL;
    die_on(dlslime_rdma_context_new(&ro, &n->rctx), "dlslime_rdma_context_new");
  } else {
    dlslime_tcp_options_t opts;
    dlslime_tcp_options_init(&opts);
    const char *bind = getenv("DLSLIME_EXAMPLE_BIND");
    opts.bind = bind ? bind : "127.0.0.1:0";
    die_on(dlslime_tcp_context_new(&opts, &n->ctx), "dlslime_tcp_context_new");
  }
  die_on(dlslime_memory_pool_new(&n->pool), "dlslime_memory_pool_new");
  n->buf = (uint8_t *)malloc(BUF_LEN);
  for (size_t i = 0; i < BUF_LEN; i++) n->buf[i] = pattern(seed, i);
  die_on(dlslime_memory_pool_register(n->pool, "buf", n->buf, BUF_LEN, &n->mr), "register");
  if (n->rctx)
    die_on(dlslime_rdma_endpoint_new(n->rctx, n->pool, 2, &n->ep), "dlslime_rdma_endpoint_new");
  else
    die_on(dlslime_tcp_endpoint_new(n->ctx, n->pool, &n->ep), "dlslime_tcp_endpoint_new");
  fprintf(stderr, "%s: over %s%s%s\n", role, dev ? "RDMA " : "TCP", dev ? dev : "", dev && !dev[0] ? "(first NIC)" : "");
  free(dev);
}

static void node_close(node_t *n) {
  dlslime_endpoint_free(n->ep);
  dlslime_memory_pool_free(n->pool);
  dlslime_tcp_context_free(n->ctx);
  dlslime_rdma_context_free(n->rctx);
  free(n->buf);
}

static void print_info(node_t *n) {
  char *info = NULL;
  die_on(dlslime_endpoint_info(n->ep, &info), "dlslime_endpoint_info");
  printf("INFO %s\n", info);
  fflush(stdout);
  dlslime_string_free(info);
}

/* Reads one stdin line that starts with `tag`; returns the rest (malloc'd). */
static char *read_line(const char *tag) {
  size_t cap = 1 << 16;
  char *line = (char *)malloc(cap);
  if (!fgets(line, (int)cap, stdin)) {
    fprintf(stderr, "%s: peer closed the pipe before \"%s\"\n", role, tag);
    exit(1);
  }
  line[strcspn(line, "\n")] = '\0';
  size_t n = strlen(tag);
  if (strncmp(line, tag, n) != 0) {
    fprintf(stderr, "%s: expected \"%s\", got \"%.80s\"\n", role, tag, line);
    exit(1);
  }
  memmove(line, line + n, strlen(line + n) + 1);
  return line;
}

static void wait_ok(dlslime_future_t *f, const char *what) {
  die_on(dlslime_future_wait_for(f, OP_TIMEOUT_MS), what);
}

static dlslime_assignment_t assignment(dlslime_mr_handle_t local, dlslime_remote_handle_t remote,
                                       uint64_t remote_offset, uint64_t local_offset, uint64_t length) {
  dlslime_assignment_t a = {.local = local, .remote = remote, .remote_offset = remote_offset,
                            .local_offset = local_offset, .length = length};
  return a;
}

static int run_target(void) {
  role = "target";
  node_t n;
  node_open(&n, 1);
  print_info(&n);
  char *peer = read_line("INFO ");
  die_on(dlslime_endpoint_connect(n.ep, peer), "dlslime_endpoint_connect");
  free(peer);

  dlslime_future_t *imm = NULL, *msg = NULL;
  char text[256];
  memset(text, 0, sizeof text);
  die_on(dlslime_endpoint_imm_recv(n.ep, OP_TIMEOUT_MS, &imm), "imm_recv");
  die_on(dlslime_endpoint_recv(n.ep, text, sizeof text - 1, OP_TIMEOUT_MS, &msg), "recv");
  printf("READY\n");
  fflush(stdout);

  wait_ok(imm, "imm_recv");
  int ok = dlslime_future_imm_data(imm) == 42;
  for (size_t i = 0; i < 4096; i++) ok = ok && n.buf[i] == pattern(7, i);
  check(ok, "write_with_imm: imm 42 arrived after 4096 bytes written at offset 0");
  dlslime_future_free(imm);

  wait_ok(msg, "recv");
  check(strcmp(text, "ping from the initiator") == 0, "recv: got \"ping from the initiator\"");
  dlslime_future_free(msg);
  const char *pong = "pong from the target";
  die_on(dlslime_endpoint_send(n.ep, pong, strlen(pong) + 1, OP_TIMEOUT_MS, &msg), "send");
  wait_ok(msg, "send");
  dlslime_future_free(msg);

  free(read_line("DONE"));
  node_close(&n);
  fprintf(stderr, "target: done\n");
  return 0;
}

static int run_initiator(void) {
  role = "initiator";
  char *peer = read_line("INFO ");
  node_t n;
  node_open(&n, 2);
  print_info(&n);
  die_on(dlslime_endpoint_connect(n.ep, peer), "dlslime_endpoint_connect");
  free(peer);
  free(read_line("READY"));

  dlslime_remote_handle_t remote = 0;
  die_on(dlslime_endpoint_remote_handle(n.ep, "buf", &remote), "remote_handle");
  dlslime_future_t *f = NULL;

  /* write local[0, 64 KiB) -> remote[64 KiB, 128 KiB), then read it back. */
  dlslime_assignment_t a = assignment(n.mr, remote, 65536, 0, 65536);
  die_on(dlslime_endpoint_write(n.ep, &a, 1, OP_TIMEOUT_MS, &f), "write");
  wait_ok(f, "write");
  dlslime_future_free(f);
  a = assignment(n.mr, remote, 65536, 131072, 65536);
  die_on(dlslime_endpoint_read(n.ep, &a, 1, OP_TIMEOUT_MS, &f), "read");
  wait_ok(f, "read");
  dlslime_future_free(f);
  check(memcmp(n.buf, n.buf + 131072, 65536) == 0, "write of 64 KiB, read back byte for byte");

  /* read the target's own data. */
  a = assignment(n.mr, remote, 524288, 262144, 4096);
  die_on(dlslime_endpoint_read(n.ep, &a, 1, OP_TIMEOUT_MS, &f), "read");
  wait_ok(f, "read");
  dlslime_future_free(f);
  int ok = 1;
  for (size_t i = 0; i < 4096; i++) ok = ok && n.buf[262144 + i] == pattern(1, 524288 + i);
  check(ok, "read of 4 KiB of the target's memory");

  /* write_with_imm: 4 KiB of pattern 7 to remote[0, 4 KiB), imm 42. */
  for (size_t i = 0; i < 4096; i++) n.buf[i] = pattern(7, i);
  a = assignment(n.mr, remote, 0, 0, 4096);
  die_on(dlslime_endpoint_write_with_imm(n.ep, &a, 1, 42, OP_TIMEOUT_MS, &f), "write_with_imm");
  wait_ok(f, "write_with_imm");
  dlslime_future_free(f);
  check(1, "write_with_imm completed (the target checks imm and data)");

  /* send/recv. */
  char reply[256];
  memset(reply, 0, sizeof reply);
  dlslime_future_t *r = NULL;
  die_on(dlslime_endpoint_recv(n.ep, reply, sizeof reply - 1, OP_TIMEOUT_MS, &r), "recv");
  const char *ping = "ping from the initiator";
  die_on(dlslime_endpoint_send(n.ep, ping, strlen(ping) + 1, OP_TIMEOUT_MS, &f), "send");
  wait_ok(f, "send");
  dlslime_future_free(f);
  wait_ok(r, "recv");
  check(strcmp(reply, "pong from the target") == 0 && dlslime_future_nbytes(r) == strlen(reply) + 1,
        "send/recv: sent a ping, got \"pong from the target\"");
  dlslime_future_free(r);

  printf("DONE\n");
  fflush(stdout);
  node_close(&n);
  fprintf(stderr, "initiator: done\n");
  return 0;
}

static pid_t spawn(const char *self, const char *which, int in_fd, int out_fd, int close1, int close2) {
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    close(in_fd);
    close(out_fd);
    close(close1);
    close(close2);
    execl(self, self, which, (char *)NULL);
    perror("execl");
    _exit(127);
  }
  return pid;
}

static int run_demo(const char *self) {
  int t2i[2], i2t[2];
  if (pipe(t2i) || pipe(i2t)) {
    perror("pipe");
    return 1;
  }
  fflush(NULL);
  pid_t t = spawn(self, "target", i2t[0], t2i[1], t2i[0], i2t[1]);
  pid_t i = spawn(self, "initiator", t2i[0], i2t[1], i2t[0], t2i[1]);
  close(t2i[0]);
  close(t2i[1]);
  close(i2t[0]);
  close(i2t[1]);
  int st_t = 0, st_i = 0;
  waitpid(i, &st_i, 0);
  waitpid(t, &st_t, 0);
  int ok = WIFEXITED(st_i) && WEXITSTATUS(st_i) == 0 && WIFEXITED(st_t) && WEXITSTATUS(st_t) == 0;
  fprintf(stderr, "demo: libdlslime %s, initiator %s, target %s\n", dlslime_version(), ok ? "ok" : "FAILED",
          ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  alarm(60); /* every role finishes well within a minute, or is killed */
  if (DLSLIME_VERSION_NUMBER != dlslime_version_number()) {
    fprintf(stderr, "header %d.%d.%d does not match library %s\n", DLSLIME_VERSION_MAJOR,
            DLSLIME_VERSION_MINOR, DLSLIME_VERSION_PATCH, dlslime_version());
    return 1;
  }
  if (argc == 2 && strcmp(argv[1], "target") == 0) return run_target();
  if (argc == 2 && strcmp(argv[1], "initiator") == 0) return run_initiator();
  if (argc == 2 && strcmp(argv[1], "demo") == 0) return run_demo("/proc/self/exe");
  fprintf(stderr, "usage: %s target|initiator|demo\n", argv[0]);
  return 2;
}
