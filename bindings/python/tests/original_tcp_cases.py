"""Both sides of the original TCP endpoint API tests, written as the original's users
write them (dlslime PR #99 / the 0.1.23 wheel): ctypes buffers, (ptr, offset, length)
chunks, 5-tuple assignments, integer statuses. Side "b" runs in original_tcp_peer.py,
side "a" in the test process; ``info`` is the other side's endpoint_info()."""

import ctypes

SIZE = 256


def setup(ep, name):
    """Each side: a 256-byte ctypes buffer registered as ``name``."""
    buf = ctypes.create_string_buffer(SIZE)
    h = ep.register_memory_region(name, ctypes.addressof(buf), 0, SIZE)
    assert h >= 0, h
    return buf, h


def check(cond, what):
    if not cond:
        raise RuntimeError(what)


# -- send / recv with the async_ names (PR #99) -----------------------------------------

def a_send_recv(ep, buf, h, info):
    ctypes.memmove(ctypes.addressof(buf), b"hello", 5)
    st = ep.async_send((ctypes.addressof(buf), 0, 5)).wait()
    check(st == 0, f"send: {st}")
    st = ep.async_recv((ctypes.addressof(buf), 5, 5)).wait()  # lands at offset 5
    check(st == 0, f"recv: {st}")
    check(bytes(buf[5:10]) == b"world", f"data: {bytes(buf[5:10])}")


def b_send_recv(ep, buf, h, info):
    st = ep.async_recv((ctypes.addressof(buf), 0, 5)).wait()
    check(st == 0, f"recv: {st}")
    check(bytes(buf[:5]) == b"hello", f"data: {bytes(buf[:5])}")
    ctypes.memmove(ctypes.addressof(buf), b"world", 5)
    st = ep.async_send((ctypes.addressof(buf), 0, 5), timeout_ms=10000).wait()
    check(st == 0, f"send: {st}")


# -- one-sided write and read --------------------------------------------------------

def a_write_read(ep, buf, h, info):
    h_br = ep.register_remote_memory_region("rb", info["mr_info"]["b"])
    data = b"hello_from_a"
    ctypes.memmove(ctypes.addressof(buf), data, len(data))
    st = ep.async_write([(h, h_br, 0, 0, len(data))], timeout_ms=10000).wait()
    check(st == 0, f"write: {st}")
    # b filled its bytes 100..112 with "hello_from_b" before it connected
    st = ep.async_read([(h, h_br, 100, 20, 12)]).wait()
    check(st == 0, f"read: {st}")
    check(bytes(buf[20:32]) == b"hello_from_b", f"read data: {bytes(buf[20:32])}")


def b_write_read(ep, buf, h, info):
    pass  # passive: the test checks b's buffer afterwards (see original_tcp_peer.py)


# -- the 0.1.23 wheel's names (no async_ prefix) ----------------------------------------

def a_plain_names(ep, buf, h, info):
    h_br = ep.register_remote_memory_region("rb", info["mr_info"]["b"])
    ctypes.memmove(ctypes.addressof(buf), b"0123456789", 10)
    check(ep.write([(h, h_br, 50, 0, 10)]).wait() == 0, "write")
    check(ep.read([(h, h_br, 50, 100, 10)], timeout_ms=5000).wait() == 0, "read")
    check(bytes(buf[100:110]) == b"0123456789", "read back")
    check(ep.send((ctypes.addressof(buf), 0, 10), timeout_ms=5000).wait() == 0, "send")


def b_plain_names(ep, buf, h, info):
    f = ep.recv((ctypes.addressof(buf), 200, 10))
    check(f.wait() == 0, "recv")
    check(bytes(buf[200:210]) == b"0123456789", f"recv data {bytes(buf[200:210])}")


# -- a receive that times out: wait_for returns None ---------------------------------------

def a_recv_timeout(ep, buf, h, info):
    fut = ep.async_recv((ctypes.addressof(buf), 0, 5))
    result = fut.wait_for(0.3)
    check(result is None, f"expected None, got {result}")
    # then the message comes: the same future completes
    ep.async_send((ctypes.addressof(buf), 0, 1)).wait()  # tells b to send
    check(fut.wait() == 0 and bytes(buf[:5]) == b"later", f"late data {bytes(buf[:5])}")


def b_recv_timeout(ep, buf, h, info):
    check(ep.async_recv((ctypes.addressof(buf), 0, 1)).wait() == 0, "go")
    ctypes.memmove(ctypes.addressof(buf), b"later", 5)
    check(ep.async_send((ctypes.addressof(buf), 0, 5)).wait() == 0, "send later")


# -- exact_size: a message of another length fails the receive (-1, TCP_FAILED) ---------

def a_exact_size(ep, buf, h, info):
    ctypes.memmove(ctypes.addressof(buf), b"overflow", 8)
    ep.async_send((ctypes.addressof(buf), 0, 8)).wait()  # our TCP fails it too (Truncated)
    ctypes.memmove(ctypes.addressof(buf), b"four", 4)
    check(ep.async_send((ctypes.addressof(buf), 0, 4)).wait() == 0, "exact send")


def b_exact_size(ep, buf, h, info):
    st = ep.async_recv((ctypes.addressof(buf), 0, 4), exact_size=True).wait()
    check(st == -1, f"expected TCP_FAILED(-1), got {st}")
    st = ep.async_recv((ctypes.addressof(buf), 0, 4), exact_size=True).wait()
    check(st == 0 and bytes(buf[:4]) == b"four", f"exact recv {st} {bytes(buf[:4])}")


CASES = ["send_recv", "write_read", "plain_names", "recv_timeout", "exact_size"]
