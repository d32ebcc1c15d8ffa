// dlslime.hpp: header-only C++17 RAII wrapper over the C ABI (dlslime.h).
//
// Uses only the C functions; never exposes Rust types. Every handle is a move-only
// owner that frees its C object exactly once (Pool, TcpContext, Endpoint, Future,
// SharedBuffer, PeerAgent, PeerConnection). Fallible calls throw dlslime::Error, which carries the
// dlslime_status_t and the library's last-error message. Timeouts are std::chrono
// durations (rounded up to whole milliseconds; zero means the default deadline).
// Buffers are passed as dlslime::Span / MutableSpan (pointer + size; built from
// containers, arrays, std::string, or std::span under C++20). Thread safety is that of
// the C objects: Pool, TcpContext, Endpoint and Future may be used from several
// threads at once (but not moved or destroyed while in use).
//
// Example: examples-cpp/dlslime_example.cpp.
#ifndef DLSLIME_HPP
#define DLSLIME_HPP

#include <dlslime.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L && __has_include(<span>)
#include <span>
#define DLSLIME_HPP_HAS_STD_SPAN 1
#endif

namespace dlslime {

/// A failed call: the status and the library's message.
class Error : public std::runtime_error {
 public:
  Error(dlslime_status_t status, const std::string& message)
      : std::runtime_error(message), status_(status), message_(message) {}
  /// The status number (DLSLIME_STATUS_*).
  dlslime_status_t status() const noexcept { return status_; }
  /// The library's last-error message for the failed call ("" if none).
  const std::string& message() const noexcept { return message_; }
  /// The status's name, e.g. "out of range".
  const char* status_name() const noexcept { return dlslime_status_str(status_); }

 private:
  dlslime_status_t status_;
  std::string message_;
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

/// Throws Error unless `st` is DLSLIME_STATUS_OK; what() is "<status name>: <message>".
inline void check(dlslime_status_t st) {
  if (st != DLSLIME_STATUS_OK) {
    std::string msg = last_error_message();
    throw Error(st, msg.empty() ? std::string(dlslime_status_str(st)) : msg);
  }
}

/// A read-only byte range: pointer + size. Implicit from contiguous containers of
/// trivially copyable elements, C arrays, std::string and (C++20) std::span.
class Span {
 public:
  constexpr Span() noexcept = default;
  constexpr Span(const void* data, size_t size) noexcept : data_(data), size_(size) {}
  template <typename T, typename A>
  Span(const std::vector<T, A>& v) noexcept : data_(v.data()), size_(v.size() * sizeof(T)) {  // NOLINT
    static_assert(std::is_trivially_copyable<T>::value, "elements must be trivially copyable");
  }
  template <typename T, size_t N>
  Span(const std::array<T, N>& a) noexcept : data_(a.data()), size_(N * sizeof(T)) {  // NOLINT
    static_assert(std::is_trivially_copyable<T>::value, "elements must be trivially copyable");
  }
  template <typename T, size_t N>
  Span(const T (&a)[N]) noexcept : data_(a), size_(N * sizeof(T)) {  // NOLINT
    static_assert(std::is_trivially_copyable<T>::value, "elements must be trivially copyable");
  }
  Span(const std::string& s) noexcept : data_(s.data()), size_(s.size()) {}  // NOLINT
#ifdef DLSLIME_HPP_HAS_STD_SPAN
  template <typename T, size_t E>
  Span(std::span<T, E> s) noexcept : data_(s.data()), size_(s.size_bytes()) {}  // NOLINT
#endif
  constexpr const void* data() const noexcept { return data_; }
  constexpr size_t size() const noexcept { return size_; }
  /// Bytes [offset, offset + len) of this span (clamped to its end).
  Span subspan(size_t offset, size_t len = SIZE_MAX) const noexcept {
    if (offset > size_) offset = size_;
    if (len > size_ - offset) len = size_ - offset;
    return Span(static_cast<const uint8_t*>(data_) + offset, len);
  }

