"""The peer process of test_original_interop.py, run by the ORIGINAL DLSlime 0.1.23
(PyPI wheel, its own virtual environment): an RDMAEndpoint (device-name form) with a
registered region "buf" filled with pattern(n, 2), serving one command per line on stdin
and answering one JSON line on stdout. Only the original's public Python API is used."""

import ctypes
import json
import sys

import dlslime

from rdma_pattern import pattern


def main():
    device, num_qp, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ep = dlslime.RDMAEndpoint(device_name=device, ib_port=1, link_type="RoCE", num_qp=num_qp)
    buf = (ctypes.c_char * size)()
    ctypes.memmove(buf, pattern(size, 2), size)
    h = ep.register_memory_region("buf", ctypes.addressof(buf), 0, size)
    out = sys.stdout

    def reply(v):
        out.write(json.dumps(v) + "\n")
        out.flush()

    reply({"version": getattr(dlslime, "__version__", "?"), "info": ep.endpoint_info()})
    remote = None
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "connect":  # connect <our endpoint_info>
            info = json.loads(rest)
            ep.connect(info)
            remote = ep.register_remote_memory_region("peer_buf", info["mr_info"]["buf"])
            reply("ok")
            continue
        args = [int(x) for x in rest.split()]
        if cmd == "check":  # check <off> <len> <seed>
            off, n, seed = args
            reply(bytes(buf[off:off + n]) == pattern(n, seed))
        elif cmd == "fill":  # fill <off> <len> <seed>
            off, n, seed = args
            ctypes.memmove(ctypes.addressof(buf) + off, pattern(n, seed), n)
            reply("ok")
        elif cmd in ("read", "write"):  # read|write <remote_off> <local_off> <len>
            op = ep.read if cmd == "read" else ep.write
            reply(op([(h, remote, args[0], args[1], args[2])]).wait())
        elif cmd == "writeimm":  # writeimm <remote_off> <local_off> <len> <imm>
            reply(ep.write_with_imm([(h, remote, args[0], args[1], args[2])], args[3]).wait())
        elif cmd == "immrecv":
            f = ep.imm_recv()
            f.wait()
            reply(f.imm_data())
        elif cmd == "exit":
            break
    ep.shutdown()


if __name__ == "__main__":
    main()
