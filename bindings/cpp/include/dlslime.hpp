// dlslime.hpp: header-only C++17 RAII wrapper over the C ABI (dlslime.h).
//
// Uses only the C functions; never exposes Rust types. Every handle is a move-only
// owner that frees its C object exactly once. Fallible calls throw dlslime::Error, which
// carries the dlslime_status_t and the library's last-error message. Thread safety is
// that of the C objects: Pool, TcpContext, Endpoint and Future may be used from several
// threads at once (but not moved or destroyed while in use).
#ifndef DLSLIME_HPP
#define DLSLIME_HPP

#include <dlslime.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dlslime {

/// A failed call: the status and the library's message.
class Error : public std::runtime_error {
 public:
  Error(dlslime_status_t status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  dlslime_status_t status() const noexcept { return status_; }

 private:
  dlslime_status_t status_;
};

/// The calling thread's last error message.
inline std::string last_error_message() {
  size_t len = 0;
  dlslime_last_error_message(nullptr, 0, &len);
  std::string s(len + 1, '\0');
  dlslime_last_error_message(&s[0], s.size(), &len);
  s.resize(len < s.size() ? len : s.size() - 1);
  return s;
}

/// Throws Error unless `st` is DLSLIME_STATUS_OK.
inline void check(dlslime_status_t st) {
  if (st != DLSLIME_STATUS_OK) {
    throw Error(st, std::string(dlslime_status_str(st)) + ": " + last_error_message());
  }
}

inline std::string version() { return dlslime_version(); }

namespace detail {
/// Takes ownership of a library-allocated string.
inline std::string take_string(char* s) {
  std::string out = s ? s : "";
  dlslime_string_free(s);
  return out;
}

/// A move-only owner of a C handle freed by `Free`.
template <typename T, void (*Free)(T*)>
class Handle {
 public:
  Handle() noexcept = default;
  explicit Handle(T* p) noexcept : p_(p) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  ~Handle() { reset(); }
  void reset() noexcept {
    if (p_) Free(p_);
    p_ = nullptr;
  }
  T* get() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};
}  // namespace detail

using MrHandle = dlslime_mr_handle_t;
using RemoteHandle = dlslime_remote_handle_t;

/// (local, remote, remote_offset, local_offset, length), the DLSlime order.
inline dlslime_assignment_t assignment(MrHandle local, RemoteHandle remote, uint64_t remote_offset,
                                       uint64_t local_offset, uint64_t length) {
  dlslime_assignment_t a;
  a.local = local;
  a.remote = remote;
  a.remote_offset = remote_offset;
  a.local_offset = local_offset;
  a.length = length;
  return a;
}

class Pool {
 public:
  Pool() {
    dlslime_memory_pool_t* p = nullptr;
    check(dlslime_memory_pool_new(&p));
    h_ = Handle(p);
  }
  /// Registers [ptr, ptr+len) under `name` ("" for the default name mr_<handle>).
  MrHandle register_region(void* ptr, size_t len, const std::string& name = "") {
    MrHandle h = 0;
    check(dlslime_memory_pool_register(h_.get(), name.empty() ? nullptr : name.c_str(), ptr, len, &h));
    return h;
  }
  void unregister(MrHandle h) { check(dlslime_memory_pool_unregister(h_.get(), h)); }
  void unregister(const std::string& name) { check(dlslime_memory_pool_unregister_name(h_.get(), name.c_str())); }
  MrHandle handle(const std::string& name) const {
    MrHandle h = 0;
    check(dlslime_memory_pool_handle(h_.get(), name.c_str(), &h));
    return h;
  }
  std::string mr_info() const {
    char* s = nullptr;
    check(dlslime_memory_pool_mr_info(h_.get(), &s));
    return detail::take_string(s);
  }
  const dlslime_memory_pool_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_memory_pool_t, dlslime_memory_pool_free>;
  Handle h_;
};

/// Options of a TCP context; zero/empty fields keep the library defaults.
struct TcpOptions {
  std::string bind;            // "IP:port"; empty: "0.0.0.0:0"
  std::string advertise_host;  // empty: automatic
  uint32_t lanes = 0;
  uint64_t chunk_size = 0;
  std::chrono::milliseconds idle_timeout{0};
  std::chrono::milliseconds default_timeout{0};
};

class TcpContext {
 public:
  explicit TcpContext(const TcpOptions& o = TcpOptions()) {
    dlslime_tcp_options_t c;
    dlslime_tcp_options_init(&c);
    c.bind = o.bind.empty() ? nullptr : o.bind.c_str();
    c.advertise_host = o.advertise_host.empty() ? nullptr : o.advertise_host.c_str();
    c.lanes = o.lanes;
    c.chunk_size = o.chunk_size;
    c.idle_timeout_ms = static_cast<uint64_t>(o.idle_timeout.count());
    c.default_timeout_ms = static_cast<uint64_t>(o.default_timeout.count());
    dlslime_tcp_context_t* p = nullptr;
    check(dlslime_tcp_context_new(&c, &p));
    h_ = Handle(p);
  }
  std::string local_addr() const {
    char* s = nullptr;
    check(dlslime_tcp_context_local_addr(h_.get(), &s));
    return detail::take_string(s);
  }
  const dlslime_tcp_context_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_tcp_context_t, dlslime_tcp_context_free>;
  Handle h_;
};

class Future {
 public:
  explicit Future(dlslime_future_t* f) noexcept : h_(f) {}
  /// Waits for completion; throws Error if the operation failed.
  void wait() const { check(dlslime_future_wait(h_.get())); }
  /// True if the operation completed successfully within `timeout`; false if this wait
  /// gave up first; throws Error if the operation failed.
  bool wait_for(std::chrono::milliseconds timeout) const {
    dlslime_status_t st = dlslime_future_wait_for(h_.get(), static_cast<uint64_t>(timeout.count()));
    if (st == DLSLIME_STATUS_TIMEOUT && dlslime_future_status(h_.get()) == DLSLIME_STATUS_PENDING) return false;
    check(st);
    return true;
  }
  bool done() const noexcept { return dlslime_future_done(h_.get()); }
  dlslime_status_t status() const noexcept { return dlslime_future_status(h_.get()); }
  int32_t imm_data() const noexcept { return dlslime_future_imm_data(h_.get()); }
  uint64_t nbytes() const noexcept { return dlslime_future_nbytes(h_.get()); }

