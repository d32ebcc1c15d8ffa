"""Fixtures: a peer process (tests/peer.py) connected over each available transport.

Under ``CI=true`` a test that skips (Redis or NanoCtrl missing, no C++ compiler, no
numpy, ...) FAILS as NOT RUN with its reason, as the C tests do: in CI every test must
run. Elsewhere a skip stays a skip, and the summary still lists it as NOT RUN.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

import dlslime

HERE = os.path.dirname(os.path.abspath(__file__))
# CI (GitHub Actions and .ci/run set CI=true): a test that cannot run is a failure.
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
_NOT_RUN = []  # (nodeid, reason) of every skipped test, for the summary
TRANSPORTS = ["tcp", "shm"] if dlslime.has_shm() else ["tcp"]
REGION = 1 << 20


def pattern(n, seed=0):
    return bytes((i + seed) % 251 for i in range(n))


class JsonChild:
    """A child process that talks JSON lines over its stdin/stdout; ``call`` sends a
    command and waits (bounded) for its JSON reply; ``close`` sends ``quit``."""

    timeout = 20.0  # a subclass that makes its own process keeps this default

    def __init__(self, args, timeout=20.0):
        self.timeout = timeout
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def read(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("peer did not answer in time")
            if self.sel.select(left):
                line = self.proc.stdout.readline()
                if not line:
                    raise EOFError(f"peer exited (status {self.proc.poll()})")
                return json.loads(line)

    def write(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def call(self, cmd, timeout=None, **kw):
        self.write(dict(cmd=cmd, **kw))
        return self.read(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=10)
                self.proc.wait(timeout=10)
            except Exception:
                pass
        self.kill()
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass


class Peer(JsonChild):
    """A child process running peer.py."""

    def __init__(self, transport, region=REGION, shared=False):
        args = [sys.executable, os.path.join(HERE, "peer.py"), transport, str(region)]
        if shared:
            args.append("shared")
        super().__init__(args)


def make_endpoint(transport, pool):
    if transport == "tcp":
        return dlslime.TcpEndpoint(pool, dlslime.TcpContext(bind="127.0.0.1:0"))
    return dlslime.ShmEndpoint(pool)


class Rig:
    """The initiator side: an endpoint with a local buffer "local" connected to a peer
    that registered a REGION-byte "buf"."""

    def __init__(self, transport, local=None, shared_peer=False):
        self.transport = transport
        self.peer = Peer(transport, shared=shared_peer)
        info = self.peer.read()["info"]
        self.pool = dlslime.MemoryPool()
        self.buf = bytearray(REGION) if local is None else local
        self.local = self.pool.register_memory_region(self.buf, name="local")
        self.ep = make_endpoint(transport, self.pool)
        # Both sides connect at once (the shared-memory handshake waits for the peer).
        self.peer.write(self.ep.endpoint_info())
        self.ep.connect(info)
        assert self.peer.read() == {"ok": True}
        self.remote = self.ep.remote_handle("buf")

    def close(self):
        self.ep.close()
        self.peer.close()


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture
def rig(transport):
    r = Rig(transport)
    yield r
    r.close()


def _skip_reason(rep):
    if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        reason = str(rep.longrepr[2])
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return str(rep.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Records every skip as NOT RUN; under CI=true turns it into a failure."""
    rep = (yield).get_result()
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep)
    _NOT_RUN.append((rep.nodeid, reason))
    if IN_CI:
        rep.outcome = "failed"
        rep.longrepr = f"NOT RUN under CI=true: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at collection is NOT RUN too."""
    rep = (yield).get_result()
    if rep.skipped:
        reason = _skip_reason(rep)
        _NOT_RUN.append((rep.nodeid, reason))
        if IN_CI:
            rep.outcome = "failed"
            rep.longrepr = f"NOT RUN under CI=true: {reason}"


def pytest_terminal_summary(terminalreporter):
    if _NOT_RUN:
        verdict = "failed (CI=true)" if IN_CI else "skipped (set CI=true to fail them)"
        terminalreporter.section(f"NOT RUN: {len(_NOT_RUN)} test(s), {verdict}")
        for nodeid, reason in _NOT_RUN:
            terminalreporter.write_line(f"NOT RUN  {nodeid} ({reason})")
