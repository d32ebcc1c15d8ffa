"""The original SlimeRPC guide's example as a user writes it (two PeerAgents,
``connect_to`` both ways, ``serve`` in a daemon thread, ``proxy``, ``wait(timeout=)``,
``wait_all``, raw and in-place methods, ``serve_once``): both agents in one process,
and split over two processes, over shared memory (the default on one host) and TCP.
No prepare(), no environment variables, default settings: the documented usage.

The aliases are the guide's ("worker:0", "driver:0") and there is no scope, as in the
guide; each test shuts its agents down, so the next one registers them again."""

import os
import subprocess
import sys
import threading
import time

import pytest

from dlslime import PeerAgent
from dlslime.rpc import RemoteRpcError, RpcTimeoutError, method, proxy, serve, serve_once, wait_all

from conftest import HERE, TRANSPORTS
from guide_service import AllKinds, CalcService, InplaceService, RawEcho
from test_peer_agent import nanoctrl  # noqa: F401  (the module fixture)


def _kw(transport):
    # The guide passes no transport (shared memory on one host); TCP is asked for.
    return {} if transport == "shm" else {"transport": transport}


def _agents(url, transport):
    """The guide's "Connect PeerAgents" section, as written."""
    worker = PeerAgent(nanoctrl_url=url, alias="worker:0")
    driver = PeerAgent(nanoctrl_url=url, alias="driver:0")

    driver_conn = driver.connect_to("worker:0", ib_port=1, qp_num=1, **_kw(transport))
    worker_conn = worker.connect_to("driver:0", ib_port=1, qp_num=1, **_kw(transport))

    driver_conn.wait()
    worker_conn.wait()
    assert driver_conn.transport == transport and worker_conn.transport == transport
    return worker, driver


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guide_one_process(nanoctrl, transport):  # noqa: F811
    worker, driver = _agents(nanoctrl, transport)
    try:
        threading.Thread(
            target=serve,
            args=(worker, CalcService(), "driver:0"),
            daemon=True,
        ).start()

        calc = proxy(driver, "worker:0", CalcService)

        future = calc.add(1, 2)
        assert future.wait(timeout=30.0) == 3

        echo_future = calc.echo("hello")
        assert echo_future.wait() == "echo: hello"

        result = calc.add(1, 2).wait()
        assert result == 3

        futures = [calc.add(i, i * 10) for i in range(5)]
        results = wait_all(futures, timeout=30.0)
        assert results == [0, 11, 22, 33, 44]

        # the guide's error handling section
        try:
            calc.add(1, 2).wait(timeout=1.0)
        except RpcTimeoutError:
            pytest.fail("an answered call timed out")
        except RemoteRpcError:
            pytest.fail("add raised remotely")
    finally:
        driver.shutdown()
        worker.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guide_raw_and_inplace_one_process(nanoctrl, transport):  # noqa: F811
    """Raw, in-place and typed methods of one service, both agents in this process."""
    worker, driver = _agents(nanoctrl, transport)
    try:
        threading.Thread(target=serve, args=(worker, AllKinds(), "driver:0"), daemon=True).start()
        p = proxy(driver, "worker:0", AllKinds)
        assert p.upper(b"hello").wait() == b"HELLO"
        assert p.add(2, 3).wait(timeout=30.0) == 5

        payload = b"in place \x00\x01\x02" * 10

        def writer(send_ptr, send_cap):
            import ctypes

            ctypes.memmove(send_ptr, payload, len(payload))
            return len(payload)

        assert p.copy(writer).wait() == payload
        big = bytes(range(256)) * 1024  # 256 KiB: larger than a slot, the bulk path
        assert p.upper(big).wait() == big.upper()
    finally:
        driver.shutdown()
        worker.shutdown()


