"""PeerAgent from Python: two agents (this process and agent_peer.py) registered with a
real NanoCtrl backed by a real redis-server, both on loopback, connected over each
transport; named reads/writes, imm, send/recv, bad input, the peer killed."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

import dlslime
from conftest import HERE, Peer, TRANSPORTS

ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nanoctrl_bin():
    b = os.environ.get("DLSLIME_NANOCTRL_BIN")
    if b:
        return b
    found = sorted(glob.glob(os.path.join(ROOT, "target*", "*", "nanoctrl")), key=os.path.getmtime)
    return found[-1] if found else None


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


class Stack:
    """redis-server + ``replicas`` NanoCtrl processes on it (optionally requiring
    ``token``), on loopback; ``urls`` are the NanoCtrl URLs."""

    def __init__(self, token=None, replicas=1):
        if not dlslime.has_peer_agent():
            pytest.skip("library without PeerAgent")
        redis_bin, nbin = shutil.which("redis-server"), nanoctrl_bin()
        if not redis_bin or not nbin or not os.path.exists(nbin):
            pytest.skip("redis-server or the nanoctrl binary is missing (scripts/test-python.sh builds nanoctrl)")
        self.procs = []
        self.urls = []
        try:
            rport = free_port()
            self.procs.append(subprocess.Popen([redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                                "--appendonly", "no", "--protected-mode", "no"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

            def redis_up():
                try:
                    with socket.create_connection(("127.0.0.1", rport), timeout=0.2) as s:
                        s.sendall(b"PING\r\n")
                        return s.recv(16).startswith(b"+PONG")
                except OSError:
                    return False

            wait_until(redis_up, 10, "redis-server did not start")
            env = dict(os.environ, NANOCTRL_RUST_LOG="warn")
            env.pop("NANOCTRL_REDIS_URL", None)
            env.pop("NANOCTRL_TOKEN", None)
            if token:
                env["NANOCTRL_TOKEN"] = token
            for _ in range(replicas):
                nport = free_port()
                self.procs.append(subprocess.Popen([nbin, "server", "--host", "127.0.0.1", "--port", str(nport),
                                                    "--redis-url", f"redis://127.0.0.1:{rport}"], env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

                def nanoctrl_up():
                    try:
                        with socket.create_connection(("127.0.0.1", nport), timeout=0.2):
                            return True
                    except OSError:
                        return False

                wait_until(nanoctrl_up, 20, "nanoctrl did not start")
                self.urls.append(f"http://127.0.0.1:{nport}")
            time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def kill_replica(self, i):
        p = self.procs[1 + i]
        p.kill()
        p.wait(timeout=10)

    def stop(self):
        for p in reversed(self.procs):
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def nanoctrl():
    s = Stack()
    try:
        yield s.urls[0]
    finally:
        s.stop()


class Bob(Peer):
    def __init__(self, url, scope, env=None):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "agent_peer.py"), url, scope],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=env)
        import selectors

        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        assert self.read(30) == {"alias": "bob"}

    def connect(self, alice, transport):
        """Both sides connect (bob told to, `alice` dialling); returns alice's connection."""
        self.write({"cmd": "connect", "peer": "alice", "transport": transport})
        conn = alice.connect_to("bob", transport).wait(20)
        assert self.read(30) == {"transport": transport}
        return conn


def pattern(n, seed=0):
    return bytes((i + seed) % 251 for i in range(n))


@pytest.fixture(params=TRANSPORTS)
def pair(request, nanoctrl):
    scope = "py-" + uuid.uuid4().hex[:8]
    bob = Bob(nanoctrl, scope)
    alice = dlslime.PeerAgent(nanoctrl, alias="alice", scope=scope)
    try:
        conn = bob.connect(alice, request.param)
        assert conn.is_connected() and conn.state == "connected" and conn.transport == request.param
        yield alice, bob, request.param
    finally:
        alice.close()
        bob.close()


