// The slot ring through the header-only C++ wrapper: a local ring (write, gather write,
// views, try_read, ready slots, metrics, the handle, errors as exceptions with their
// status), then a server and a client over a TCP pair in this process (fetch, fetch into
// a buffer, batch, stale references). Built with -Wall -Wextra -Werror and ASan by
// scripts/test-ffi.sh.
#include "check.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static void local_ring() {
  dlslime::RingOptions o;
  o.name = "cpp-local";
  o.slot_count = 4;
  o.slot_capacity = 1024;
  dlslime::Ring r(o);
  CHECK(r.slot_count() == 4 && r.slot_capacity() == 1024);
  std::string a(1024, 'a');
  auto ra = r.write(a);
  CHECK(ra.slot == 0 && ra.generation == 0);
  std::string p1("hello "), p2("world");
  auto rb = r.write(std::vector<dlslime::Span>{p1, p2});
  CHECK(r.ready_count() == 2 && r.ready_slots().size() == 2);
  {
    auto v = r.read_view(ra);
    CHECK(v.data().size() == 1024 && std::memcmp(v.data().data(), a.data(), 1024) == 0);
    CHECK(r.slot_state(0) == DLSLIME_SLOT_STATE_READING);
    std::vector<char> out(1024);
    size_t n = 0;
    CHECK(!r.try_read(ra, out, n));
  }  // the view's destructor releases it
  CHECK(r.slot_state(0) == DLSLIME_SLOT_STATE_READY);
  r.read_view(ra).consume();
  CHECK(status_of([&] { r.read_view(ra); }) == DLSLIME_STATUS_STALE_SLOT);
  std::vector<char> out(64);
  CHECK(r.read(rb, out) == 11 && std::string(out.data(), 11) == "hello world");
  CHECK(status_of([&] { r.write(std::string(1025, 'x')); }) == DLSLIME_STATUS_INVALID_ARGUMENT);
  auto m = r.metrics();
  CHECK(m.writes == 2 && m.reads == 2 && m.ready == 0);
  auto other = dlslime::Ring::attach(r.handle());
  CHECK(other.slot_count() == 4);
  dlslime::RingOptions full = o;
  full.name = "cpp-full";
  full.overwrite = false;
  dlslime::Ring f(full);
  for (int i = 0; i < 4; i++) f.write(std::string("x"));
  CHECK(status_of([&] { f.write(std::string("y")); }) == DLSLIME_STATUS_SLOT_BUSY);
}

static void remote_ring() {
  using namespace std::chrono_literals;
  dlslime::RingOptions o;
  o.name = "rollouts";
  o.slot_count = 8;
  o.slot_capacity = 1 << 20;
  dlslime::Ring ring(o);
  TcpPair tcp;
  tcp.connect();
  auto& ea = tcp.ea;
  auto& eb = tcp.eb;
  dlslime::RingServer server;
  server.add_ring(ring);
  server.serve(eb);
  dlslime::RingClientOptions co;
  co.timeout = 10s;
  dlslime::RingClient client(co);
  client.add_endpoint("rollouts", ea);
  CHECK(client.worst_case() == 22s);
  std::vector<dlslime::SlotRef> refs;
  for (int i = 0; i < 6; i++) refs.push_back(ring.write(std::string(100000 + i, static_cast<char>('a' + i))));
  auto p = client.fetch("rollouts", refs[0]);
  CHECK(p.size() == 100000 && static_cast<const char*>(p.data())[99999] == 'a');
  CHECK(status_of([&] { client.fetch("rollouts", refs[0]); }) == DLSLIME_STATUS_STALE_SLOT);
  std::vector<char> mine(200000);
  CHECK(client.fetch_into("rollouts", refs[1], mine) == 100001 && mine[100000] == 'b');
  auto items = client.fetch_batch("rollouts", std::vector<dlslime::SlotRef>(refs.begin() + 2, refs.end()));
  CHECK(items.size() == 4);
  for (size_t i = 0; i < items.size(); i++) {
    CHECK(items[i].status == DLSLIME_STATUS_OK && items[i].payload.size() == 100002 + i);
  }
  auto k = client.counters();
  CHECK(k.fetched == 6 && k.stale == 1);
  client.close();
  server.stop();
  CHECK(server.counters().commits == 6);
}

int main() {
  try {
    local_ring();
    remote_ring();
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "FATAL: %s\n", e.what());
    return 2;
  }
  return finish("test_cpp_ring");
}
