"""The published `nanoctrl` Python client (PyPI nanoctrl==0.1.0.post1) against OUR server.

Starts a real redis-server and the nanoctrl binary from this repository (NANOCTRL_BIN,
never the wheel's own bin/nanoctrl) on ephemeral loopback ports, drives every client
method, and replays the PeerAgent Redis protocol of DLSlime HEAD (stream mailbox
connect_peer/qp_ready, inbox cleanup notices, shutdown order) with redis-py.

Run: NANOCTRL_BIN=target/debug/nanoctrl python test_published_client.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import httpx
import redis

import nanoctrl
from nanoctrl import NanoCtrlClient

NANOCTRL_BIN = os.environ.get("NANOCTRL_BIN", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Stack:
    """redis-server + nanoctrl, torn down in stop() (also registered with addCleanup)."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.tmp = tempfile.mkdtemp(prefix="nanoctrl-py-")
        self.procs: list[subprocess.Popen] = []
        self.redis_port = free_port()
        self.procs.append(subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.redis_port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.r = redis.Redis(host="127.0.0.1", port=self.redis_port, decode_responses=True)
        wait_until(self._redis_up, 15, "redis-server")
        self.port = free_port()
        self.log = open(os.path.join(self.tmp, "nanoctrl.log"), "wb")
        env = {k: v for k, v in os.environ.items() if k not in ("NANOCTRL_REDIS_URL", "NANOCTRL_TOKEN")}
        env["NANOCTRL_RUST_LOG"] = "warn"
        if token:
            env["NANOCTRL_TOKEN"] = token
        self.procs.append(subprocess.Popen(
            [NANOCTRL_BIN, "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--redis-url", f"redis://127.0.0.1:{self.redis_port}"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, env=env))
        self.address = f"127.0.0.1:{self.port}"
        wait_until(self._ctrl_up, 20, "nanoctrl")

    def _redis_up(self):
        try:
            return self.r.ping()
        except redis.ConnectionError:
            return False

    def _ctrl_up(self):
        if self.procs[-1].poll() is not None:
            raise AssertionError("nanoctrl exited: " + open(self.log.name).read())
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            return httpx.get(f"http://{self.address}/", timeout=1.0, trust_env=False,
                             headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self):
        for p in reversed(self.procs):
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


class ClientLifecycle(unittest.TestCase):
    def setUp(self):
        self.s = Stack()
        self.addCleanup(self.s.stop)

    def test_the_client_is_the_published_one_and_the_server_is_ours(self):
        self.assertTrue(os.path.isabs(NANOCTRL_BIN) or os.path.exists(NANOCTRL_BIN))
        self.assertNotIn(os.path.dirname(sys.executable), os.path.abspath(NANOCTRL_BIN))
        self.assertTrue(hasattr(nanoctrl, "NanoCtrlClient"))
        from importlib.metadata import version
        self.assertEqual(version("nanoctrl"), "0.1.0.post1")

    def test_entity_lifecycle(self):
        scope = unique("py")
        c = NanoCtrlClient(self.s.address, scope)  # host:port, scheme added by the client
        c.check_connection()
        self.assertTrue(c.register("cache:0", "cache", endpoint={"host": "h", "port": 1}, metadata={"a": 1}))
        self.assertTrue(c.registered)
        info = c.get_entity_info("cache:0")
        self.assertEqual(info["kind"], "cache")
        self.assertEqual(info["endpoint"], {"host": "h", "port": 1})
        self.assertEqual(info["metadata"], {"a": 1})
        self.assertIsNone(info["resource"])
        self.assertEqual(info["id"], "cache:0")
        self.assertIsNone(c.get_entity_info("missing"))
        self.assertEqual([e["entity_id"] for e in c.list_entities()], ["cache:0"])
        self.assertEqual(c.list_entities(kind="prefill"), [])
        self.assertEqual(len(c.list_entities(entity_type=None)), 1)
        # Another scope and the unscoped view see nothing of it.
        self.assertEqual(NanoCtrlClient(self.s.address, unique("other")).list_entities(), [])
        self.assertEqual(NanoCtrlClient(f"http://{self.s.address}/").list_entities(entity_type=None), [])
        self.assertEqual(c.heartbeat(), "ok")
        self.assertEqual(self.s.r.ttl(f"{scope}:service:cache:0") > 50, True)
        self.assertTrue(c.unregister())
        self.assertEqual(c.heartbeat(), "not_found")
        self.assertIsNone(c.get_entity_info("cache:0"))
        url = c.get_redis_url()
        self.assertTrue(url.startswith("redis://") and url.endswith(f":{self.s.redis_port}"), url)

    def test_heartbeat_thread_reregisters_after_expiry(self):
        scope = unique("hb")
        c = NanoCtrlClient(self.s.address, scope)
        self.assertTrue(c.register("w1", "worker", entity_type="engine"))
        rereg = threading.Event()

        def on_not_found():
            c.register("w1", "worker", entity_type="engine")
            rereg.set()

        c.start_heartbeat(interval=0.1, on_not_found=on_not_found)
        try:
            key = f"{scope}:engine:w1"
            self.s.r.pexpire(key, 50)  # the entity expires (TTL shortened for the test)
            self.assertTrue(rereg.wait(15), "on_not_found was not called")
            wait_until(lambda: self.s.r.exists(key), 15, "re-registration")
            self.assertGreater(self.s.r.ttl(key), 50)
        finally:
            c.stop()
        self.assertFalse(self.s.r.exists(f"{scope}:engine:w1"), "stop() unregisters")

    def test_client_never_raises_on_lifecycle_methods_when_server_is_down(self):
        c = NanoCtrlClient(f"127.0.0.1:{free_port()}")
        self.assertFalse(c.register("x", "k"))
        self.assertEqual(c.heartbeat(), "error")
        self.assertEqual(c.list_entities(), [])
        with self.assertRaises(RuntimeError):
            c.check_connection()

    def test_peer_methods(self):
        scope = unique("peer")
        c = NanoCtrlClient(self.s.address, scope)
        res = {"nics": [{"name": "mlx5_0", "ports": [{"port": 1, "state": "ACTIVE", "link_type": "RoCE"}]}],
               "host": {"address": "127.0.0.1"}}
        r1 = c.register_peer(alias=None, address="127.0.0.1", resource=res, device="mlx5_0", ib_port=1, link_type="RoCE")
        self.assertEqual(r1["status"], "ok")
        self.assertEqual(r1["name"], "agent-1")
        self.assertEqual(r1["resource"], res)
        # PeerAgent splits redis_address on ':' and connects.
        host, port = r1["redis_address"].split(":")
        self.assertTrue(redis.Redis(host=host, port=int(port)).ping())
        r2 = c.register_peer(alias="bob", address="127.0.0.1")
        self.assertEqual(r2["name"], "bob")
        with self.assertRaises(httpx.HTTPStatusError) as cm:
            c.register_peer(alias="bob", address="127.0.0.1")
        self.assertEqual(cm.exception.response.status_code, 409)
        self.assertIn("already exists", cm.exception.response.json()["message"])
        self.assertEqual(c.heartbeat_peer("bob")["status"], "ok")
        self.assertEqual(c.heartbeat_peer("nobody")["status"], "not_found")
        peers = c.query_peers()
        self.assertIsInstance(peers, list)
        self.assertEqual(sorted(p["name"] for p in peers), ["agent-1", "bob"])
        a1 = next(p for p in peers if p["name"] == "agent-1")
        self.assertEqual((a1["device"], a1["ib_port"], a1["link_type"], a1["resource"]), ("mlx5_0", 1, "RoCE", res))
        self.assertEqual(c.set_desired_topology("agent-1", target_peers=["bob"], symmetric=True), {"status": "ok"})
        msgs = self.s.r.xrange(f"{scope}:stream:bob")
        self.assertEqual(msgs[0][1]["type"], "connect_peer")
        self.assertEqual(msgs[0][1]["peer"], "agent-1")
        self.assertEqual(c.cleanup_peer("agent-1"), {"status": "ok", "message": "Cleaned up agent: agent-1"})
        self.assertEqual([p["name"] for p in c.query_peers()], ["bob"])
        self.assertEqual(json.loads(self.s.r.lpop(f"{scope}:inbox:bob")), {"type": "cleanup", "peer": "agent-1"})


class TokenProtectedServer(unittest.TestCase):
    """NanoCtrl started with a token. The published client takes only an address, so it
    authenticates the way any HTTP client does with credentials in the URL
    (``http://user:<token>@host:port``: httpx sends them as Basic auth, which NanoCtrl
    accepts with the token as the password)."""

    TOKEN = "py-token-0b7e"

    def setUp(self):
        self.s = Stack(token=self.TOKEN)
        self.addCleanup(self.s.stop)

    def test_client_with_the_token_in_the_url(self):
        scope = unique("tok")
        c = NanoCtrlClient(f"http://nanoctrl:{self.TOKEN}@{self.s.address}", scope)
        c.check_connection()
        self.assertTrue(c.register("w", "worker"))
        self.assertEqual(c.heartbeat(), "ok")
        self.assertEqual([e["entity_id"] for e in c.list_entities()], ["w"])
        r = c.register_peer(alias="carol", address="127.0.0.1")
        self.assertEqual(r["name"], "carol")
        self.assertEqual(c.cleanup_peer("carol")["status"], "ok")
        self.assertTrue(c.unregister())

    def test_client_without_the_token_is_refused(self):
        scope = unique("notok")
        for address in (self.s.address, f"http://nanoctrl:wrong@{self.s.address}"):
            c = NanoCtrlClient(address, scope)
            with self.assertRaises(RuntimeError):
                c.check_connection()
            self.assertFalse(c.register("w", "worker"))  # lifecycle methods never raise
            self.assertEqual(c.heartbeat(), "error")
            self.assertIsNone(c.get_redis_url())
            with self.assertRaises(httpx.HTTPStatusError) as cm:
                c.register_peer(alias="mallory", address="127.0.0.1")
            self.assertEqual(cm.exception.response.status_code, 401)
            self.assertEqual(cm.exception.response.json()["status"], "error")
        self.assertEqual(list(self.s.r.scan_iter(match=f"{scope}:*")), [])


class MiniPeerAgent:
    """The Redis side of DLSlime HEAD's PeerAgent (spec §2.1, §2.4, §2.9), with a fake
    endpoint: qp_info is an opaque blob. Uses the published NanoCtrlClient for HTTP."""

    def __init__(self, address: str, alias: str, scope: str | None):
        self.alias = alias
        self.scope = scope
        self.prefix = f"{scope}:" if scope else ""
        self.ctrl = NanoCtrlClient(address, scope or None)
        resp = self.ctrl.register_peer(alias=alias, address="127.0.0.1", device="fake0", ib_port=1, link_type="RoCE")
        assert resp["name"] == alias
        host, port = resp["redis_address"].split(":")
        self.r = redis.Redis(host=host, port=int(port), decode_responses=True)
        self.notified: set[str] = set()
        self.connected: set[str] = set()
        self.cleanup_notices: list[dict] = []
        self.cond = threading.Condition()
        self.stop_ev = threading.Event()
        # HEAD builds the inbox key as f"{prefix}:inbox:{alias}" with no empty-scope guard.
        self.inbox = f"{scope or ''}:inbox:{alias}"
        self.r.delete(self.inbox)
        self.threads = [threading.Thread(target=self._mailbox, daemon=True),
                        threading.Thread(target=self._inbox, daemon=True)]
        for t in self.threads:
            t.start()

    def key(self, rest: str) -> str:
        return f"{self.prefix}{rest}"

    def connect_to(self, peer: str):
        assert self.ctrl.set_desired_topology(self.alias, target_peers=[peer])["status"] == "ok"

    def wait(self, peer: str, timeout: float = 15.0):
        with self.cond:
            ok = self.cond.wait_for(lambda: peer in self.connected, timeout)
        if not ok:
            raise TimeoutError(f"{self.alias}: no connection to {peer}")

    def _try_connect(self, peer: str, qp_info: str | None):
        if peer not in self.notified:
            self.r.xadd(self.key(f"stream:{peer}"), {
                "type": "qp_ready", "peer": self.alias,
                "qp_info": json.dumps({"ep": f"{self.alias}->{peer}"}),
                "conn_meta": json.dumps({"src": self.alias, "dst": peer, "qp_num": 1}),
                "timestamp": str(time.time())}, maxlen=1000, approximate=True)
            self.notified.add(peer)
        if qp_info is not None:
            assert json.loads(qp_info)["ep"] == f"{peer}->{self.alias}"
            with self.cond:
                self.connected.add(peer)
                self.cond.notify_all()

    def _mailbox(self):
        last = "0-0"  # read from the beginning: messages sent before we registered count
        while not self.stop_ev.is_set():
            try:
                res = self.r.xread({self.key(f"stream:{self.alias}"): last}, count=100, block=5)
            except redis.ConnectionError:
                time.sleep(0.1)
                continue
            for _, entries in res or []:
                for msg_id, f in entries:
                    last = msg_id
                    if f["type"] == "connect_peer":
                        self._try_connect(f["peer"], None)
                    elif f["type"] == "qp_ready":
                        self._try_connect(f["peer"], f["qp_info"])

    def _inbox(self):
        while not self.stop_ev.is_set():
            item = self.r.blpop(self.inbox, timeout=1)
            if item:
                notice = json.loads(item[1])
                with self.cond:
                    self.cleanup_notices.append(notice)
                    self.connected.discard(notice["peer"])
                    self.notified.discard(notice["peer"])
                    self.cond.notify_all()

    def shutdown(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=3)
        self.r.delete(self.key(f"stream:{self.alias}"), self.key(f"spec:topology:{self.alias}"))
        for k in self.r.scan_iter(match=self.key(f"mr:{self.alias}:*"), count=200):
            self.r.delete(k)
        self.ctrl.cleanup_peer(self.alias)


class PeerAgentProtocol(unittest.TestCase):
    def setUp(self):
        self.s = Stack()
        self.addCleanup(self.s.stop)

    def _handshake(self, scope: str | None):
        a = MiniPeerAgent(self.s.address, unique("alice"), scope)
        self.addCleanup(a.stop_ev.set)
        # (b) alice dials before bob exists: bob must find qp_ready by reading from 0-0.
        b_alias = unique("bob")
        a.connect_to(b_alias)
        wait_until(lambda: a.r.xlen(a.key(f"stream:{b_alias}")) >= 1, 15, "qp_ready for bob")
        b = MiniPeerAgent(self.s.address, b_alias, scope)
        self.addCleanup(b.stop_ev.set)
        a.wait(b.alias)
        b.wait(a.alias)
        # (a) bob dials too: a no-op, each side sent exactly one qp_ready.
        b.connect_to(a.alias)
        time.sleep(0.2)
        qp = lambda agent: [f for _, f in a.r.xrange(a.key(f"stream:{agent}")) if f["type"] == "qp_ready"]
        self.assertEqual(len(qp(a.alias)), 1)
        self.assertEqual(len(qp(b.alias)), 1)
        return a, b

    def _shutdown_both(self, a, b, scope):
        a.shutdown()
        # bob's spec names alice, so bob gets a cleanup notice on the key it listens on.
        with b.cond:
            self.assertTrue(b.cond.wait_for(lambda: b.cleanup_notices, 15), "no cleanup notice reached bob")
        self.assertEqual(b.cleanup_notices, [{"type": "cleanup", "peer": a.alias}])
        self.assertNotIn(a.alias, b.connected)
        b.shutdown()
        pattern = f"{scope}:*" if scope else "*"
        leftover = [k for k in self.s.r.scan_iter(match=pattern) if a.alias in k or b.alias in k]
        self.assertEqual(leftover, [], "no keys remain after both agents shut down")

    def test_scoped_agents_handshake_and_clean_up(self):
        scope = unique("pa")
        a, b = self._handshake(scope)
        self._shutdown_both(a, b, scope)

    def test_unscoped_agents_get_their_cleanup_notice(self):
        # Fails against the original server: it pushes to inbox:{peer} while HEAD's
        # unscoped PeerAgent listens on :inbox:{peer}.
        a, b = self._handshake(None)
        self._shutdown_both(a, b, None)


if __name__ == "__main__":
    if not NANOCTRL_BIN or not os.path.exists(NANOCTRL_BIN):
        sys.exit(f"NANOCTRL_BIN must point at this repository's nanoctrl binary (got {NANOCTRL_BIN!r})")
    NANOCTRL_BIN = os.path.abspath(NANOCTRL_BIN)
    unittest.main(verbosity=2)