 private:
  const void* data_ = nullptr;
  size_t size_ = 0;
};

/// A writable byte range (see Span).
class MutableSpan {
 public:
  constexpr MutableSpan() noexcept = default;
  constexpr MutableSpan(void* data, size_t size) noexcept : data_(data), size_(size) {}
  template <typename T, typename A>
  MutableSpan(std::vector<T, A>& v) noexcept : data_(v.data()), size_(v.size() * sizeof(T)) {  // NOLINT
    static_assert(std::is_trivially_copyable<T>::value, "elements must be trivially copyable");
  }
  template <typename T, size_t N>
  MutableSpan(std::array<T, N>& a) noexcept : data_(a.data()), size_(N * sizeof(T)) {  // NOLINT
    static_assert(std::is_trivially_copyable<T>::value, "elements must be trivially copyable");
  }
  template <typename T, size_t N>
  MutableSpan(T (&a)[N]) noexcept : data_(a), size_(N * sizeof(T)) {  // NOLINT
    static_assert(std::is_trivially_copyable<T>::value && !std::is_const<T>::value,
                  "elements must be writable and trivially copyable");
  }
  MutableSpan(std::string& s) noexcept : data_(&s[0]), size_(s.size()) {}  // NOLINT
#ifdef DLSLIME_HPP_HAS_STD_SPAN
  template <typename T, size_t E, typename = std::enable_if_t<!std::is_const<T>::value>>
  MutableSpan(std::span<T, E> s) noexcept : data_(s.data()), size_(s.size_bytes()) {}  // NOLINT
#endif
  constexpr void* data() const noexcept { return data_; }
  constexpr size_t size() const noexcept { return size_; }
  operator Span() const noexcept { return Span(data_, size_); }  // NOLINT
  MutableSpan subspan(size_t offset, size_t len = SIZE_MAX) const noexcept {
    if (offset > size_) offset = size_;
    if (len > size_ - offset) len = size_ - offset;
    return MutableSpan(static_cast<uint8_t*>(data_) + offset, len);
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

inline std::string version() { return dlslime_version(); }

namespace detail {
/// A std::chrono duration as the C ABI's milliseconds, rounded up (so 1us waits 1ms,
/// not 0 = "the default deadline"); negative durations are 0.
template <typename Rep, typename Period>
inline uint64_t to_ms(std::chrono::duration<Rep, Period> d) {
  if (d <= d.zero()) return 0;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d);
  if (ms < d) ms += std::chrono::milliseconds(1);
  return static_cast<uint64_t>(ms.count());
}

/// Takes ownership of a library-allocated string.
inline std::string take_string(char* s) {
  std::string out = s ? s : "";
  dlslime_string_free(s);
  return out;
}

/// Calls `f(args..., &v)`, throws on failure and returns what `f` wrote to `v`: the
/// shape of every C function that hands back one out-parameter.
template <typename T, typename F, typename... A>
T out(F f, A... args) {
  T v{};
  check(f(args..., &v));
  return v;
}

/// Calls `f(args..., &s)`, a function that writes an owned string, and takes `s`
/// (throws Error when `f` fails).
template <typename F, typename... A>
std::string string_out(F f, A... args) {
  return take_string(out<char*>(f, args...));
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

/// Number of CUDA devices; throws Error(DLSLIME_STATUS_DEVICE_UNAVAILABLE) when the CUDA
/// driver is missing (the library loads it at run time and works without it).
inline int32_t cuda_device_count() {
  return detail::out<int32_t>(dlslime_cuda_device_count);
}

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
    h_ = Handle(detail::out<dlslime_memory_pool_t*>(dlslime_memory_pool_new));
  }
  /// Registers [ptr, ptr+len) under `name` ("" for the default name mr_<handle>).
  MrHandle register_region(void* ptr, size_t len, const std::string& name = "") {
    return detail::out<MrHandle>(dlslime_memory_pool_register, h_.get(), name.empty() ? nullptr : name.c_str(), ptr, len);
  }
  /// Registers a writable buffer (a peer may write into it).
  MrHandle register_region(MutableSpan buf, const std::string& name = "") {
    return register_region(buf.data(), buf.size(), name);
  }
  /// Registers CUDA device memory (e.g. `tensor.data_ptr()`); throws
  /// Error(DLSLIME_STATUS_DEVICE_UNAVAILABLE) without a CUDA driver. TCP stages it;
  /// shared memory and RDMA refuse it (docs/gpu.md).
  MrHandle register_device_region(void* dptr, size_t len, const std::string& name = "") {
    return detail::out<MrHandle>(dlslime_memory_pool_register_device, h_.get(), name.empty() ? nullptr : name.c_str(), dptr, len);
  }
  /// Where a region lives: -1 host memory, else the CUDA device ordinal.
  int32_t region_device(MrHandle h) const {
    int32_t d = -1;
    check(dlslime_memory_pool_region_device(h_.get(), h, &d));
    return d;
  }
  void unregister(MrHandle h) { check(dlslime_memory_pool_unregister(h_.get(), h)); }
  void unregister(const std::string& name) { check(dlslime_memory_pool_unregister_name(h_.get(), name.c_str())); }
  MrHandle handle(const std::string& name) const {
    return detail::out<MrHandle>(dlslime_memory_pool_handle, h_.get(), name.c_str());
  }
  std::string mr_info() const {
    return detail::string_out(dlslime_memory_pool_mr_info, h_.get());
  }
  const dlslime_memory_pool_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_memory_pool_t, dlslime_memory_pool_free>;
  Handle h_;
};

/// A timeout argument: any std::chrono duration (rounded up to whole milliseconds);
/// the default, zero, means the context's default deadline.
class Timeout {
 public:
  constexpr Timeout() noexcept = default;
  template <typename Rep, typename Period>
  Timeout(std::chrono::duration<Rep, Period> d) : ms_(detail::to_ms(d)) {}  // NOLINT
  constexpr uint64_t ms() const noexcept { return ms_; }

