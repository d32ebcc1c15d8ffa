"""Producer of the slot ring PeerAgent test: ``python ring_agent_proc.py URL SCOPE TRANSPORT``.

Creates the ring "rollouts" (before any connection, so a shared-memory peer maps it),
registers as PeerAgent "rollout", serves the ring to "trainer", writes 4 payloads and
prints ``{"refs": [[slot, gen], ...]}``; exits when stdin closes.
"""

import json
import sys

import dlslime
from dlslime.ring import RingServer, SharedRingBuffer


def pattern(n, seed):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def main():
    url, scope, transport = sys.argv[1:4]
    ring = SharedRingBuffer(max_entries=8, entry_size=1 << 20, buffer_name="rollouts")
    agent = dlslime.PeerAgent(url, alias="rollout", scope=scope)
    server = RingServer()
    server.add_ring(ring)
    server.serve_peer(agent, "trainer", transport)
    refs = [list(ring.write_raw(pattern(200_000 + i, i))) for i in range(4)]
    print(json.dumps({"refs": refs}), flush=True)
    sys.stdin.read()
    server.stop()
    agent.shutdown()


if __name__ == "__main__":
    main()