def test_named_read_write_imm_send_recv(pair):
    alice, bob, _ = pair
    kv = bytearray(1 << 16)
    h = alice.register_memory_region("kv", kv)
    assert isinstance(h, int)
    assert sorted(alice.list_agents()) == ["alice", "bob"]
    info = alice.get_mr_info("bob", "kv")
    assert info["length"] == 1 << 16
    # PeerAgent order: (name, local_offset, remote_offset, length)
    alice.read("bob", [("kv", 0, 100, 64)]).wait()
    assert bytes(kv[:64]) == pattern(164)[100:]
    kv[1000:1010] = b"0123456789"
    alice.write("bob", [("kv", 1000, 5, 10)]).wait()
    assert bytes.fromhex(bob.call("dump", off=5, len=10)["hex"]) == b"0123456789"
    bob.write({"cmd": "imm", "peer": "alice"})
    alice.write_with_imm("bob", [("kv", "kv", 1000, 20, 4)], imm_data=77).wait()  # 5-tuple form
    assert bob.read() == {"imm": 77}
    assert bytes.fromhex(bob.call("dump", off=20, len=4)["hex"]) == b"0123"
    bob.write({"cmd": "recv", "peer": "alice", "len": 32})
    alice.send("bob", b"hello bob").wait()
    assert bob.read() == {"hex": b"hello bob".hex()}
    assert alice.unregister_memory_region("kv") is True
    assert alice.unregister_memory_region("kv") is False


def test_bad_input(pair):
    alice, bob, _ = pair
    alice.register_memory_region("mine", bytearray(64))
    with pytest.raises(TypeError):
        alice.read("bob", [("mine", "x", 0, 8)])
    with pytest.raises(TypeError):
        alice.read("bob", [("mine", 0, 8)])
    with pytest.raises(ValueError):
        alice.read("bob", [("mine", -1, 0, 8)])
    with pytest.raises(dlslime.UnknownHandle):
        alice.read("bob", [("no-such-region", 0, 0, 8)]).wait()
    with pytest.raises(dlslime.DLSlimeError):  # remote region unknown: refused or failed
        alice.read("bob", [("mine", "no-such-remote", 0, 0, 8)]).wait()
    with pytest.raises((dlslime.OutOfRange, dlslime.RemoteAccess)):
        alice.read("bob", [("mine", "kv", 60, 0, 8)]).wait()  # past the local region
    with pytest.raises(TypeError):
        alice.register_memory_region("ro", b"read-only")
    with pytest.raises(TypeError):
        alice.connect_to("")
    with pytest.raises(dlslime.InvalidArgument):
        alice.connect_to("alice")  # own alias
    with pytest.raises(dlslime.DLSlimeError):
        alice.connect_to("bob", "carrier-pigeon")
    with pytest.raises(dlslime.UnknownHandle):
        alice.get_mr_info("bob", "nope")


def test_duplicate_alias_is_refused(nanoctrl):
    scope = "py-" + uuid.uuid4().hex[:8]
    with dlslime.PeerAgent(nanoctrl, alias="carol", scope=scope) as a:
        assert a.alias == "carol"
        with pytest.raises(dlslime.NameConflict):
            dlslime.PeerAgent(nanoctrl, alias="carol", scope=scope)


def test_peer_killed(pair):
    alice, bob, _ = pair
    f = alice.imm_recv("bob", timeout=60)
    t = time.monotonic()
    bob.kill()
    with pytest.raises((dlslime.PeerDisconnected, dlslime.Cancelled)):
        f.wait()
    assert time.monotonic() - t < 15


TOKEN = "py-agent-token-31c8"


@pytest.fixture(scope="module")
def nanoctrl_with_token():
    s = Stack(token=TOKEN)
    try:
        yield s.urls[0]
    finally:
        s.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cpp_agent_talks_to_python_agent(nanoctrl_with_token, transport, tmp_path):
    """The C++ wrapper's PeerAgent (ffi-tests/cpp_peer_agent.cpp, -Wall -Wextra -Werror)
    against this Python agent, through the package's bundled libdlslime; NanoCtrl
    requires a token, which the C++ agent gets as ``PeerOptions::nanoctrl_token`` (not
    from the environment)."""
    nanoctrl = nanoctrl_with_token
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if not cxx:
        pytest.skip("no C++ compiler")
    libdir = os.path.dirname(dlslime.__file__)
    exe = tmp_path / "cpp_peer_agent"
    subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "include"),
                    "-I", os.path.join(ROOT, "bindings", "cpp", "include"),
                    os.path.join(ROOT, "ffi-tests", "cpp_peer_agent.cpp"), "-o", str(exe),
                    os.path.join(libdir, "libdlslime.so"), f"-Wl,-rpath,{libdir}"], check=True)
    scope = "py-" + uuid.uuid4().hex[:8]
    with dlslime.PeerAgent(nanoctrl, alias="alice", scope=scope, token=TOKEN) as alice:
        kv = bytearray(b"python's region!" + bytes(4080))
        alice.register_memory_region("kv", kv)
        msg = bytearray(64)
        env = {k: v for k, v in os.environ.items() if k != "NANOCTRL_TOKEN"}
        child = subprocess.Popen([str(exe), nanoctrl, scope, transport, TOKEN], stdout=subprocess.PIPE, text=True,
                                 env=env)
        try:
            conn = alice.connect_to("carol", transport).wait(20)
            assert conn.transport == transport
            # carol may be ahead: notifications and messages wait for these receives
            imm = alice.imm_recv("carol", timeout=30)
            r = alice.recv("carol", msg, timeout=30)
            imm.wait()
            assert imm.imm_data() == 5
            assert bytes(kv[32:40]) == bytes(i % 251 for i in range(8))  # carol's kv[0:8]
            r.wait()
            assert bytes(msg[: r.nbytes()]) == b"hello from C++"
            out, _ = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, out
        lines = out.splitlines()
        assert lines[1] == "read python's region!", lines
        assert lines[2:4] == ["wrote", "sent"] and lines[4] == "error 102", lines


