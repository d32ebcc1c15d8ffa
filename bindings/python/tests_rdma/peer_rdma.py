"""The peer process of test_rdma.py: an RDMAEndpoint (device-name form) with a
registered region "buf" filled with pattern(n, 1), serving one command per line on stdin
and answering one JSON line on stdout."""

import json
import sys

import dlslime

from rdma_pattern import pattern


def main():
    device, num_qp, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ep = dlslime.RDMAEndpoint(device_name=device, ib_port=1, link_type="RoCE", num_qp=num_qp)
    buf = bytearray(pattern(size, 1))
    ep.register_memory_region("buf", buf)
    out = sys.stdout

    def reply(v):
        out.write(json.dumps(v) + "\n")
        out.flush()

    reply(ep.endpoint_info())
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        args = [int(x) for x in rest.split()] if cmd != "connect" else []
        if cmd == "connect":
            ep.connect(json.loads(rest))
            reply("ok")
        elif cmd == "check":  # check <off> <len> <seed>
            off, n, seed = args
            reply(bytes(buf[off:off + n]) == pattern(n, seed))
        elif cmd == "imm":  # imm <n>
            vals = []
            for _ in range(args[0]):
                f = ep.imm_recv()
                f.wait()
                vals.append(f.imm_data())
            reply(vals)
        elif cmd == "recv":  # recv <cap>: one message
            b = bytearray(args[0])
            f = ep.recv(b)
            f.wait()
            reply([f.nbytes(), bytes(b[:f.nbytes()]) == pattern(f.nbytes(), 7)])
        elif cmd == "send":  # send <len>
            ep.send(bytearray(pattern(args[0], 9))).wait()
            reply("ok")
        elif cmd == "exit":
            break
    ep.shutdown()


if __name__ == "__main__":
    main()
