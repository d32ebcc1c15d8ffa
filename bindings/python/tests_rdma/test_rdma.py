"""The Python RDMA API on a real verbs device (soft-RoCE in the VM: `make test-rdma` runs
this with the package's virtual environment inside scripts/rdma-vm-test.sh). Two
processes per test: this one and peer_rdma.py. `DLSLIME_TEST_RDMA_DEVICES=a,b` picks the
devices of (this process, the peer)."""

import json
import os
import selectors
import subprocess
import sys
import time

import pytest

import dlslime

from rdma_pattern import pattern

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20


def devices():
    nics = dlslime.available_nic()
    want = os.environ.get("DLSLIME_TEST_RDMA_DEVICES")
    if want:
        a, _, b = want.partition(",")
        return a, (b or a)
    if not nics:
        if os.environ.get("CI") == "true":
            pytest.fail("NOT RUN under CI: no RDMA device")
        pytest.skip("NOT RUN: no RDMA device (make test-rdma runs this in the soft-RoCE VM)")
    return nics[0], nics[0]


class Peer:
    def __init__(self, device, num_qp, size):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "peer_rdma.py"), device,
                                      str(num_qp), str(size)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def read(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sel.select(deadline - time.monotonic()):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"peer exited ({self.proc.wait()})")
                return json.loads(line)
        raise TimeoutError("peer did not answer")

    def call(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
        assert self.proc.wait() == 0


def test_devices_and_contexts():
    mine, _ = devices()
    assert mine in dlslime.available_nic()
    assert dlslime._BUILD_RDMA
    ctx = dlslime.RDMAContext()
    assert ctx.init(mine, 1, "RoCE") == 0
    assert ctx.device_name == mine
    with pytest.raises(dlslime.AlreadyConnected):
        ctx.init(mine, 1, "RoCE")
    pool = dlslime.RDMAMemoryPool(ctx)
    buf = bytearray(4096)
    h = pool.register_memory_region(buf, name="kv")
    info = pool.mr_info()["kv"]
    assert info["handle"] == h and info["length"] == 4096 and info["rkey"] != 0
    with pytest.raises(dlslime.RdmaUnavailable) as e:
        dlslime.RDMAContext("no_such_nic", 1, "RoCE")
    assert "no_such_nic" in str(e.value)
    with pytest.raises(dlslime.InvalidArgument):
        dlslime.RDMAContext(mine, 1, "IB")  # rxe ports are Ethernet
    with pytest.raises(dlslime.InvalidArgument):
        dlslime.RDMAEndpoint(ctx, num_qp=17)
    # the three constructor forms
    for ep in (dlslime.RDMAEndpoint(pool, num_qp=2), dlslime.RDMAEndpoint(ctx),
               dlslime.RDMAEndpoint(device_name=mine, ib_port=1, link_type="RoCE", num_qp=4)):
        info = ep.endpoint_info()
        assert info["transport"] == "rdma"
        assert len(info["io_info"]["data_channel_info"]) == ep.num_qp
        ep.shutdown()
    assert dlslime.RDMAEndpoint(pool).get_pool() is pool


@pytest.mark.parametrize("num_qp", [1, 4])
def test_every_opcode_between_two_processes(num_qp):
    mine, theirs = devices()
    peer = Peer(theirs, num_qp, 2 * MIB)
    try:
        info = peer.read()
        ep = dlslime.RDMAEndpoint(device_name=mine, ib_port=1, link_type="RoCE", num_qp=num_qp)
        buf = bytearray(2 * MIB)
        h = ep.register_memory_region("local", buf)
        ep.connect(info)
        assert peer.call("connect " + json.dumps(ep.endpoint_info())) == "ok"
        r = ep.remote_handle("buf")
        # the original's offset order: read([(h, hr, 0, 8, 8)]) -> local[8:16] = remote[0:8]
        assert ep.read([(h, r, 0, 8, 8)]).wait() == 0
        assert bytes(buf[8:16]) == pattern(8, 1)
        # a striped read and write (every QP carries a part)
        assert ep.read([(h, r, 0, 0, MIB)]).wait() == 0
        assert bytes(buf[:MIB]) == pattern(MIB, 1)
        buf[:MIB] = pattern(MIB, 5)
        ep.write([(h, r, 1000, 0, MIB)]).wait()
        assert peer.call(f"check 1000 {MIB} 5") is True
        # several assignments, one immediate after all the data
        buf[:300] = pattern(300, 6)
        ep.write_with_imm([(h, r, 0, 0, 100), (h, r, 100, 100, 200)], 1234).wait()
        assert peer.call("imm 1") == [1234]
        assert peer.call("check 0 300 6") is True
        # send/recv both ways, eager and rendezvous
        for n in (100, 300_000):
            f = ep.send(bytearray(pattern(n, 7)))
            assert peer.call(f"recv {MIB}") == [n, True]
            f.wait()
            inbox = bytearray(MIB)
            g = ep.recv(inbox)
            assert peer.call(f"send {n}") == "ok"
            g.wait()
            assert g.nbytes() == n and bytes(inbox[:n]) == pattern(n, 9)
        ep.shutdown()
        ep.shutdown()
    finally:
        peer.close()


def test_soft_rnr_monitor_counts_the_rnr_naks_of_a_stalled_receiver():
    """The original's SoftRnrMonitor on the device's real counters: with the peer
    process stopped, its receive window for immediate data (128 per QP) runs out and its
    NIC answers further writes with RNR NAKs, which the monitor sees; once the peer runs
    again every write completes and every immediate arrives once, in order."""
    import signal

    from dlslime.rpc import SoftRnrMonitor, read_rnr_counter

    mine, theirs = devices()
    mon = SoftRnrMonitor(sorted({mine, theirs}))
    for key, name in mon.counters.items():
        dev, _, port = key.partition(":")
        assert read_rnr_counter(dev, int(port), name) >= 0, f"{key}: {name} is not readable"
    peer = Peer(theirs, 1, 4096)
    try:
        info = peer.read()
        ep = dlslime.RDMAEndpoint(device_name=mine, ib_port=1, link_type="RoCE", num_qp=1)
        buf = bytearray(4096)
        h = ep.register_memory_region("local", buf)
        ep.connect(info)
        assert peer.call("connect " + json.dumps(ep.endpoint_info())) == "ok"
        r = ep.remote_handle("buf")
        n = 160
        peer.proc.send_signal(signal.SIGSTOP)
        try:
            mon.snapshot()
            futures = [ep.write_with_imm([(h, r, 0, 0, 8)], i) for i in range(n)]
            deadline = time.monotonic() + 20
            while mon.total_delta() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            seen = mon.delta()
        finally:
            peer.proc.send_signal(signal.SIGCONT)
        for f in futures:
            assert f.wait() == 0
        assert peer.call(f"imm {n}") == list(range(n))
        assert sum(seen.values()) > 0, f"no RNR counted: {seen} ({mon.counters})"
        ep.shutdown()
    finally:
        peer.close()
