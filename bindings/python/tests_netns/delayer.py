"""Delays every packet of an NFQUEUE queue by a fixed time: ``tc netem delay`` for
kernels without the netem qdisc. Run inside the router namespace of the multi-host
tests, with an iptables rule sending the packets to queue QUEUE:

    python delayer.py QUEUE DELAY_MS

Single-threaded: packets are retained as they arrive and accepted, in order, once they
are DELAY_MS old. Prints ``ready`` once bound; exits on SIGTERM or when stdin closes.
"""

import collections
import os
import select
import sys
import time

from netfilterqueue import NetfilterQueue


def main():
    queue, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
    held = collections.deque()  # (due, packet), in arrival order (one delay for all)

    def hold(pkt):
        pkt.retain()
        held.append((time.monotonic() + delay, pkt))

    nfq = NetfilterQueue()
    nfq.bind(queue, hold, max_len=65536)
    fd = nfq.get_fd()
    print("ready", flush=True)
    try:
        while True:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
            r, _, _ = select.select([fd, sys.stdin], [], [], timeout)
            if sys.stdin in r and not os.read(sys.stdin.fileno(), 1):
                return
            if fd in r:
                nfq.run(block=False)
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
    finally:
        for _, pkt in held:
            pkt.accept()
        nfq.unbind()


if __name__ == "__main__":
    main()
