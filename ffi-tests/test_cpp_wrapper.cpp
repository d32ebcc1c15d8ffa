// Tests bindings/cpp/include/dlslime.hpp over loopback TCP in one process (ASan).
#include <dlslime.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

static int failures = 0, checks = 0;
#define CHECK(c)                                                          \
  do {                                                                    \
    checks++;                                                             \
    if (!(c)) {                                                           \
      failures++;                                                         \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);   \
    }                                                                     \
  } while (0)

int main() {
  alarm(120);
  using namespace std::chrono_literals;
  CHECK(dlslime::version() == dlslime_version());
  try {
    dlslime::Pool pa, pb;
    std::vector<uint8_t> a(1 << 16, 0x11), b(1 << 16, 0x22);
    auto ha = pa.register_region(a.data(), a.size(), "buf");
    pb.register_region(b.data(), b.size(), "buf");
    CHECK(pa.handle("buf") == ha);
    CHECK(pa.mr_info().find("\"buf\"") != std::string::npos);
    try {
      pa.handle("nope");
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_UNKNOWN_HANDLE);
      CHECK(std::strstr(e.what(), "nope") != nullptr);
    }
    dlslime::TcpOptions o;
    o.bind = "127.0.0.1:0";
    dlslime::TcpContext ca(o), cb(o);
    CHECK(ca.local_addr().rfind("127.0.0.1:", 0) == 0);
    auto ea = dlslime::Endpoint::tcp(ca, pa);
    auto eb = dlslime::Endpoint::tcp(cb, pb);
    ea.connect(eb.info());
    eb.connect(ea.info());
    auto rb = ea.remote_handle("buf");

    ea.write({dlslime::assignment(ha, rb, 100, 0, 1000)}, 10s).wait();
    CHECK(b[99] == 0x22 && b[100] == 0x11 && b[1099] == 0x11 && b[1100] == 0x22);
    ea.read({dlslime::assignment(ha, rb, 2000, 5000, 10)}).wait();
    CHECK(a[5000] == 0x22 && a[5009] == 0x22);

    auto imm = eb.imm_recv();
    ea.write_with_imm({dlslime::assignment(ha, rb, 0, 0, 8)}, 77).wait();
    CHECK(imm.wait_for(10s));
    CHECK(imm.imm_data() == 77);

    char msg[] = "hi", got[16] = {0};
    auto r = eb.recv(got, sizeof got);
    ea.send(msg, sizeof msg).wait();
    r.wait();
    CHECK(r.nbytes() == sizeof msg && std::strcmp(got, "hi") == 0);

    auto pending = eb.imm_recv();
    CHECK(!pending.wait_for(20ms));
    CHECK(eb.cancel_all() >= 1);
    try {
      pending.wait();
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_CANCELLED);
    }
    ea.shutdown();
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "unexpected error %d: %s\n", static_cast<int>(e.status()), e.what());
    return 1;
  }
  if (failures) {
    std::fprintf(stderr, "test_cpp_wrapper: %d of %d checks FAILED\n", failures, checks);
    return 1;
  }
  std::printf("test_cpp_wrapper: all %d checks passed\n", checks);
  return 0;
}