 private:
  uint64_t ms_ = 0;
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
    c.idle_timeout_ms = detail::to_ms(o.idle_timeout);
    c.default_timeout_ms = detail::to_ms(o.default_timeout);
    h_ = Handle(detail::out<dlslime_tcp_context_t*>(dlslime_tcp_context_new, &c));
  }
  std::string local_addr() const {
    return detail::string_out(dlslime_tcp_context_local_addr, h_.get());
  }
  const dlslime_tcp_context_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_tcp_context_t, dlslime_tcp_context_free>;
  Handle h_;
};

/// Options of an RDMA context; empty/zero fields keep the library defaults.
struct RdmaOptions {
  std::string device;     // empty: the first NIC (available_nics())
  uint32_t ib_port = 0;   // 0: port 1
  std::string link_type;  // "RoCE" or "IB" to insist on one; empty: any
  int gid_index = -1;     // < 0: SLIME_GID_INDEX or automatic; 0 is a valid index
  uint32_t cq_depth = 0;
  std::chrono::milliseconds default_timeout{0};
};

/// Every counter of the process as JSON (docs/observability.md): {"enabled":false} when
/// recording is off (DLSLIME_OBS unset and obs_set_enabled(true) not called).
inline std::string obs_snapshot() {
  return detail::string_out(dlslime_obs_snapshot);
}

/// Turns recording on or off for the whole process (overrides DLSLIME_OBS).
inline void obs_set_enabled(bool enabled) { dlslime_obs_set_enabled(enabled); }

/// Whether counters are being recorded.
inline bool obs_enabled() { return dlslime_obs_enabled(); }

/// Names of the RDMA devices, as JSON ("[\"mlx5_0\", ...]"). Throws Error with
/// DLSLIME_STATUS_RDMA_UNAVAILABLE where libibverbs is not installed.
inline std::string rdma_available_nics() {
  return detail::string_out(dlslime_rdma_available_nics);
}

/// One port of one NIC opened for RDMA, shared by endpoints (Endpoint::rdma).
class RdmaContext {
 public:
  explicit RdmaContext(const RdmaOptions& o = RdmaOptions()) {
    dlslime_rdma_options_t c;
    dlslime_rdma_options_init(&c);
    c.device = o.device.empty() ? nullptr : o.device.c_str();
    c.ib_port = o.ib_port;
    c.link_type = o.link_type.empty() ? nullptr : o.link_type.c_str();
    c.gid_index_set = o.gid_index >= 0;
    c.gid_index = o.gid_index >= 0 ? static_cast<uint32_t>(o.gid_index) : 0;
    c.cq_depth = o.cq_depth;
    c.default_timeout_ms = detail::to_ms(o.default_timeout);
    h_ = Handle(detail::out<dlslime_rdma_context_t*>(dlslime_rdma_context_new, &c));
  }
  std::string device() const {
    return detail::string_out(dlslime_rdma_context_device, h_.get());
  }
  /// Registers every region of `pool` (now and later) with this NIC; keys become rkeys.
  void bind(const Pool& pool) const { check(dlslime_rdma_context_bind_pool(h_.get(), pool.get())); }
  const dlslime_rdma_context_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_rdma_context_t, dlslime_rdma_context_free>;
  Handle h_;
};

/// Options of a shared-memory endpoint; zero/false fields keep the library defaults.
struct ShmOptions {
  bool force_staged = false;     // always move bytes through bounce slots
  bool no_spin = false;          // waiters park at once (both processes on one core)
  bool inline_progress = false;  // the waiting thread drives the transport
  std::chrono::microseconds spin{0};
  std::chrono::milliseconds default_timeout{0};
};

/// Zeroed, page-aligned memory from dlslime_alloc_shared that a connected
/// shared-memory peer maps directly (one-sided operations become one memcpy). Freed by
/// the destructor: unregister it from its pools, and let operations on it finish, first.
class SharedBuffer {
 public:
  explicit SharedBuffer(size_t len) : len_(len) {
    void* p = nullptr;
    check(dlslime_alloc_shared(len, &p));
    p_ = static_cast<uint8_t*>(p);
  }
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;
  SharedBuffer(SharedBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), len_(std::exchange(o.len_, 0)) {}
  SharedBuffer& operator=(SharedBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      len_ = std::exchange(o.len_, 0);
    }
    return *this;
  }
  ~SharedBuffer() { reset(); }
  uint8_t* data() const noexcept { return p_; }
  size_t size() const noexcept { return len_; }
  MutableSpan span() const noexcept { return MutableSpan(p_, len_); }
  operator MutableSpan() const noexcept { return span(); }  // NOLINT
  uint8_t& operator[](size_t i) const noexcept { return p_[i]; }

 private:
  void reset() noexcept {
    if (p_) dlslime_free_shared(p_);
    p_ = nullptr;
    len_ = 0;
  }
  uint8_t* p_ = nullptr;
  size_t len_ = 0;
};

class Future {
 public:
  explicit Future(dlslime_future_t* f) noexcept : h_(f) {}
  /// Waits for completion (at most the operation's deadline); throws Error if the
  /// operation failed.
  void wait() const { check(dlslime_future_wait(h_.get())); }
  /// True if the operation completed successfully within `timeout` (any
  /// std::chrono duration); false if this wait gave up first (the operation goes on);
  /// throws Error if the operation failed.
  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    dlslime_status_t st = dlslime_future_wait_for(h_.get(), detail::to_ms(timeout));
    if (st == DLSLIME_STATUS_TIMEOUT && dlslime_future_status(h_.get()) == DLSLIME_STATUS_PENDING) return false;
    check(st);
    return true;
  }
  bool done() const noexcept { return dlslime_future_done(h_.get()); }
  /// DLSLIME_STATUS_PENDING until completion, then the final status.
  dlslime_status_t status() const noexcept { return dlslime_future_status(h_.get()); }
  /// The immediate data of a completed imm_recv. Not defined for other operations (throws
  /// Error, DLSLIME_STATUS_INVALID_ARGUMENT) nor before completion (throws Error,
  /// DLSLIME_STATUS_PENDING); throws the operation's Error if it failed.
  int32_t imm_data() const {
    return detail::out<int32_t>(dlslime_future_get_imm_data, h_.get());
  }
  /// Bytes moved (recv: the message's length; read/write: the bytes of every
  /// assignment). Throws as imm_data() before completion or after a failure.
  uint64_t nbytes() const {
    return detail::out<uint64_t>(dlslime_future_get_nbytes, h_.get());
  }
  const dlslime_future_t* get() const noexcept { return h_.get(); }

 private:
  detail::Handle<dlslime_future_t, dlslime_future_free> h_;
};

/// One side of a connection, over any transport (Endpoint::tcp, Endpoint::shm,
/// Endpoint::rdma).
class Endpoint {
 public:
  using Assignments = std::vector<dlslime_assignment_t>;

