// A C++ PeerAgent (bindings/cpp/include/dlslime.hpp) talking to a Python one: run by
// bindings/python/tests/test_peer_agent.py, which starts NanoCtrl + Redis and the Python
// agent "alice", builds this with -Wall -Wextra -Werror and runs it as "carol":
//
//   cpp_peer_agent NANOCTRL_URL SCOPE TRANSPORT TOKEN
//
// TOKEN is NanoCtrl's bearer token, given through PeerOptions::nanoctrl_token.
// carol publishes "kv" (bytes i % 251), connects to alice, reads alice's "kv" by name,
// writes into it with an immediate value, sends a message, and prints one line per step.
#include <dlslime.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s NANOCTRL_URL SCOPE TRANSPORT TOKEN\n", argv[0]);
    return 2;
  }
  using namespace std::chrono_literals;
  try {
    dlslime::PeerOptions opts;
    opts.nanoctrl_token = argv[4];
    dlslime::PeerAgent carol(argv[1], "carol", argv[2], opts);
    std::vector<uint8_t> kv(4096);
    for (size_t i = 0; i < kv.size(); i++) kv[i] = static_cast<uint8_t>(i % 251);
    carol.register_memory_region("kv", kv);
    auto conn = carol.connect_to("alice", argv[3]);
    dlslime_peer_transport_t t = conn.wait(20s);
    std::printf("connected %d\n", static_cast<int>(t));
    // (name, local_offset, remote_offset, length): alice's kv[0..16) -> kv[100..116)
    carol.read("alice", {{"kv", "", 100, 0, 16}}, 10s).wait();
    std::printf("read %.16s\n", reinterpret_cast<const char*>(kv.data() + 100));
    carol.write_with_imm("alice", {{"kv", "kv", 0, 32, 8}}, 5, 10s).wait();
    std::printf("wrote\n");
    const std::string msg = "hello from C++";
    carol.send("alice", msg, 10s).wait();
    std::printf("sent\n");
    try {
      carol.read("alice", {{"kv", "no-such-region", 0, 0, 8}}, 10s).wait();
      std::printf("unexpected success\n");
      return 1;
    } catch (const dlslime::Error& e) {
      std::printf("error %d\n", static_cast<int>(e.status()));
    }
    std::fflush(stdout);
    carol.shutdown();
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "error %d: %s\n", static_cast<int>(e.status()), e.what());
    return 1;
  }
  return 0;
}
