"""Observability from Python and the cluster view: ``dlslime.obs_snapshot()`` counts a
known PeerAgent workload exactly; NanoCtrl's ``/metrics`` (behind its token) parses with
``prometheus_client``'s real parser and shows the same numbers; ``nanoctrl obs --once``
prints them; a SIGKILLed agent's entry expires with its TTL."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

import dlslime
from test_peer_agent import TOKEN, Bob, nanoctrl_bin, nanoctrl_with_token, wait_until  # noqa: F401

prom_parser = pytest.importorskip("prometheus_client.parser")

TTL_MS = 1500


@pytest.fixture
def stack(nanoctrl_with_token):
    return nanoctrl_with_token


def get(url, path, token=TOKEN):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def agents(url, scope):
    return {a["peer_id"]: a for a in json.loads(get(url, f"/obs?scope={scope}")[2])["agents"]}


@pytest.fixture
def env_obs(monkeypatch):
    monkeypatch.setenv("NANOCTRL_TOKEN", TOKEN)
    monkeypatch.setenv("DLSLIME_OBS_TIME_STEP_MS", "200")
    monkeypatch.setenv("DLSLIME_OBS_TTL_MS", str(TTL_MS))
    was = dlslime.obs_enabled()
    dlslime.obs_set_enabled(True)
    yield dict(os.environ, DLSLIME_OBS="1")
    dlslime.obs_set_enabled(was)


def samples(text, name, **labels):
    out = []
    for fam in prom_parser.text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(s)
    return out


def test_snapshot_metrics_and_table(stack, env_obs):
    scope = "obs-" + uuid.uuid4().hex[:8]
    bob = Bob(stack, scope, env=env_obs)
    alice = dlslime.PeerAgent(stack, alias="alice", scope=scope)
    try:
        bob.connect(alice, "tcp")
        kv = bytearray(1 << 16)
        alice.register_memory_region("kv", kv)
        for i in range(10):
            alice.write("bob", [("kv", 0, 1000 * i, 1000)]).wait()

        snap = dlslime.obs_snapshot()
        assert snap["enabled"] is True and snap["schema_version"] == 1
        row = [p for p in snap["peers"] if p["peer"] == "bob"][0]
        w = row["ops"]["write"]
        assert (w["submitted"], w["completed"], w["completed_bytes"], w["failed"]) == (10, 10, 10000, 0)
        assert w["latency_ns"]["count"] == 10 and w["latency_ns"]["p50"] > 0
        assert snap["summary"]["pending_by_op"]["write"] == 0

        def published():
            a = agents(stack, scope).get("alice")
            return a is not None and any(
                p["peer"] == "bob" and p["ops"].get("write", {}).get("completed") == 10 for p in a["peers"])

        wait_until(published, 15, "alice's snapshot with 10 writes never reached NanoCtrl")

        with pytest.raises(urllib.error.HTTPError) as e:
            get(stack, "/metrics", token=None)
        assert e.value.code == 401
        status, ctype, text = get(stack, f"/metrics?scope={scope}")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        lab = dict(scope=scope, alias="alice", peer="bob", op="write")
        assert [s.value for s in samples(text, "dlslime_ops_completed_total", **lab)] == [10]
        assert [s.value for s in samples(text, "dlslime_bytes_completed_total", **lab)] == [10000]
        assert [s.value for s in samples(text, "dlslime_op_latency_seconds_count", **lab)] == [10]
        inf = samples(text, "dlslime_op_latency_seconds_bucket", le="+Inf", **lab)
        assert [s.value for s in inf] == [10]
        buckets = sorted((float(s.labels["le"]), s.value)
                         for s in samples(text, "dlslime_op_latency_seconds_bucket", **lab))
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))  # cumulative
        up = samples(text, "dlslime_agent_up", scope=scope)
        assert sorted((s.labels["alias"], s.value) for s in up) == [("alice", 1.0), ("bob", 1.0)]

        out = subprocess.run([nanoctrl_bin(), "obs", "--once", "--address", stack, "--scope", scope],
                             env=env_obs, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "agents: 2"
        assert any("alice" in l and "alive" in l for l in lines)
        assert any(" bob " in l and "write" in l and " 10 " in l for l in lines), out.stdout
    finally:
        alice.close()
        bob.close()


def test_dead_agent_entry_expires(stack, env_obs):
    scope = "obs-" + uuid.uuid4().hex[:8]
    bob = Bob(stack, scope, env=env_obs)
    try:
        wait_until(lambda: "bob" in agents(stack, scope), 15, "bob never published a snapshot")
        assert agents(stack, scope)["bob"]["status"] == "alive"
        bob.kill()
        t = time.monotonic()
        wait_until(lambda: "bob" not in agents(stack, scope), TTL_MS / 1000 + 10,
                   "a dead agent's snapshot did not expire")
        assert time.monotonic() - t >= (TTL_MS / 1000) * 0.5  # it expired, nobody deleted it at once
        text = get(stack, f"/metrics?scope={scope}")[2]
        assert samples(text, "dlslime_agent_up", scope=scope, alias="bob") == []
    finally:
        bob.close()