  static Endpoint tcp(const TcpContext& ctx, const Pool& pool) {
    return Endpoint(detail::out<dlslime_endpoint_t*>(dlslime_tcp_endpoint_new, ctx.get(), pool.get()));
  }
  /// An RDMA endpoint with `num_qp` data QPs (1..16); binds `pool` to the context's NIC.
  static Endpoint rdma(const RdmaContext& ctx, const Pool& pool, uint32_t num_qp = 1) {
    return Endpoint(detail::out<dlslime_endpoint_t*>(dlslime_rdma_endpoint_new, ctx.get(), pool.get(), num_qp));
  }
  /// A shared-memory endpoint to a peer process on the same host.
  static Endpoint shm(const Pool& pool, const ShmOptions& o = ShmOptions()) {
    dlslime_shm_options_t c;
    dlslime_shm_options_init(&c);
    c.flags = (o.force_staged ? DLSLIME_SHM_FLAG_FORCE_STAGED : 0u) | (o.no_spin ? DLSLIME_SHM_FLAG_NO_SPIN : 0u) |
              (o.inline_progress ? DLSLIME_SHM_FLAG_INLINE_PROGRESS : 0u);
    c.spin_us = o.spin.count() > 0 ? static_cast<uint64_t>(o.spin.count()) : 0;
    c.default_timeout_ms = detail::to_ms(o.default_timeout);
    return Endpoint(detail::out<dlslime_endpoint_t*>(dlslime_shm_endpoint_new, pool.get(), &c));
  }
  /// This endpoint's endpoint_info (JSON), for the peer's connect().
  std::string info() const {
    return detail::string_out(dlslime_endpoint_info, h_.get());
  }
  void connect(const std::string& peer_info) { check(dlslime_endpoint_connect(h_.get(), peer_info.c_str())); }
  RemoteHandle register_remote(const std::string& name, const std::string& region_json) {
    return detail::out<RemoteHandle>(dlslime_endpoint_register_remote, h_.get(), name.c_str(), region_json.c_str());
  }
  RemoteHandle remote_handle(const std::string& name) const {
    return detail::out<RemoteHandle>(dlslime_endpoint_remote_handle, h_.get(), name.c_str());
  }
  /// Assignments in the DLSlime order (see dlslime::assignment).
  Future read(const Assignments& a, Timeout timeout = {}) { return op(dlslime_endpoint_read, a, timeout); }
  Future write(const Assignments& a, Timeout timeout = {}) { return op(dlslime_endpoint_write, a, timeout); }
  Future write_with_imm(const Assignments& a, int32_t imm, Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_endpoint_write_with_imm, h_.get(), a.data(), a.size(), imm, timeout.ms()));
  }
  Future imm_recv(Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_endpoint_imm_recv, h_.get(), timeout.ms()));
  }
  /// The buffer must stay valid and unmodified until the future completes.
  Future send(Span data, Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_endpoint_send, h_.get(), data.data(), data.size(), timeout.ms()));
  }
  Future send(const void* ptr, size_t len, Timeout timeout = {}) { return send(Span(ptr, len), timeout); }
  /// The buffer must stay valid and untouched until the future completes.
  Future recv(MutableSpan buf, Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_endpoint_recv, h_.get(), buf.data(), buf.size(), timeout.ms()));
  }
  Future recv(void* ptr, size_t len, Timeout timeout = {}) { return recv(MutableSpan(ptr, len), timeout); }
  /// Fails every pending operation with DLSLIME_STATUS_CANCELLED; returns how many.
  size_t cancel_all() {
    return detail::out<size_t>(dlslime_endpoint_cancel_all, h_.get());
  }
  /// Cancels pending operations and closes the endpoint. Idempotent.
  void shutdown() { check(dlslime_endpoint_shutdown(h_.get())); }
  const dlslime_endpoint_t* get() const noexcept { return h_.get(); }

 private:
  explicit Endpoint(dlslime_endpoint_t* p) noexcept : h_(p) {}
  using OpFn = dlslime_status_t (*)(const dlslime_endpoint_t*, const dlslime_assignment_t*, size_t, uint64_t,
                                    dlslime_future_t**);
  Future op(OpFn fn, const Assignments& a, Timeout timeout) {
    return Future(detail::out<dlslime_future_t*>(fn, h_.get(), a.data(), a.size(), timeout.ms()));
  }
  detail::Handle<dlslime_endpoint_t, dlslime_endpoint_free> h_;
};


/// Options of an RPC session; zero fields keep the library defaults. Both sides must use
/// the same slot_size and slot_count.
struct RpcOptions {
  uint64_t slot_size = 0;   // bytes per slot incl. the 16-byte header; 0: 64 KiB + 64
  uint32_t slot_count = 0;  // most calls in flight; 0: 16
  dlslime_rpc_progress progress = DLSLIME_RPC_PROGRESS_AUTO;
  std::chrono::milliseconds default_timeout{0};
  std::chrono::milliseconds handshake_timeout{0};
  uint64_t max_payload = 0;
  dlslime_rpc_options_t to_c() const {
    dlslime_rpc_options_t c;
    dlslime_rpc_options_init(&c);
    c.slot_size = slot_size;
    c.slot_count = slot_count;
    c.progress = progress;
    c.default_timeout_ms = detail::to_ms(default_timeout);
    c.handshake_timeout_ms = detail::to_ms(handshake_timeout);
    c.max_payload = max_payload;
    return c;
  }
};

/// Session memory, made before Endpoint::connect on shared memory (the peer maps it).
class RpcMemory {
 public:
  RpcMemory(const Pool& pool, const RpcOptions& o = RpcOptions()) {
    auto c = o.to_c();
    h_ = detail::Handle<dlslime_rpc_memory_t, dlslime_rpc_memory_free>(detail::out<dlslime_rpc_memory_t*>(dlslime_rpc_memory_new, pool.get(), &c));
  }
  const dlslime_rpc_memory_t* get() const noexcept { return h_.get(); }

 private:
  detail::Handle<dlslime_rpc_memory_t, dlslime_rpc_memory_free> h_;
};

/// The future of one call. Its reply is its own copy (the slot is freed when the reply
/// arrives; a reply larger than a slot: when read or destroyed).
class RpcCall {
 public:
  /// Waits for the reply; false if `timeout` passed first (the call stays pending).
  /// Throws on final failures (peer gone, session closed, protocol error).
  bool wait(Timeout timeout = {}) {
    dlslime_status_t st = dlslime_rpc_call_wait(h_.get(), timeout.ms());
    if (st == DLSLIME_STATUS_TIMEOUT && timeout.ms() != 0) return false;
    check(st);
    return true;
  }
  bool done() const noexcept { return dlslime_rpc_call_done(h_.get()); }
  bool is_exception() const noexcept { return dlslime_rpc_call_is_exception(h_.get()); }
  /// The reply bytes (after a successful wait); valid while this object lives.
  Span reply() const {
    const uint8_t* p = nullptr;
    size_t n = 0;
    check(dlslime_rpc_call_reply(h_.get(), &p, &n));
    return Span(p, n);
  }
  /// Waits and returns the reply as a string; throws Error(FAILED) with the remote
  /// exception's JSON if the peer answered with one.
  std::string get(Timeout timeout = {}) {
    if (!wait(timeout)) throw Error(DLSLIME_STATUS_TIMEOUT, "RPC call timed out");
    Span r = reply();
    std::string out(static_cast<const char*>(r.data()), r.size());
    if (is_exception()) throw Error(DLSLIME_STATUS_FAILED, "remote exception: " + out);
    return out;
  }

