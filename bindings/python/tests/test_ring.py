"""The slot ring from Python: the original's SharedRingBuffer tests (spec A.7) against
this implementation, plus generations (stale references), schemas, zero-copy numpy
views, and the remote path in two and three processes over TCP and shared memory
(tests/ring_proc.py serves the ring; this process fetches)."""

import json
import os
import sys

import numpy as np
import pytest

import dlslime
from dlslime.ring import (RingClient, SharedRingBuffer, SlotError, SlotRef, SlotState, StaleSlotError,
                          TensorSpec)

from conftest import HERE, TRANSPORTS, JsonChild, make_endpoint


def pattern(n, seed):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def ring(n=4, size=1024, **kw):
    return SharedRingBuffer(max_entries=n, entry_size=size, **kw)


def test_all_slots_start_free_and_round_trip():
    r = ring()
    assert all(s == SlotState.FREE for s in r.get_slot_states().values())
    ref = r.write(b"hello")
    assert ref == SlotRef(0, 0)
    assert r.get_slot_state(0) == SlotState.READY and r.is_ready(0)
    assert r.read(ref) == b"hello"
    assert r.get_slot_state(0) == SlotState.FREE


def test_write_raw_size_and_parts():
    r = ring(size=16)
    with pytest.raises(dlslime.InvalidArgument):
        r.write_raw(b"x" * 17)
    ref = r.write([b"ab", bytearray(b"cd"), np.frombuffer(b"ef", dtype=np.uint8)])
    assert r.read(ref) == b"abcdef"


def test_views_mark_consumed_and_release_reading():
    r = ring()
    ref = r.write_raw(pattern(1024, 3))
    v = r.read_view(ref)
    assert isinstance(v, np.ndarray) and not v.flags.owndata
    assert bytes(v) == pattern(1024, 3)
    assert r.get_slot_state(0) == SlotState.READING
    with pytest.raises(SlotError):
        r.read(ref)
    assert r.try_read(ref) is None
    # a real view: another mapping of the ring sees a write through it
    other = SharedRingBuffer.from_handle(r.get_handle())
    v[0] = 255
    r.release_reading(ref)
    assert r.get_slot_state(0) == SlotState.READY
    assert other.read(ref)[0] == 255
    ref2 = r.write_raw(b"abc")
    raw = r.read_raw(ref2)
    assert bytes(raw) == b"abc"
    r.mark_consumed(ref2)
    assert r.get_slot_state(1) == SlotState.FREE


def test_mark_consumed_is_defensive():
    r = ring()
    ref = r.write_raw(b"data")
    r.mark_consumed(ref)  # no view held: nothing changes, data still readable
    assert r.get_slot_state(0) == SlotState.READY
    r.release_reading(0)
    assert r.read(0) == b"data"
    r.mark_consumed(0)
    assert r.get_slot_state(0) == SlotState.FREE


def test_ready_indices_and_count_after_saturation():
    r = ring()
    refs = [r.write_raw(bytes([i])) for i in range(4)]
    assert r.get_ready_indices() == [0, 1, 2, 3] and r.get_ready_count() == 4 and r.is_full()
    r.read(refs[1])
    r.read(refs[3])
    assert r.get_ready_count() == 2 and r.get_ready_indices() == [0, 2] and not r.is_full()


def test_overwrite_when_full_and_stale_reference():
    r = ring()
    refs = [r.write_raw(bytes([i])) for i in range(5)]
    m = r.get_metrics()
    assert (m.writes_total, m.drops_total, m.ready) == (5, 1, 4)
    with pytest.raises(StaleSlotError):
        r.read(refs[0])
    assert r.read(refs[4]) == bytes([4])
    assert r.get_metrics().stale_reads == 1


def test_slot_error_when_full_without_overwrite():
    r = ring(overwrite_if_full=False)
    for i in range(4):
        r.write_raw(bytes([i]))
    with pytest.raises(SlotError):
        r.write_raw(b"x")
    # per write, as in the original
    assert r.write_raw(b"y", overwrite_if_full=True) == SlotRef(0, 4)
    with pytest.raises(SlotError):
        r.write_raw(b"z", overwrite_if_full=False)


