// Tests bindings/cpp/include/dlslime.hpp (ASan): TCP over loopback in one process, then
// shared memory between two processes (fork), with SharedBuffer, spans and chrono
// timeouts of several units.
#include "check.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

// The shared-memory target: a SharedBuffer "buf" filled with 0x5a; waits for one
// write_with_imm, answers with a send of the first 8 bytes it then holds.
static int shm_child(int in, int out) {
  try {
    dlslime::Pool pool;
    dlslime::SharedBuffer buf(1 << 16);
    std::memset(buf.data(), 0x5a, buf.size());
    pool.register_region(buf, "buf");
    auto ep = dlslime::Endpoint::shm(pool);
    put_line(out, ep.info());
    ep.connect(get_line(in));
    auto imm = ep.imm_recv(std::chrono::seconds(30));
    imm.wait();
    std::array<uint8_t, 9> reply{};
    std::memcpy(reply.data(), buf.data(), 8);
    reply[8] = static_cast<uint8_t>(imm.imm_data());
    ep.send(reply).wait();
    get_line(in);  // "bye"
    return 0;
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "shm child: error %d: %s\n", static_cast<int>(e.status()), e.what());
    return 1;
  }
}

static void shm_two_process() {
  using namespace std::chrono_literals;
  int to_child = -1, from_child = -1;
  pid_t pid = fork_child(shm_child, _exit, &to_child, &from_child);
  CHECK(pid > 0);
  if (pid < 0) return;
  {
    dlslime::Pool pool;
    dlslime::SharedBuffer mine(4096);
    dlslime::SharedBuffer moved(std::move(mine));  // move-only owner
    CHECK(mine.data() == nullptr && moved.size() == 4096 && moved[100] == 0);
    std::memcpy(moved.data(), "shm-cpp!", 8);
    auto h = pool.register_region(moved, "mine");
    auto ep = dlslime::Endpoint::shm(pool, dlslime::ShmOptions{});
    std::string peer = get_line(from_child);
    put_line(to_child, ep.info());
    ep.connect(peer);
    auto r = ep.remote_handle("buf");
    // read remote[16..24) into mine[1000..1008)
    ep.read({dlslime::assignment(h, r, 16, 1000, 8)}, 10s).wait();
    CHECK(moved[1000] == 0x5a && moved[1007] == 0x5a);
    std::array<uint8_t, 16> got{};
    auto reply = ep.recv(got, 10000ms);
    ep.write_with_imm({dlslime::assignment(h, r, 0, 0, 8)}, 9, 10s).wait();
    CHECK(reply.wait_for(std::chrono::microseconds(10000000)));
    CHECK(reply.nbytes() == 9 && std::memcmp(got.data(), "shm-cpp!", 8) == 0 && got[8] == 9);
    // out of range on the local side: refused synchronously, nothing sent
    try {
      ep.write({dlslime::assignment(h, r, 0, 4090, 100)});
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_OUT_OF_RANGE);
      CHECK(!e.message().empty() && std::string(e.status_name()) == "out of range");
    }
    put_line(to_child, "bye");
    ep.shutdown();
    ep.shutdown();  // idempotent
    try {
      ep.imm_recv();
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_SHUT_DOWN);
    }
  }
  int st = 0;
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  close(to_child);
  close(from_child);
}

static void spans_and_timeouts() {
  using namespace std::chrono_literals;
  std::vector<uint32_t> v(4);
  dlslime::Span s(v);
  CHECK(s.size() == 16 && s.data() == v.data());
  CHECK(s.subspan(4).size() == 12 && s.subspan(100).size() == 0 && s.subspan(4, 4).size() == 4);
  std::string str = "abc";
  dlslime::MutableSpan ms(str);
  CHECK(ms.size() == 3);
  dlslime::Span from_mutable = ms;
  CHECK(from_mutable.data() == str.data());
  char arr[10];
  CHECK(dlslime::MutableSpan(arr).size() == 10);
  CHECK(dlslime::Timeout().ms() == 0);
  CHECK(dlslime::Timeout(1us).ms() == 1);  // rounded up, never 0 = "default"
  CHECK(dlslime::Timeout(2s).ms() == 2000);
  CHECK(dlslime::Timeout(1500us).ms() == 2);
  CHECK(dlslime::Timeout(-5ms).ms() == 0);
}