 private:
  friend class RpcSession;
  explicit RpcCall(dlslime_rpc_call_t* p) noexcept : h_(p) {}
  detail::Handle<dlslime_rpc_call_t, dlslime_rpc_call_free> h_;
};

/// A received request; destroying it unanswered sends an exception reply.
class RpcRequest {
 public:
  RpcRequest() noexcept = default;  // empty; filled by RpcSession::poll
  uint32_t tag() const noexcept { return dlslime_rpc_request_tag(h_.get()); }
  uint64_t id() const noexcept { return dlslime_rpc_request_id(h_.get()); }
  Span payload() const {
    const uint8_t* p = nullptr;
    size_t n = 0;
    check(dlslime_rpc_request_payload(h_.get(), &p, &n));
    return Span(p, n);
  }
  void reply(Span data) {
    check(dlslime_rpc_request_reply(h_.get(), static_cast<const uint8_t*>(data.data()), data.size()));
  }
  /// Answers with the first `n` bytes of the (possibly rewritten) request buffer; a bulk
  /// payload goes back without a copy.
  void reply_from_payload(size_t n) { check(dlslime_rpc_request_reply_from_payload(h_.get(), n)); }
  void reply_error(const std::string& type, const std::string& message, const std::string& traceback = "") {
    check(dlslime_rpc_request_reply_error(h_.get(), type.c_str(), message.c_str(), traceback.c_str()));
  }

 private:
  friend class RpcSession;
  explicit RpcRequest(dlslime_rpc_request_t* p) noexcept : h_(p) {}
  detail::Handle<dlslime_rpc_request_t, dlslime_rpc_request_free> h_;
};

/// One side of a SlimeRPC connection over a connected endpoint (calls and requests, in
/// both directions). The constructor blocks until the peer creates its session.
class RpcSession {
 public:
  RpcSession(const Endpoint& ep, const RpcOptions& o = RpcOptions(), const RpcMemory* mem = nullptr) {
    auto c = o.to_c();
    h_ = detail::Handle<dlslime_rpc_session_t, dlslime_rpc_session_free>(detail::out<dlslime_rpc_session_t*>(dlslime_rpc_session_new, ep.get(), mem ? mem->get() : nullptr, &c));
  }
  RpcCall call(uint32_t tag, Span payload) {
    return RpcCall(detail::out<dlslime_rpc_call_t*>(dlslime_rpc_call, h_.get(), tag, static_cast<const uint8_t*>(payload.data()), payload.size()));
  }
  /// The next request, or false if none arrived within `timeout`. Throws Error with
  /// DLSLIME_STATUS_SHUT_DOWN / DLSLIME_STATUS_PEER_DISCONNECTED when the session ended.
  bool poll(RpcRequest& out, Timeout timeout = {}) {
    dlslime_rpc_request_t* p = nullptr;
    dlslime_status_t st = dlslime_rpc_poll_request(h_.get(), timeout.ms(), &p);
    if (st == DLSLIME_STATUS_TIMEOUT) return false;
    check(st);
    out = RpcRequest(p);
    return true;
  }
  /// Names this session's calls in obs_snapshot()'s per-method rows: names[i] is method
  /// i's (the service's method names in sorted order); unnamed tags count as "tag:N".
  void set_method_names(const std::vector<std::string>& names) {
    std::vector<const char*> p;
    p.reserve(names.size());
    for (const auto& n : names) p.push_back(n.c_str());
    check(dlslime_rpc_session_set_method_names(h_.get(), p.data(), p.size()));
  }
  size_t slot_capacity() const noexcept { return dlslime_rpc_session_slot_capacity(h_.get()); }
  bool closed() const noexcept { return dlslime_rpc_session_closed(h_.get()); }
  void close() { check(dlslime_rpc_session_close(h_.get())); }

 private:
  detail::Handle<dlslime_rpc_session_t, dlslime_rpc_session_free> h_;
};

/// One named transfer for PeerAgent operations, in the original PeerAgent order:
/// `local[local_offset..]` and the peer's `remote[remote_offset..]`, `length` bytes.
/// An empty `remote` means the same name as `local`.
struct NamedAssignment {
  std::string local;
  std::string remote;
  uint64_t local_offset = 0;
  uint64_t remote_offset = 0;
  uint64_t length = 0;
};

/// Options of a PeerAgent; zero/empty fields keep the library defaults.
struct PeerOptions {
  std::string redis_url;       // empty: the address NanoCtrl hands out
  std::string advertise_host;  // empty: the local address of the route to NanoCtrl
  std::string nanoctrl_token;  // NanoCtrl's bearer token; empty: $NANOCTRL_TOKEN, else none
  std::chrono::milliseconds heartbeat_interval{0};
  std::chrono::milliseconds http_timeout{0};
  std::chrono::milliseconds default_timeout{0};
  uint32_t register_attempts = 0;
  uint32_t connect_attempts = 0;
};

/// A connection of a PeerAgent to a peer (PeerAgent::connect_to).
class PeerConnection {
 public:
  explicit PeerConnection(dlslime_peer_connection_t* c) noexcept : h_(c) {}
  /// Blocks until connected and returns the transport; throws Error (status
  /// DLSLIME_STATUS_TIMEOUT, or the connection's failure).
  dlslime_peer_transport_t wait(Timeout timeout) const {
    dlslime_peer_transport_t t = DLSLIME_PEER_TRANSPORT_NONE;
    check(dlslime_peer_connection_wait(h_.get(), timeout.ms(), &t));
    return t;
  }
  dlslime_peer_conn_state_t state() const noexcept { return dlslime_peer_connection_state(h_.get()); }
  dlslime_peer_transport_t transport() const noexcept { return dlslime_peer_connection_transport(h_.get()); }
  bool is_connected() const noexcept { return state() == DLSLIME_PEER_CONN_STATE_CONNECTED; }

