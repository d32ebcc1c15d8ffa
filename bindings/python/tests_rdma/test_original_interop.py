"""Interoperation with the original DLSlime 0.1.23 (PyPI) on a real verbs device
(soft-RoCE in the VM): an original RDMAEndpoint in its own process and virtual
environment (DLSLIME_ORIGINAL_PYTHON, set up by scripts/test-rdma.sh) and ours exchange
endpoint_info and do one-sided read, write and write_with_imm in both directions with
content checks. Two-sided messages do not interoperate: send/recv fail at once with
Unsupported (docs/rdma-transport.md, "Interoperating with the original")."""

import json
import os
import subprocess

import pytest

import dlslime

from test_rdma import MIB, HERE, Peer, devices, pattern


class OriginalPeer(Peer):
    def __init__(self, python, device, num_qp, size):
        self.proc = subprocess.Popen([python, os.path.join(HERE, "peer_original.py"), device, str(num_qp),
                                      str(size)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        import selectors

        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)


def original_python():
    py = os.environ.get("DLSLIME_ORIGINAL_PYTHON")
    if not py or not os.path.exists(py):
        if os.environ.get("CI") == "true":
            pytest.fail("NOT RUN under CI: no original DLSlime (DLSLIME_ORIGINAL_PYTHON)")
        pytest.skip("NOT RUN: DLSLIME_ORIGINAL_PYTHON names no interpreter with dlslime 0.1.23")
    return py


@pytest.mark.parametrize("num_qp", [1, 2])
def test_one_sided_both_ways_with_the_original(num_qp):
    py = original_python()
    mine, theirs = devices()
    size = MIB
    peer = OriginalPeer(py, theirs, num_qp, size)
    try:
        hello = peer.read(120)
        info = hello["info"]
        # the original's connection JSON: the keys this library reads
        assert set(info) >= {"mr_info", "io_info", "msg_info"} and "transport" not in info
        assert len(info["io_info"]["data_channel_info"]) == num_qp
        ep = dlslime.RDMAEndpoint(device_name=mine, ib_port=1, link_type="RoCE", num_qp=num_qp)
        buf = bytearray(pattern(size, 1))
        h = ep.register_memory_region("buf", buf)
        ep.connect(info)
        assert peer.call("connect " + json.dumps(ep.endpoint_info())) == "ok"
        r = ep.remote_handle("buf")
        n = 256 << 10
        # ours -> original: write, read, write_with_imm (the immediate travels raw)
        buf[:n] = pattern(n, 5)
        assert ep.write([(h, r, 4096, 0, n)]).wait() == 0
        assert peer.call(f"check 4096 {n} 5") is True
        assert ep.read([(h, r, 512 << 10, n, n)]).wait() == 0
        assert bytes(buf[n:2 * n]) == pattern(size, 2)[512 << 10:(512 << 10) + n]
        buf[:1000] = pattern(1000, 6)
        f = ep.write_with_imm([(h, r, 0, 0, 1000)], 0x12345678)
        assert peer.call("immrecv") == 0x12345678
        assert f.wait() == 0
        assert peer.call("check 0 1000 6") is True
        # original -> ours
        assert peer.call(f"fill 0 {n} 8") == "ok"
        assert peer.call(f"write {600 << 10} 0 {n}") == 0
        assert bytes(buf[600 << 10:(600 << 10) + n]) == pattern(n, 8)
        buf[100:100 + 5000] = pattern(5000, 9)
        assert peer.call("read 100 200000 5000") == 0
        assert peer.call("check 200000 5000 9") is True
        g = ep.imm_recv()
        assert peer.call("fill 0 777 10") == "ok"
        assert peer.call("writeimm 300000 0 777 -5") == 0
        assert g.wait() == 0 and g.imm_data() == -5
        assert bytes(buf[300000:300777]) == pattern(777, 10)
        # two-sided messages do not interoperate: refused at once, clearly
        with pytest.raises(dlslime.Unsupported) as e:
            ep.send(bytearray(8))
        assert "original DLSlime" in str(e.value)
        ep.shutdown()
    finally:
        peer.close()
