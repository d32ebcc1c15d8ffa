// Test helpers for the C++ tests of bindings/cpp/include/dlslime.hpp (the C++ sibling of
// check.h): counted checks, the closing summary, the status of a throwing call, and
// line-based exchange of endpoint_info over a pipe pair (the child forked by fork.h).
#ifndef DLSLIME_FFI_TESTS_CHECK_HPP
#define DLSLIME_FFI_TESTS_CHECK_HPP

#include <dlslime.hpp>

#include <unistd.h>

#include "fork.h"

#include <cstdio>
#include <string>

static int g_checks = 0, g_failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    g_checks++;                                                                \
    if (!(cond)) {                                                             \
      g_failures++;                                                            \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
    }                                                                          \
  } while (0)

// The exit status of a test named `name`, after printing how its checks went.
static inline int finish(const char* name) {
  if (g_failures) {
    std::fprintf(stderr, "%s: %d of %d checks FAILED\n", name, g_failures, g_checks);
    return 1;
  }
  std::printf("%s: all %d checks passed\n", name, g_checks);
  return 0;
}

// The status a call throws (`dlslime::Error`), DLSLIME_STATUS_OK when it returns.
template <typename F>
static dlslime_status_t status_of(F f) {
  try {
    f();
  } catch (const dlslime::Error& e) {
    return e.status();
  }
  return DLSLIME_STATUS_OK;
}

// Two TCP endpoints over loopback in this process: `ea` over pool `pa`, `eb` over `pb`.
// `connect()` connects them to each other (after the regions are registered).
struct TcpPair {
  static dlslime::TcpOptions loopback() {
    dlslime::TcpOptions o;
    o.bind = "127.0.0.1:0";
    return o;
  }
  dlslime::Pool pa, pb;
  dlslime::TcpContext ca{loopback()}, cb{loopback()};
  dlslime::Endpoint ea = dlslime::Endpoint::tcp(ca, pa);
  dlslime::Endpoint eb = dlslime::Endpoint::tcp(cb, pb);
  void connect() {
    ea.connect(eb.info());
    eb.connect(ea.info());
  }
};

static inline void put_line(int fd, const std::string& s) {
  std::string l = s + "\n";
  size_t off = 0;
  while (off < l.size()) {
    ssize_t n = write(fd, l.data() + off, l.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

static inline std::string get_line(int fd) {
  std::string s;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') s += c;
  return s;
}

#endif  // DLSLIME_FFI_TESTS_CHECK_HPP