class _Worker:
    """guide_worker.py in its own process."""

    def __init__(self, url, service, transport, *extra):
        args = [sys.executable, os.path.join(HERE, "guide_worker.py"), url, service]
        if transport != "shm":
            args.append(transport)
        args += [str(x) for x in extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, bufsize=1)

    def line(self, timeout=60):
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError("the worker said nothing")
        s = self.proc.stdout.readline()
        if not s:
            raise RuntimeError(f"the worker exited ({self.proc.wait(10)})")
        return s.strip()

    def finish(self):
        try:
            assert self.line() == "served"
            assert self.proc.wait(30) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)


def _driver(url, transport):
    driver = PeerAgent(nanoctrl_url=url, alias="driver:0")
    driver_conn = driver.connect_to("worker:0", ib_port=1, qp_num=1, **_kw(transport))
    driver_conn.wait()
    assert driver_conn.transport == transport
    return driver


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guide_two_processes(nanoctrl, transport):  # noqa: F811
    w = _Worker(nanoctrl, "CalcService", transport)
    driver = _driver(nanoctrl, transport)
    try:
        assert w.line() == f"ready {transport}"
        calc = proxy(driver, "worker:0", CalcService)
        assert calc.add(1, 2).wait(timeout=30.0) == 3
        assert calc.echo("hello").wait() == "echo: hello"
        assert wait_all([calc.add(i, i * 10) for i in range(5)], timeout=30.0) == [0, 11, 22, 33, 44]
    finally:
        driver.shutdown()  # the worker's serve() returns when its peer goes
    w.finish()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("service", ["RawEcho", "InplaceService"])
def test_guide_raw_and_inplace_two_processes(nanoctrl, transport, service):  # noqa: F811
    w = _Worker(nanoctrl, service, transport)
    driver = _driver(nanoctrl, transport)
    try:
        assert w.line() == f"ready {transport}"
        if service == "RawEcho":
            raw = proxy(driver, "worker:0", RawEcho)
            response = raw.echo(b"hello").wait()
            assert response == b"HELLO"
        else:
            # the driver's stub of an in-place method may be plain raw (local choice)
            class Stub:
                @method(raw=True)
                def echo(self, data):
                    raise NotImplementedError

            p = proxy(driver, "worker:0", Stub)
            for n in (0, 1, 1000, 70_000):  # 70 KB: the bulk path
                data = os.urandom(n)
                assert p.echo(data).wait(timeout=30.0) == data
            assert isinstance(InplaceService(), InplaceService)
    finally:
        driver.shutdown()
    w.finish()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_guide_serve_once(nanoctrl, transport):  # noqa: F811
    """serve_once(worker, CalcService(), peer="driver:0"), once per call, in the
    worker's process; and in one process, from a thread."""
    w = _Worker(nanoctrl, "CalcService", transport, "once", 3)
    driver = _driver(nanoctrl, transport)
    try:
        assert w.line() == f"ready {transport}"
        calc = proxy(driver, "worker:0", CalcService)
        assert [calc.add(i, 1).wait(timeout=30.0) for i in range(3)] == [1, 2, 3]
        w.finish()
    finally:
        driver.shutdown()
        if w.proc.poll() is None:
            w.proc.kill()
    worker, driver = _agents(nanoctrl, transport)
    try:
        done = []

        def loop():
            for _ in range(2):
                done.append(serve_once(worker, CalcService(), peer="driver:0"))

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        calc = proxy(driver, "worker:0", CalcService)
        assert calc.echo("a").wait(timeout=30.0) == "echo: a"
        assert calc.add(20, 22).wait(timeout=30.0) == 42
        t.join(30)
        assert done == [True, True]
        # nobody serves now: a bounded wait times out, and may be waited again
        f = calc.add(1, 1)
        t0 = time.monotonic()
        with pytest.raises(RpcTimeoutError):
            f.wait(timeout=0.3)
        assert time.monotonic() - t0 < 5
        assert serve_once(worker, CalcService(), peer="driver:0", timeout=10)
        assert f.wait(timeout=30.0) == 2
    finally:
        driver.shutdown()
        worker.shutdown()