 private:
  detail::Handle<dlslime_future_t, dlslime_future_free> h_;
};

class Endpoint {
 public:
  static Endpoint tcp(const TcpContext& ctx, const Pool& pool) {
    dlslime_endpoint_t* p = nullptr;
    check(dlslime_tcp_endpoint_new(ctx.get(), pool.get(), &p));
    return Endpoint(p);
  }
  std::string info() const {
    char* s = nullptr;
    check(dlslime_endpoint_info(h_.get(), &s));
    return detail::take_string(s);
  }
  void connect(const std::string& peer_info) { check(dlslime_endpoint_connect(h_.get(), peer_info.c_str())); }
  RemoteHandle register_remote(const std::string& name, const std::string& region_json) {
    RemoteHandle h = 0;
    check(dlslime_endpoint_register_remote(h_.get(), name.c_str(), region_json.c_str(), &h));
    return h;
  }
  RemoteHandle remote_handle(const std::string& name) const {
    RemoteHandle h = 0;
    check(dlslime_endpoint_remote_handle(h_.get(), name.c_str(), &h));
    return h;
  }
  Future read(const std::vector<dlslime_assignment_t>& a, std::chrono::milliseconds timeout = {}) {
    return op(dlslime_endpoint_read, a, timeout);
  }
  Future write(const std::vector<dlslime_assignment_t>& a, std::chrono::milliseconds timeout = {}) {
    return op(dlslime_endpoint_write, a, timeout);
  }
  Future write_with_imm(const std::vector<dlslime_assignment_t>& a, int32_t imm,
                        std::chrono::milliseconds timeout = {}) {
    dlslime_future_t* f = nullptr;
    check(dlslime_endpoint_write_with_imm(h_.get(), a.data(), a.size(), imm, ms(timeout), &f));
    return Future(f);
  }
  Future imm_recv(std::chrono::milliseconds timeout = {}) {
    dlslime_future_t* f = nullptr;
    check(dlslime_endpoint_imm_recv(h_.get(), ms(timeout), &f));
    return Future(f);
  }
  /// The buffer must stay valid and unmodified until the future completes.
  Future send(const void* ptr, size_t len, std::chrono::milliseconds timeout = {}) {
    dlslime_future_t* f = nullptr;
    check(dlslime_endpoint_send(h_.get(), ptr, len, ms(timeout), &f));
    return Future(f);
  }
  /// The buffer must stay valid and untouched until the future completes.
  Future recv(void* ptr, size_t len, std::chrono::milliseconds timeout = {}) {
    dlslime_future_t* f = nullptr;
    check(dlslime_endpoint_recv(h_.get(), ptr, len, ms(timeout), &f));
    return Future(f);
  }
  size_t cancel_all() {
    size_t n = 0;
    check(dlslime_endpoint_cancel_all(h_.get(), &n));
    return n;
  }
  void shutdown() { check(dlslime_endpoint_shutdown(h_.get())); }

 private:
  explicit Endpoint(dlslime_endpoint_t* p) noexcept : h_(p) {}
  static uint64_t ms(std::chrono::milliseconds t) { return static_cast<uint64_t>(t.count()); }
  using OpFn = dlslime_status_t (*)(const dlslime_endpoint_t*, const dlslime_assignment_t*, size_t, uint64_t,
                                    dlslime_future_t**);
  Future op(OpFn fn, const std::vector<dlslime_assignment_t>& a, std::chrono::milliseconds timeout) {
    dlslime_future_t* f = nullptr;
    check(fn(h_.get(), a.data(), a.size(), ms(timeout), &f));
    return Future(f);
  }
  detail::Handle<dlslime_endpoint_t, dlslime_endpoint_free> h_;
};

}  // namespace dlslime

#endif  // DLSLIME_HPP