 private:
  detail::Handle<dlslime_peer_connection_t, dlslime_peer_connection_free> h_;
};

/// Registers with NanoCtrl and connects to peers by alias (see dlslime_peer_agent_new).
class PeerAgent {
 public:
  explicit PeerAgent(const std::string& nanoctrl_url, const std::string& alias = "", const std::string& scope = "",
                     const PeerOptions& o = PeerOptions()) {
    dlslime_peer_options_t c;
    dlslime_peer_options_init(&c);
    c.redis_url = o.redis_url.empty() ? nullptr : o.redis_url.c_str();
    c.advertise_host = o.advertise_host.empty() ? nullptr : o.advertise_host.c_str();
    c.nanoctrl_token = o.nanoctrl_token.empty() ? nullptr : o.nanoctrl_token.c_str();
    c.heartbeat_interval_ms = detail::to_ms(o.heartbeat_interval);
    c.http_timeout_ms = detail::to_ms(o.http_timeout);
    c.default_timeout_ms = detail::to_ms(o.default_timeout);
    c.register_attempts = o.register_attempts;
    c.connect_attempts = o.connect_attempts;
    dlslime_peer_agent_t* p = nullptr;
    check(dlslime_peer_agent_new(nanoctrl_url.c_str(), alias.empty() ? nullptr : alias.c_str(),
                                 scope.empty() ? nullptr : scope.c_str(), &c, &p));
    h_ = Handle(p);
  }
  std::string alias() const {
    return detail::string_out(dlslime_peer_agent_alias, h_.get());
  }
  /// The aliases registered in this agent's scope, as a JSON array.
  std::string list_agents_json() const {
    return detail::string_out(dlslime_peer_agent_list_agents, h_.get());
  }
  /// Starts (or re-uses) the connection; does not block. transport: "" (auto), "shm", "tcp".
  PeerConnection connect_to(const std::string& peer, const std::string& transport = "") {
    dlslime_peer_connection_t* c = nullptr;
    check(dlslime_peer_agent_connect_to(h_.get(), peer.c_str(), transport.empty() ? nullptr : transport.c_str(),
                                        &c));
    return PeerConnection(c);
  }
  /// Registers [data, data + offset + length) as `name` (the region starts at `data`) and
  /// publishes it.
  MrHandle register_memory_region(const std::string& name, void* data, size_t offset, size_t length) {
    return detail::out<MrHandle>(dlslime_peer_agent_register_memory_region, h_.get(), name.c_str(), data, offset, length);
  }
  MrHandle register_memory_region(const std::string& name, MutableSpan buf) {
    return register_memory_region(name, buf.data(), 0, buf.size());
  }
  /// Returns whether the region existed.
  bool unregister_memory_region(const std::string& name) {
    return detail::out<bool>(dlslime_peer_agent_unregister_memory_region, h_.get(), name.c_str());
  }
  /// The record `peer` published for its region `name` (JSON).
  std::string get_mr_info(const std::string& peer, const std::string& name) const {
    return detail::string_out(dlslime_peer_agent_get_mr_info, h_.get(), peer.c_str(), name.c_str());
  }
  Future read(const std::string& peer, const std::vector<NamedAssignment>& a, Timeout timeout = {}) {
    return named(dlslime_peer_agent_read, peer, a, timeout);
  }
  Future write(const std::string& peer, const std::vector<NamedAssignment>& a, Timeout timeout = {}) {
    return named(dlslime_peer_agent_write, peer, a, timeout);
  }
  Future write_with_imm(const std::string& peer, const std::vector<NamedAssignment>& a, int32_t imm,
                        Timeout timeout = {}) {
    std::vector<dlslime_named_assignment_t> c = to_c(a);
    return Future(detail::out<dlslime_future_t*>(dlslime_peer_agent_write_with_imm, h_.get(), peer.c_str(), c.data(), c.size(), imm, timeout.ms()));
  }
  Future imm_recv(const std::string& peer, Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_peer_agent_imm_recv, h_.get(), peer.c_str(), timeout.ms()));
  }
  /// The buffer must stay valid and unmodified until the future completes.
  Future send(const std::string& peer, Span data, Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_peer_agent_send, h_.get(), peer.c_str(), data.data(), data.size(), timeout.ms()));
  }
  /// The buffer must stay valid and untouched until the future completes.
  Future recv(const std::string& peer, MutableSpan buf, Timeout timeout = {}) {
    return Future(detail::out<dlslime_future_t*>(dlslime_peer_agent_recv, h_.get(), peer.c_str(), buf.data(), buf.size(), timeout.ms()));
  }
  /// Pending operations fail, everything published is removed, peers are notified.
  void shutdown() { check(dlslime_peer_agent_shutdown(h_.get())); }
  const dlslime_peer_agent_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_peer_agent_t, dlslime_peer_agent_free>;
  using NamedFn = dlslime_status_t (*)(const dlslime_peer_agent_t*, const char*, const dlslime_named_assignment_t*,
                                       size_t, uint64_t, dlslime_future_t**);
  static std::vector<dlslime_named_assignment_t> to_c(const std::vector<NamedAssignment>& a) {
    std::vector<dlslime_named_assignment_t> c(a.size());
    for (size_t i = 0; i < a.size(); i++) {
      c[i].local = a[i].local.c_str();
      c[i].remote = a[i].remote.empty() ? nullptr : a[i].remote.c_str();
      c[i].local_offset = a[i].local_offset;
      c[i].remote_offset = a[i].remote_offset;
      c[i].length = a[i].length;
    }
    return c;
  }
  Future named(NamedFn fn, const std::string& peer, const std::vector<NamedAssignment>& a, Timeout timeout) {
    std::vector<dlslime_named_assignment_t> c = to_c(a);
    return Future(detail::out<dlslime_future_t*>(fn, h_.get(), peer.c_str(), c.data(), c.size(), timeout.ms()));
  }
  Handle h_;
};