def test_handle_round_trip_and_metrics():
    r = ring(buffer_name="py-handle")
    h = r.get_handle()
    assert h["buffer_name"] == "py-handle" and h["max_entries"] == 4 and h["entry_size"] == 1024
    o = SharedRingBuffer.from_handle(json.dumps(h))
    ref = o.write_raw(b"from the other mapping")
    assert r.read(ref) == b"from the other mapping"
    m = r.get_metrics()
    assert (m.writes_total, m.reads_total, m.bytes_read) == (1, 1, 22)
    assert m.current_fill == 0


def test_schema_dicts():
    schema = [TensorSpec("obs", (3, 2), "float32"), TensorSpec("len", (1,), "int64")]
    r = SharedRingBuffer(max_entries=2, schema=schema)
    assert r.entry_size == 3 * 2 * 4 + 8
    ref = r.write({"obs": np.arange(6, dtype=np.float32).reshape(3, 2), "len": [5]})
    views = r.read_view(ref)
    assert views["obs"].shape == (3, 2) and views["obs"][2, 1] == 5.0 and views["len"][0] == 5
    r.mark_consumed(ref)
    ref = r.write({"obs": np.ones((3, 2)), "len": np.array([2])})
    got = r.read(ref)
    assert got["obs"].dtype == np.float32 and got["obs"].sum() == 6 and got["len"][0] == 2
    with pytest.raises(KeyError):
        r.write({"obs": np.ones((3, 2))})


class Proc(JsonChild):
    """A serving process (ring_proc.py): creates the ring, or attaches ``handle``."""

    def __init__(self, transport, handle=None):
        args = [sys.executable, os.path.join(HERE, "ring_proc.py"), transport]
        if handle is not None:
            args.append(json.dumps(handle))
        super().__init__(args, timeout=60.0)

    def pair(self, transport):
        ep = make_endpoint(transport, dlslime.MemoryPool())
        info = self.read()["info"]
        self.write(ep.endpoint_info())
        ep.connect(info)
        assert self.read() == {"connected": True}
        return ep


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetch_two_processes(transport):
    p = Proc(transport)
    try:
        ep = p.pair(transport)
        c = RingClient(timeout=10.0)
        c.add_endpoint("rollouts", ep)
        refs = [SlotRef(*r) for r in p.call(cmd="write", count=5, len=300_000, seed=1)["refs"]]
        arr = c.fetch("rollouts", refs[0])
        assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and not arr.flags.owndata
        assert bytes(arr) == pattern(300_000, 1)
        del arr
        with pytest.raises(StaleSlotError):
            c.fetch("rollouts", refs[0])
        out = np.zeros(1 << 20, dtype=np.uint8)
        assert c.fetch_into("rollouts", refs[1], out) == 300_000
        assert bytes(out[:300_000]) == pattern(300_000, 2)
        got = c.fetch_batch("rollouts", refs[2:] + [refs[0]])
        for i, g in enumerate(got[:3]):
            assert bytes(g) == pattern(300_000, 3 + i)
        assert isinstance(got[3], StaleSlotError)
        k = c.counters()
        assert k["fetched"] == 5 and k["stale"] == 2 and k["quarantines"] == 0
        assert c.worst_case() == 22.0  # 2 attempts x (10 s + 1 s commit grace)
        m = p.call(cmd="metrics")
        assert m["reads_total"] == 5 and m["ready"] == 0
        c.close()
    finally:
        p.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetch_three_processes_round_robin(transport):
    p = Proc(transport)
    s = None
    try:
        ep_p = p.pair(transport)
        s = Proc(transport, handle=p.call(cmd="handle")["handle"])
        ep_s = s.pair(transport)
        c = RingClient()
        c.add_endpoint("rollouts", ep_p)
        c.add_endpoint("rollouts", ep_s)
        refs = [SlotRef(*r) for r in p.call(cmd="write", count=6, len=100_000, seed=50)["refs"]]
        for i, r in enumerate(refs):
            assert bytes(c.fetch("rollouts", r)) == pattern(100_000, 50 + i)
        # both serving processes share the ring's metrics
        assert p.call(cmd="metrics") == s.call(cmd="metrics")
        assert c.counters()["sessions_created"] == 2
    finally:
        if s is not None:
            s.close()
        p.close()