// SlimeRPC over a TCP pair in this process: both sessions are created at once (the
// handshake waits for the peer), a server thread echoes, the client calls.
static void rpc_pair() {
  using namespace std::chrono_literals;
  TcpPair tcp;
  tcp.connect();
  auto& ea = tcp.ea;
  auto& eb = tcp.eb;
  dlslime::RpcOptions ro;
  ro.slot_size = 1024;
  ro.slot_count = 2;
  std::thread server([&] {
    dlslime::RpcSession s(eb, ro);
    dlslime::RpcRequest r;
    try {
      while (s.poll(r, 10s)) {
        if (r.tag() == 0) {
          r.reply(r.payload());
        } else {
          r.reply_error("KeyError", "no such method");
        }
      }
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_PEER_DISCONNECTED);
    }
  });
  {
    dlslime::RpcSession c(ea, ro);
    CHECK(c.slot_capacity() == 1024 - 16);
    c.set_method_names({"echo"});  // tag 0; tag 3 stays "tag:3"
    CHECK(c.call(0, std::string("hello")).get(10s) == "hello");
    std::string big(5000, 'x');  // bulk path
    CHECK(c.call(0, big).get(10s) == big);
    auto bad = c.call(3, std::string());
    CHECK(bad.wait(10s) && bad.is_exception());
    CHECK(std::string(static_cast<const char*>(bad.reply().data()), bad.reply().size()).find("KeyError") !=
          std::string::npos);
    c.close();
  }
  server.join();
}

int main() {
  alarm(120);
  spans_and_timeouts();
  using namespace std::chrono_literals;
  CHECK(dlslime::version() == dlslime_version());
  // observability: off is the original's shape; on, this test's operations are counted
  dlslime::obs_set_enabled(false);
  CHECK(!dlslime::obs_enabled());
  CHECK(dlslime::obs_snapshot() == "{\"enabled\":false}");
  dlslime::obs_set_enabled(true);
  CHECK(dlslime::obs_enabled());
  try {
    dlslime::Pool pa, pb;
    std::vector<uint8_t> a(1 << 16, 0x11), b(1 << 16, 0x22);
    auto ha = pa.register_region(a.data(), a.size(), "buf");
    pb.register_region(b.data(), b.size(), "buf");
    CHECK(pa.handle("buf") == ha);
    CHECK(pa.mr_info().find("\"buf\"") != std::string::npos);
    CHECK(pa.region_device(ha) == -1);  // host memory
    // CUDA: without a driver (every build machine) device memory is DEVICE_UNAVAILABLE.
    int32_t gpus = -1;
    try {
      gpus = dlslime::cuda_device_count();
      CHECK(gpus > 0);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_DEVICE_UNAVAILABLE);
    }
    try {
      pa.register_device_region(a.data(), 64, "dev");
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == (gpus > 0 ? DLSLIME_STATUS_INVALID_ARGUMENT : DLSLIME_STATUS_DEVICE_UNAVAILABLE));
    }
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

    auto wf = ea.write({dlslime::assignment(ha, rb, 100, 0, 1000)}, 10s);
    wf.wait();
    CHECK(b[99] == 0x22 && b[100] == 0x11 && b[1099] == 0x11 && b[1100] == 0x22);
    // a write has no immediate data: imm_data() throws INVALID_ARGUMENT, not 0
    try {
      (void)wf.imm_data();
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_INVALID_ARGUMENT);
    }
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
    // answers not defined yet throw instead of returning 0
    for (int which = 0; which < 2; which++) {
      try {
        if (which == 0) (void)pending.imm_data();
        else (void)pending.nbytes();
        CHECK(false);
      } catch (const dlslime::Error& e) {
        CHECK(e.status() == DLSLIME_STATUS_PENDING);
      }
    }
    CHECK(eb.cancel_all() >= 1);
    try {
      pending.wait();
      CHECK(false);
    } catch (const dlslime::Error& e) {
      CHECK(e.status() == DLSLIME_STATUS_CANCELLED);
    }
    // spans: std::string / std::array as send and recv buffers
    std::array<char, 32> sbuf{};
    auto r2 = eb.recv(sbuf, 10s);
    const std::string text = "span message";
    ea.send(text, 10s).wait();
    CHECK(r2.wait_for(std::chrono::milliseconds(10000)));
    CHECK(r2.nbytes() == text.size() && std::memcmp(sbuf.data(), text.data(), text.size()) == 0);
    rpc_pair();
    {
      const std::string snap = dlslime::obs_snapshot();
      CHECK(snap.find("\"enabled\":true") != std::string::npos);
      CHECK(snap.find("\"send\":{\"completed\":") != std::string::npos);
      CHECK(snap.find("\"method\":\"echo\",\"side\":\"client\"") != std::string::npos);
      CHECK(snap.find("\"method\":\"tag:3\",\"side\":\"client\"") != std::string::npos);
    }
    ea.shutdown();
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "unexpected error %d: %s\n", static_cast<int>(e.status()), e.what());
    return 1;
  }
  shm_two_process();
  return finish("test_cpp_wrapper");
}