// ---- Slot ring (src/ring, docs/ring.md) ----

/// A reference to one payload: slot == generation % slot_count.
using SlotRef = dlslime_slot_ref_t;

inline SlotRef slot_ref(uint32_t slot, uint64_t generation) {
  SlotRef r;
  r.slot = slot;
  r.generation = generation;
  return r;
}

struct RingOptions {
  std::string name;            ///< empty: ring-<pid>-<n>
  uint64_t slot_count = 0;     ///< 0: 64
  uint64_t slot_capacity = 0;  ///< payload bytes per slot; 0: 64 KiB
  bool overwrite = true;       ///< false: a write meeting an unconsumed slot throws SLOT_BUSY
};

/// A payload held in place (READING) until consume() (FREE), release() or destruction
/// (READY again). Move-only.
class RingView {
 public:
  RingView() noexcept = default;
  explicit RingView(dlslime_ring_view_t* v) noexcept : h_(v) {}
  Span data() const {
    const void* p = nullptr;
    size_t n = 0;
    check(dlslime_ring_view_data(h_.get(), &p, &n));
    return Span(p, n);
  }
  SlotRef ref() const noexcept { return dlslime_ring_view_ref(h_.get()); }
  /// Marks the payload consumed (the original's mark_consumed).
  void consume() { check(dlslime_ring_view_consume(h_.get())); }
  /// Gives the payload back unconsumed (the original's release_reading).
  void release() { check(dlslime_ring_view_release(h_.get())); }

 private:
  detail::Handle<dlslime_ring_view_t, dlslime_ring_view_free> h_;
};

/// A ring of fixed-size slots in shared memory (thread-safe; other processes of the
/// host map it with Ring::attach(handle)).
class Ring {
 public:
  explicit Ring(const RingOptions& o = RingOptions()) {
    dlslime_ring_options_t c;
    dlslime_ring_options_init(&c);
    c.name = o.name.empty() ? nullptr : o.name.c_str();
    c.slot_count = o.slot_count;
    c.slot_capacity = o.slot_capacity;
    c.flags = o.overwrite ? 0u : static_cast<uint32_t>(DLSLIME_RING_FLAG_NO_OVERWRITE);
    h_ = Handle(detail::out<dlslime_ring_t*>(dlslime_ring_new, &c));
  }
  /// Maps the ring whose handle() JSON another process of this host gave us.
  static Ring attach(const std::string& handle_json) {
    return Ring(detail::out<dlslime_ring_t*>(dlslime_ring_attach, handle_json.c_str()));
  }
  std::string handle() const {
    return detail::string_out(dlslime_ring_handle, h_.get());
  }
  uint64_t slot_count() const noexcept { return dlslime_ring_slot_count(h_.get()); }
  uint64_t slot_capacity() const noexcept { return dlslime_ring_slot_capacity(h_.get()); }
  uint64_t ready_count() const noexcept { return dlslime_ring_ready_count(h_.get()); }
  /// Writes into the next slot; `flags` 0 (the ring's policy) or DLSLIME_RING_FLAG_*.
  SlotRef write(Span data, uint32_t flags = 0) {
    SlotRef r;
    check(dlslime_ring_write(h_.get(), data.data(), data.size(), flags, &r));
    return r;
  }
  /// Writes the parts back to back into the next slot.
  SlotRef write(const std::vector<Span>& parts, uint32_t flags = 0) {
    std::vector<const void*> p;
    std::vector<size_t> n;
    for (const Span& s : parts) {
      p.push_back(s.data());
      n.push_back(s.size());
    }
    SlotRef r;
    check(dlslime_ring_write_parts(h_.get(), p.data(), n.data(), p.size(), flags, &r));
    return r;
  }
  /// Reads and consumes `r` into `dst`; returns its length.
  size_t read(SlotRef r, MutableSpan dst) {
    return detail::out<size_t>(dlslime_ring_read, h_.get(), r, dst.data(), dst.size());
  }
  /// Like read(), but nothing (false) when another reader holds the slot.
  bool try_read(SlotRef r, MutableSpan dst, size_t& len) {
    return detail::out<bool>(dlslime_ring_try_read, h_.get(), r, dst.data(), dst.size(), &len);
  }
  RingView read_view(SlotRef r) {
    return RingView(detail::out<dlslime_ring_view_t*>(dlslime_ring_read_view, h_.get(), r));
  }
  dlslime_slot_state slot_state(uint32_t slot) const {
    uint32_t s = 0;
    check(dlslime_ring_slot_state(h_.get(), slot, &s));
    return static_cast<dlslime_slot_state>(s);
  }
  /// References of the READY payloads, oldest first.
  std::vector<SlotRef> ready_slots() const {
    std::vector<SlotRef> v(static_cast<size_t>(slot_count()));
    size_t n = 0;
    check(dlslime_ring_ready_slots(h_.get(), v.data(), v.size(), &n));
    v.resize(n);
    return v;
  }
  dlslime_ring_metrics_t metrics() const {
    dlslime_ring_metrics_t m;
    check(dlslime_ring_metrics(h_.get(), &m));
    return m;
  }
  const dlslime_ring_t* get() const noexcept { return h_.get(); }

 private:
  using Handle = detail::Handle<dlslime_ring_t, dlslime_ring_free>;
  explicit Ring(dlslime_ring_t* p) : h_(p) {}
  Handle h_;
};

struct RingServerOptions {
  std::chrono::milliseconds max_lease{0};      ///< 0: 60 s
  std::chrono::milliseconds default_lease{0};  ///< 0: 10 s
  std::chrono::milliseconds idle_timeout{0};   ///< 0: 120 s
};

