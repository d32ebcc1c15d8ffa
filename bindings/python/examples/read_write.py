"""Two-process one-sided read/write with dlslime (the DLSlime p2p example, in Python).

    python read_write.py [--transport tcp|shm]

The script starts a second copy of itself as the *target*: it registers a buffer and
publishes its endpoint_info. The *initiator* (this process) writes into the target's
buffer, reads it back at an offset, and writes with an immediate value the target
receives. The two processes swap endpoint_info as JSON lines over the child's
stdin/stdout; real deployments pass it through any channel (a file, Redis, NanoCtrl).
"""

import argparse
import json
import subprocess
import sys

import dlslime


def make_endpoint(transport, pool):
    if transport == "shm":
        return dlslime.ShmEndpoint(pool)
    return dlslime.TcpEndpoint(pool, dlslime.TcpContext(bind="127.0.0.1:0"))


def target(transport):
    pool = dlslime.MemoryPool()
    # Shared memory lets a same-host peer copy straight into it; a bytearray works too.
    buf = dlslime.alloc_shared(4096) if transport == "shm" else bytearray(4096)
    buf[0:16] = b"target's bytes!!"
    pool.register_memory_region(buf, name="buffer")
    with make_endpoint(transport, pool) as ep:
        print(json.dumps(ep.endpoint_info()), flush=True)
        ep.connect(json.loads(sys.stdin.readline()))
        imm = ep.imm_recv(timeout=30)
        imm.wait()  # the initiator's write_with_imm: its data is visible now
        print(json.dumps({"imm": imm.imm_data(), "buffer": bytes(buf[0:32]).decode()}), flush=True)
        sys.stdin.readline()  # wait for "done"


def initiator(transport):
    child = subprocess.Popen([sys.executable, __file__, "--transport", transport, "--role", "target"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pool = dlslime.MemoryPool()
    local = bytearray(4096)
    local[0:16] = b"initiator bytes!"
    h = pool.register_memory_region(local, name="buffer")
    with make_endpoint(transport, pool) as ep:
        peer_info = json.loads(child.stdout.readline())
        child.stdin.write(json.dumps(ep.endpoint_info()) + "\n")
        child.stdin.flush()
        ep.connect(peer_info)  # both sides connect
        r = ep.remote_handle("buffer")  # connect() registered the peer's regions by name

        # read: (local_handle, remote_handle, remote_offset, local_offset, length)
        ep.read([(h, r, 0, 100, 16)]).wait()
        print("read  remote[0:16]  -> local[100:116]:", bytes(local[100:116]))

        # write local[0:16] -> remote[16:32], then tell the target with an immediate value
        ep.write_with_imm([(h, r, 16, 0, 16)], imm_data=42).wait()
        seen = json.loads(child.stdout.readline())
        print("target saw imm", seen["imm"], "and buffer", repr(seen["buffer"]))

        f = ep.write([(h, r, 0, 0, 8), (h, r, 8, 100, 8)])  # one future for the list
        print("write of two assignments done:", f.wait_for(10.0), "status", f.status())
        child.stdin.write("done\n")
        child.stdin.flush()
    child.wait(timeout=30)
    return 0 if seen["imm"] == 42 and seen["buffer"][16:32] == "initiator bytes!" else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=["tcp", "shm"], default="tcp")
    ap.add_argument("--role", choices=["initiator", "target"], default="initiator")
    a = ap.parse_args()
    sys.exit(target(a.transport) if a.role == "target" else initiator(a.transport))
