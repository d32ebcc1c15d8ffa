"""The worker half of the SlimeRPC guide's example, in its own process:

    python guide_worker.py NANOCTRL_URL SERVICE [TRANSPORT] [once N]

Creates ``PeerAgent(nanoctrl_url=..., alias="worker:0")``, connects to "driver:0" as the
guide does, prints ``ready`` and serves SERVICE (a class of guide_service.py) to it with
``serve`` until the driver goes away, or answers N calls with ``serve_once``. Prints
``served`` when done.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dlslime import PeerAgent  # noqa: E402
from dlslime.rpc import serve, serve_once  # noqa: E402

import guide_service  # noqa: E402


def main():
    url, service = sys.argv[1], sys.argv[2]
    rest = sys.argv[3:]
    kw = {}
    if rest and rest[0] != "once":
        kw["transport"] = rest.pop(0)
    worker = PeerAgent(nanoctrl_url=url, alias="worker:0")
    worker_conn = worker.connect_to("driver:0", ib_port=1, qp_num=1, **kw)
    worker_conn.wait()
    print("ready", worker_conn.transport, flush=True)
    svc = getattr(guide_service, service)()
    if rest and rest[0] == "once":
        for _ in range(int(rest[1])):
            assert serve_once(worker, svc, peer="driver:0")
    else:
        serve(worker, svc, peer="driver:0")
    print("served", flush=True)
    worker.shutdown()


if __name__ == "__main__":
    main()