/// Serves rings over endpoints (one thread and one RPC session per endpoint).
class RingServer {
 public:
  explicit RingServer(const RingServerOptions& o = RingServerOptions()) {
    dlslime_ring_server_options_t c;
    dlslime_ring_server_options_init(&c);
    c.max_lease_ms = static_cast<uint64_t>(o.max_lease.count());
    c.default_lease_ms = static_cast<uint64_t>(o.default_lease.count());
    c.idle_timeout_ms = static_cast<uint64_t>(o.idle_timeout.count());
    h_ = Handle(detail::out<dlslime_ring_server_t*>(dlslime_ring_server_new, &c));
  }
  void add_ring(const Ring& r) { check(dlslime_ring_server_add_ring(h_.get(), r.get())); }
  /// Keep the endpoint until the server is stopped.
  void serve(const Endpoint& ep) { check(dlslime_ring_server_serve_endpoint(h_.get(), ep.get())); }
  void serve_peer(const PeerAgent& agent, const std::string& alias, const std::string& transport = "auto") {
    check(dlslime_ring_server_serve_peer(h_.get(), agent.get(), alias.c_str(), transport.c_str()));
  }
  dlslime_ring_server_counters_t counters() const {
    dlslime_ring_server_counters_t c;
    check(dlslime_ring_server_counters(h_.get(), &c));
    return c;
  }
  void stop() { check(dlslime_ring_server_stop(h_.get())); }

 private:
  using Handle = detail::Handle<dlslime_ring_server_t, dlslime_ring_server_free>;
  Handle h_;
};

/// A fetched payload in a buffer its client pools (given back on destruction).
class RingPayload {
 public:
  RingPayload() noexcept = default;
  explicit RingPayload(dlslime_ring_payload_t* p) noexcept : h_(p) {}
  const void* data() const noexcept { return dlslime_ring_payload_data(h_.get()); }
  size_t size() const noexcept { return dlslime_ring_payload_len(h_.get()); }
  Span span() const noexcept { return Span(data(), size()); }
  explicit operator bool() const noexcept { return static_cast<bool>(h_); }

 private:
  detail::Handle<dlslime_ring_payload_t, dlslime_ring_payload_free> h_;
};

struct RingClientOptions {
  std::chrono::milliseconds timeout{0};        ///< one attempt, end to end; 0: 5 s
  uint32_t max_attempts = 0;                   ///< 0: 2
  uint32_t concurrency = 0;                    ///< batch fetches at once; 0: 4
  std::chrono::milliseconds quarantine{0};     ///< 0: 30 s
  std::chrono::milliseconds max_idle{0};       ///< 0: 100 s (below the servers' idle_timeout)
  uint32_t max_rounds = 0;                     ///< 0: 3
  std::chrono::milliseconds round_backoff{0};  ///< 0: 50 ms
  std::chrono::milliseconds commit_grace{0};   ///< 0: 1 s (commit confirmed past the attempt)
};

/// Fetches payloads by (producer, slot, generation), rotating over healthy routes.
class RingClient {
 public:
  struct Item {
    dlslime_status_t status;
    RingPayload payload;
  };
  explicit RingClient(const RingClientOptions& o = RingClientOptions()) {
    dlslime_ring_client_options_t c;
    dlslime_ring_client_options_init(&c);
    c.timeout_ms = static_cast<uint64_t>(o.timeout.count());
    c.max_attempts = o.max_attempts;
    c.concurrency = o.concurrency;
    c.quarantine_ms = static_cast<uint64_t>(o.quarantine.count());
    c.max_idle_ms = static_cast<uint64_t>(o.max_idle.count());
    c.max_rounds = o.max_rounds;
    c.round_backoff_ms = static_cast<uint32_t>(o.round_backoff.count());
    c.commit_grace_ms = static_cast<uint64_t>(o.commit_grace.count());
    h_ = Handle(detail::out<dlslime_ring_client_t*>(dlslime_ring_client_new, &c));
  }
  /// Keep the endpoint while the client uses it.
  void add_endpoint(const std::string& producer, const Endpoint& ep) {
    check(dlslime_ring_client_add_endpoint(h_.get(), producer.c_str(), ep.get()));
  }
  void add_peer(const std::string& producer, const PeerAgent& agent, const std::string& alias,
                const std::string& transport = "auto") {
    check(dlslime_ring_client_add_peer(h_.get(), producer.c_str(), agent.get(), alias.c_str(), transport.c_str()));
  }
  RingPayload fetch(const std::string& producer, SlotRef r) {
    return RingPayload(detail::out<dlslime_ring_payload_t*>(dlslime_ring_client_fetch, h_.get(), producer.c_str(), r));
  }
  size_t fetch_into(const std::string& producer, SlotRef r, MutableSpan dst) {
    return detail::out<size_t>(dlslime_ring_client_fetch_into, h_.get(), producer.c_str(), r, dst.data(), dst.size());
  }
  /// One item per reference: its status, and its payload when the status is OK.
  std::vector<Item> fetch_batch(const std::string& producer, const std::vector<SlotRef>& refs) {
    std::vector<dlslime_ring_payload_t*> ps(refs.size(), nullptr);
    std::vector<int32_t> st(refs.size(), 0);
    check(dlslime_ring_client_fetch_batch(h_.get(), producer.c_str(), refs.data(), refs.size(), ps.data(),
                                          st.data()));
    std::vector<Item> out;
    out.reserve(refs.size());
    for (size_t i = 0; i < refs.size(); i++) out.push_back(Item{static_cast<dlslime_status_t>(st[i]), RingPayload(ps[i])});
    return out;
  }
  /// The true worst-case wall time of one fetch (n = 0) or of a batch of n.
  std::chrono::milliseconds worst_case(size_t n = 0) const {
    return std::chrono::milliseconds(dlslime_ring_client_worst_case_ms(h_.get(), n));
  }
  dlslime_ring_client_counters_t counters() const {
    dlslime_ring_client_counters_t c;
    check(dlslime_ring_client_counters(h_.get(), &c));
    return c;
  }
  void close() { check(dlslime_ring_client_close(h_.get())); }

 private:
  using Handle = detail::Handle<dlslime_ring_client_t, dlslime_ring_client_free>;
  Handle h_;
};

}  // namespace dlslime

#endif  // DLSLIME_HPP