def test_original_agent_api(pair):
    """The original 0.1.23 PeerAgent API: get_connections in its shape
    ({peer: {conn_id: PeerConnection}}), query_connection, get_handle (local and the
    peer's), get_resource, list_agents, list_mem_keys, unregister_memory_region."""
    alice, bob, transport = pair
    conns = alice.get_connections()
    assert list(conns) == ["bob"]
    ((cid, c),) = conns["bob"].items()
    assert c.conn_id == cid and c.peer_alias == "bob"
    assert c.is_connected() and c.state == "connected"
    assert c.transport == transport and c.local_nic == transport and c.remote_nic == transport
    assert alice.query_connection("bob") is c
    assert alice.query_connection("bob", local_nic=transport, remote_nic=transport) is c
    assert alice.query_connection("bob", local_nic="mlx5_0") is None
    assert alice.query_connection("nobody") is None
    mine = bytearray(4096)
    h = alice.register_memory_region("mine", mine)
    assert alice.get_handle("mine") == h
    r = alice.get_handle("kv", "bob")  # bob's region, on the connection's endpoint
    assert isinstance(r, int) and alice.get_handle("kv", peer_alias="bob") == r
    with pytest.raises(dlslime.UnknownHandle):
        alice.get_handle("nope", "bob")
    with pytest.raises(dlslime.UnknownHandle):
        alice.get_handle("nope")
    assert alice.list_mem_keys() == ["mine"]
    assert alice.list_mem_keys("bob") == ["kv"]
    me = alice.get_resource()
    assert me["schema_version"] == 1 and me["host"]["pid"] == os.getpid() and me["memory_keys"] == ["mine"]
    theirs = alice.get_resource("bob")
    assert theirs["schema_version"] == 1 and theirs["host"]["pid"] != os.getpid()
    with pytest.raises(dlslime.UnknownHandle):
        alice.get_resource("nobody")
    assert alice.list_agents() == ["alice", "bob"]
    assert alice.unregister_memory_region("mine") is True
    assert alice.list_mem_keys() == []
    assert alice.unregister_memory_region("mine") is False


def test_device_memory_calls_of_the_original_are_typed(nanoctrl):
    """allocate_memory_region and register_dmabuf_memory_region (0.1.23): without a CUDA
    driver both raise DeviceUnavailable naming what is missing and register nothing;
    bad arguments are refused first. With a driver (make test-gpu machines) a "cuda"
    allocation registers a device region; "cuda_fabric" is Unsupported."""
    scope = "py-" + uuid.uuid4().hex[:8]
    with dlslime.PeerAgent(nanoctrl, alias="gpu-agent", scope=scope) as a:
        with pytest.raises(ValueError):
            a.allocate_memory_region("x", 4096, local_device="tpu:0")
        with pytest.raises(dlslime.InvalidArgument):
            a.allocate_memory_region("x", 4096, memory_kind="host")
        with pytest.raises(TypeError):
            a.register_dmabuf_memory_region("d", "fd", 0, 4096, 0x7F00_0000_0000)
        if dlslime.cuda_available():
            h, ptr = a.allocate_memory_region("kv", 1 << 20, local_device="cuda:0")
            assert a.get_handle("kv") == h and ptr != 0
            assert a.list_mem_keys() == ["kv"]
            with pytest.raises(dlslime.Unsupported):
                a.allocate_memory_region("fab", 1 << 20, memory_kind="cuda_fabric")
            return
        for call in (lambda: a.allocate_memory_region("kv", 1 << 20),
                     lambda: a.allocate_memory_region("kv", 1 << 20, memory_kind="cuda_fabric"),
                     lambda: a.register_dmabuf_memory_region("d", 3, 0, 4096, 0x7F00_0000_0000)):
            with pytest.raises(dlslime.DeviceUnavailable) as e:
                call()
            assert "libcuda" in str(e.value) or "DISABLE" in str(e.value), str(e.value)
        assert a.list_mem_keys() == []


