// Tests the RDMA part of bindings/cpp/include/dlslime.hpp: without a device (or without
// libibverbs) RdmaContext throws Error(DLSLIME_STATUS_RDMA_UNAVAILABLE); with one (the
// soft-RoCE VM of scripts/test-rdma.sh) two processes (fork) connect RDMA endpoints with
// two data QPs and check write, read, write_with_imm and send/recv content.
// DLSLIME_TEST_RDMA_DEVICES="target,initiator" picks the devices.
#include "check.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// The device of this role: "target,initiator" from the environment, else the first NIC.
static dlslime::RdmaOptions options(bool target) {
  dlslime::RdmaOptions o;
  if (const char* d = std::getenv("DLSLIME_TEST_RDMA_DEVICES")) {
    std::string s(d);
    size_t comma = s.find(',');
    o.device = (target || comma == std::string::npos) ? s.substr(0, comma) : s.substr(comma + 1);
  }
  o.default_timeout = std::chrono::milliseconds(20000);
  return o;
}

// The target: "buf" of 1 MiB filled with 0x5a; waits for one write_with_imm, answers
// with a send of the 8 bytes at offset 0 it then holds.
static int child(int in, int out) {
  using namespace std::chrono_literals;
  try {
    dlslime::RdmaContext ctx(options(true));
    dlslime::Pool pool;
    std::vector<uint8_t> buf(1 << 20, 0x5a);
    pool.register_region(buf.data(), buf.size(), "buf");
    auto ep = dlslime::Endpoint::rdma(ctx, pool, 2);
    put_line(out, ep.info());
    ep.connect(get_line(in));
    auto imm = ep.imm_recv();
    put_line(out, "ready");
    if (!imm.wait_for(30s) || imm.imm_data() != 4242) return 3;
    ep.send(buf.data(), 8).wait();
    get_line(in);  // "bye"
    return 0;
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    return 2;
  }
}

int main() {
  using namespace std::chrono_literals;
  alarm(120);
  std::string nics;
  try {
    nics = dlslime::rdma_available_nics();
  } catch (const dlslime::Error& e) {
    CHECK(e.status() == DLSLIME_STATUS_RDMA_UNAVAILABLE);
    CHECK(std::strstr(e.what(), "libibverbs.so.1") != nullptr);
  }
  if (nics.empty() || nics == "[]") {
    try {
      dlslime::RdmaContext ctx;
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_RDMA_UNAVAILABLE);
    }
    std::printf("test_cpp_rdma: no RDMA here, RdmaContext throws RDMA_UNAVAILABLE\n");
    return finish("test_cpp_rdma");
  }
  int to_child, from_child;
  pid_t pid = fork_child(child, _exit, &to_child, &from_child);  // before any endpoint exists
  if (pid < 0) return 2;
  try {
    dlslime::RdmaContext ctx(options(false));
    CHECK(nics.find(ctx.device()) != std::string::npos);
    dlslime::Pool pool;
    std::vector<uint8_t> a(1 << 20, 0x11);
    auto h = pool.register_region(a.data(), a.size(), "local");
    auto ep = dlslime::Endpoint::rdma(ctx, pool, 2);
    std::string info = get_line(from_child);
    put_line(to_child, ep.info());
    ep.connect(info);
    CHECK(get_line(from_child) == "ready");
    auto rb = ep.remote_handle("buf");
    ep.read({dlslime::assignment(h, rb, 0, 0, 512 * 1024)}, 20s).wait();  // striped over both QPs
    CHECK(a[0] == 0x5a && a[512 * 1024 - 1] == 0x5a && a[512 * 1024] == 0x11);
    std::vector<uint8_t> got(8, 0);
    auto r = ep.recv(got.data(), got.size());
    std::memset(a.data(), 0x33, 8);
    ep.write({dlslime::assignment(h, rb, 0, 0, 4)}).wait();
    ep.write_with_imm({dlslime::assignment(h, rb, 4, 4, 4)}, 4242).wait();
    CHECK(r.wait_for(30s));
    CHECK(r.nbytes() == 8 && got[0] == 0x33 && got[7] == 0x33);
    put_line(to_child, "bye");
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "initiator: %s\n", e.what());
    g_failures++;
  }
  int st = 0;
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  return finish("test_cpp_rdma");
}
