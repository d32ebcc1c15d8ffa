// Two-process dlslime example in C++ (bindings/cpp/include/dlslime.hpp, C++17).
//
//   ./dlslime_example [tcp|shm|rdma [TARGET_DEVICE[,INITIATOR_DEVICE]]]
//
// rdma runs over a verbs NIC (without a device name: the first one); the rest of the
// program is the same for every transport.
// The process forks a *target* that registers a buffer and publishes its endpoint_info;
// the *initiator* reads from it, writes into it with an immediate value, and exchanges a
// message with send/recv. endpoint_info travels as one JSON line over a pipe pair; real
// deployments pass it through any channel (a file, Redis, NanoCtrl).
#include <dlslime.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace std::chrono_literals;

static void put_line(int fd, const std::string& s) {
  std::string l = s + "\n";
  for (size_t off = 0; off < l.size();) {
    ssize_t n = write(fd, l.data() + off, l.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

static std::string get_line(int fd) {
  std::string s;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') s += c;
  return s;
}

// The context an endpoint of `transport` needs (TCP: a listener; RDMA: a NIC port) and
// the endpoint. `device` names the NIC for rdma (empty: the first one).
struct Node {
  std::unique_ptr<dlslime::TcpContext> tcp;
  std::unique_ptr<dlslime::RdmaContext> rdma;
};

static dlslime::Endpoint make_endpoint(const std::string& transport, const std::string& device,
                                       const dlslime::Pool& pool, Node& node) {
  if (transport == "shm") return dlslime::Endpoint::shm(pool);
  if (transport == "rdma") {
    dlslime::RdmaOptions o;
    o.device = device;
    node.rdma = std::make_unique<dlslime::RdmaContext>(o);
    return dlslime::Endpoint::rdma(*node.rdma, pool, 2);
  }
  dlslime::TcpOptions o;
  o.bind = "127.0.0.1:0";
  node.tcp = std::make_unique<dlslime::TcpContext>(o);
  return dlslime::Endpoint::tcp(*node.tcp, pool);
}

static int target(const std::string& transport, const std::string& device, int in, int out) {
  dlslime::Pool pool;
  dlslime::SharedBuffer buf(4096);  // plain memory (a std::vector) works too
  std::memcpy(buf.data(), "target's bytes!!", 16);
  pool.register_region(buf, "buffer");
  Node node;
  auto ep = make_endpoint(transport, device, pool, node);
  put_line(out, ep.info());
  ep.connect(get_line(in));

  auto imm = ep.imm_recv(30s);
  imm.wait();  // the initiator's write_with_imm: its bytes are visible now
  std::printf("target: imm %d, buffer now \"%.32s\"\n", imm.imm_data(), reinterpret_cast<const char*>(buf.data()));
  std::fflush(stdout);

  std::array<char, 64> msg{};
  auto r = ep.recv(msg, 30s);
  r.wait();
  std::string reply = "got: " + std::string(msg.data(), r.nbytes());
  ep.send(reply, 30s).wait();
  get_line(in);  // "done"
  return 0;
}

static int initiator(const std::string& transport, const std::string& device, int in, int out) {
  dlslime::Pool pool;
  std::vector<char> local(4096, 0);
  std::memcpy(local.data(), "initiator bytes!", 16);
  auto h = pool.register_region(local, "buffer");
  Node node;
  auto ep = make_endpoint(transport, device, pool, node);
  std::string peer = get_line(in);
  put_line(out, ep.info());
  ep.connect(peer);  // both sides connect
  auto r = ep.remote_handle("buffer");

  // (local_handle, remote_handle, remote_offset, local_offset, length)
  ep.read({dlslime::assignment(h, r, 0, 100, 16)}, 10s).wait();
  std::printf("initiator: read remote[0:16] -> local[100:116] = \"%.16s\"\n", local.data() + 100);

  ep.write_with_imm({dlslime::assignment(h, r, 16, 0, 16)}, 42, 10s).wait();

  std::array<char, 64> reply{};
  auto rf = ep.recv(reply, 10s);
  ep.send(std::string("hello from C++"), 10s).wait();
  if (!rf.wait_for(10s)) {
    std::fprintf(stderr, "no reply in time\n");
    return 1;
  }
  std::printf("initiator: reply \"%.*s\"\n", static_cast<int>(rf.nbytes()), reply.data());

  try {  // errors are exceptions with the status and the library's message
    ep.read({dlslime::assignment(h, r, 0, 4090, 100)});
  } catch (const dlslime::Error& e) {
    std::printf("initiator: expected error: status %d (%s): %s\n", static_cast<int>(e.status()), e.status_name(),
                e.message().c_str());
  }
  put_line(out, "done");
  return std::string(reply.data(), rf.nbytes()) == "got: hello from C++" ? 0 : 1;
}

int main(int argc, char** argv) {
  std::string transport = argc > 1 ? argv[1] : "tcp";
  if ((transport != "tcp" && transport != "shm" && transport != "rdma") || (argc > 2 && transport != "rdma")) {
    std::fprintf(stderr, "usage: %s [tcp|shm|rdma [TARGET_DEVICE[,INITIATOR_DEVICE]]]\n", argv[0]);
    return 2;
  }
  std::string devices = argc > 2 ? argv[2] : "";
  std::string target_dev = devices.substr(0, devices.find(','));
  std::string initiator_dev =
      devices.find(',') == std::string::npos ? target_dev : devices.substr(devices.find(',') + 1);
  std::printf("dlslime %s over %s\n", dlslime::version().c_str(), transport.c_str());
  std::fflush(stdout);
  int to_target[2], to_initiator[2];
  if (pipe(to_target) != 0 || pipe(to_initiator) != 0) return 1;
  pid_t pid = fork();
  try {
    if (pid == 0) _exit(target(transport, target_dev, to_target[0], to_initiator[1]));
    int rc = initiator(transport, initiator_dev, to_initiator[0], to_target[1]);
    int st = 0;
    waitpid(pid, &st, 0);
    return rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
  } catch (const dlslime::Error& e) {
    std::fprintf(stderr, "%s: error %d: %s\n", pid == 0 ? "target" : "initiator", static_cast<int>(e.status()),
                 e.what());
    if (pid == 0) _exit(1);
    return 1;
  }
}