def test_passive_connection_and_wait_errors(nanoctrl):
    """A connection the peer started is in get_connections too; conn.transport names
    the transport after wait(); a timeout says how long it really waited; the 0.1.23
    spelling ctrl_url= works."""
    scope = "py-" + uuid.uuid4().hex[:8]
    with dlslime.PeerAgent(ctrl_url=nanoctrl, alias="carol", scope=scope) as carol, \
            dlslime.PeerAgent(nanoctrl, alias="dave", scope=scope) as dave:
        c = dave.connect_to("carol").wait(30)  # carol never calls connect_to
        assert c.transport == ("shm" if dlslime.has_shm() else "tcp")
        wait_until(lambda: carol.get_connections().get("dave"), 20, "carol sees dave")
        ((_, back),) = carol.get_connections()["dave"].items()
        wait_until(back.is_connected, 20, "carol's side connected")
        assert back.transport == c.transport
        t = time.monotonic()
        with pytest.raises(dlslime.Timeout) as ei:
            dave.connect_to("nobody").wait(timeout=1.5)
        waited = time.monotonic() - t
        assert 1.4 <= waited < 10
        assert "after 1.5 s" in str(ei.value) and "nobody" in str(ei.value), str(ei.value)
        assert isinstance(ei.value, TimeoutError)


def test_token_and_nanoctrl_replicas():
    """NanoCtrl requires a token: Python takes it as ``token=`` (bob, another process,
    from ``NANOCTRL_TOKEN``); agents take a list of NanoCtrl replicas (a list, or a
    comma-separated string) and keep working when the first one is killed."""
    s = Stack(token=TOKEN, replicas=2)
    try:
        scope = "py-" + uuid.uuid4().hex[:8]
        with pytest.raises(dlslime.PermissionDenied):
            dlslime.PeerAgent(s.urls, alias="mallory", scope=scope)
        with pytest.raises(TypeError):
            dlslime.PeerAgent([], alias="x", scope=scope, token=TOKEN)
        with pytest.raises(TypeError):
            dlslime.PeerAgent([s.urls[0], 7], alias="x", scope=scope, token=TOKEN)
        with pytest.raises(TypeError):
            dlslime.PeerAgent(s.urls, alias="x", scope=scope, token=7)
        bob = Bob(",".join(s.urls), scope, env=dict(os.environ, NANOCTRL_TOKEN=TOKEN))
        alice = dlslime.PeerAgent(s.urls, alias="alice", scope=scope, token=TOKEN)
        try:
            bob.connect(alice, "tcp")
            kv = bytearray(1 << 16)
            alice.register_memory_region("kv", kv)
            alice.read("bob", [("kv", 0, 0, 4096)]).wait()
            assert bytes(kv[:4096]) == pattern(4096)
            s.kill_replica(0)
            # transfers do not need NanoCtrl; a newcomer registers through the other replica
            kv[:16] = b"after the kill!!"
            alice.write("bob", [("kv", 0, 0, 16)]).wait()
            assert bytes.fromhex(bob.call("dump", off=0, len=16)["hex"]) == b"after the kill!!"
            with dlslime.PeerAgent(s.urls, alias="carol", scope=scope, token=TOKEN) as carol:
                assert sorted(carol.list_agents()) == ["alice", "bob", "carol"]
                mine = bytearray(64)
                carol.register_memory_region("kv", mine)
                carol.connect_to("bob", "tcp").wait(20)
                carol.read("bob", [("kv", 0, 0, 16)]).wait()
                assert bytes(mine[:16]) == b"after the kill!!"
        finally:
            alice.close()
            bob.close()
    finally:
        s.stop()
