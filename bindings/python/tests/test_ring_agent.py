"""The slot ring over PeerAgent connections from Python (real NanoCtrl + redis-server on
loopback), two processes, over TCP and shared memory: the producer serves its ring to
the trainer's alias, the trainer fetches by reference through ``RingClient.add_peer``."""

import json
import os
import selectors
import subprocess
import sys
import uuid

import pytest

import dlslime
from dlslime.ring import RingClient, SlotRef, StaleSlotError

from conftest import HERE, TRANSPORTS
from test_peer_agent import nanoctrl  # noqa: F401  (the module fixture)


def pattern(n, seed):
    return bytes((i * 7 + seed) % 251 for i in range(n))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ring_by_alias(nanoctrl, transport):  # noqa: F811
    scope = "ring-" + uuid.uuid4().hex[:8]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "ring_agent_proc.py"), nanoctrl, scope, transport],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    trainer = dlslime.PeerAgent(nanoctrl, alias="trainer", scope=scope)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(60), "producer said nothing"
        refs = [SlotRef(*r) for r in json.loads(proc.stdout.readline())["refs"]]
        client = RingClient(timeout=20.0)
        client.add_peer("rollouts", trainer, "rollout", transport)
        for i, r in enumerate(refs):
            assert bytes(client.fetch("rollouts", r)) == pattern(200_000 + i, i)
        with pytest.raises(StaleSlotError):
            client.fetch("rollouts", refs[0])
        assert client.counters()["fetched"] == 4
        client.close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        trainer.shutdown()
