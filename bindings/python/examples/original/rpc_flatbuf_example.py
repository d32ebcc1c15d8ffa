#!/usr/bin/env python3
"""SlimeRPC raw mode with FlatBuffers payloads: two PeerAgents in one process.

``@method(raw=True)`` handlers get the request bytes and return reply bytes, so pickle
is bypassed; the payloads here are FlatBuffers tables built and read with the
``flatbuffers`` package's table API (no .fbs compiler needed). Tables:

    CalcRequest  { a: int32 (slot 0); b: int32 (slot 1) }
    IntReply     { value: int32 (slot 0) }
    Text         { s: string (slot 0) }

    pip install flatbuffers
    python rpc_flatbuf_example.py --ctrl http://127.0.0.1:3000
"""

import argparse
import ctypes
import threading

import flatbuffers
from flatbuffers import encode, number_types, packer, table

from dlslime import PeerAgent
from dlslime.rpc import method, proxy, serve


def _root(buf: bytes) -> table.Table:
    return table.Table(buf, encode.Get(packer.uoffset, buf, 0))


def _int_slot(t: table.Table, slot: int) -> int:
    off = t.Offset(4 + 2 * slot)  # vtable entry of the slot; 0: absent, the default
    return t.Get(number_types.Int32Flags, t.Pos + off) if off else 0


def calc_request(a: int, b: int) -> bytes:
    bld = flatbuffers.Builder(64)
    bld.StartObject(2)
    bld.PrependInt32Slot(0, a, 0)
    bld.PrependInt32Slot(1, b, 0)
    bld.Finish(bld.EndObject())
    return bytes(bld.Output())


def read_calc_request(buf: bytes):
    t = _root(buf)
    return _int_slot(t, 0), _int_slot(t, 1)


def int_reply(v: int) -> bytes:
    bld = flatbuffers.Builder(32)
    bld.StartObject(1)
    bld.PrependInt32Slot(0, v, 0)
    bld.Finish(bld.EndObject())
    return bytes(bld.Output())


def read_int_reply(buf: bytes) -> int:
    return _int_slot(_root(buf), 0)


def text(s: str) -> bytes:
    bld = flatbuffers.Builder(128)
    off = bld.CreateString(s)
    bld.StartObject(1)
    bld.PrependUOffsetTRelativeSlot(0, off, 0)
    bld.Finish(bld.EndObject())
    return bytes(bld.Output())


def read_text(buf: bytes) -> str:
    t = _root(buf)
    off = t.Offset(4)
    return t.String(t.Pos + off).decode("utf-8") if off else ""


def _request(ptr: int, nbytes: int) -> bytes:
    return bytes((ctypes.c_char * nbytes).from_address(ptr))


class CalcFlatService:
    @method(raw=True)
    def add(self, channel, ptr, nbytes):
        a, b = read_calc_request(_request(ptr, nbytes))
        return int_reply(a + b)

    @method(raw=True)
    def mul(self, channel, ptr, nbytes):
        a, b = read_calc_request(_request(ptr, nbytes))
        return int_reply(a * b)

    @method(raw=True)
    def echo(self, channel, ptr, nbytes):
        return text("echo: " + read_text(_request(ptr, nbytes)))


def main(ctrl_url: str):
    worker = PeerAgent(nanoctrl_url=ctrl_url, alias="worker:0")
    driver = PeerAgent(nanoctrl_url=ctrl_url, alias="driver:0")
    to_worker = driver.connect_to("worker:0", ib_port=1, qp_num=1)
    to_driver = worker.connect_to("driver:0", ib_port=1, qp_num=1)
    to_worker.wait()
    to_driver.wait()
    print("Connected.")

    try:
        threading.Thread(target=serve, args=(worker, CalcFlatService(), "driver:0"), daemon=True).start()
        w = proxy(driver, "worker:0", CalcFlatService)

        assert read_int_reply(w.add(calc_request(1, 2)).wait()) == 3
        print("flatbuf add(1, 2) = 3  ✓")

        assert read_int_reply(w.mul(calc_request(7, 6)).wait()) == 42
        print("flatbuf mul(7, 6) = 42  ✓")

        assert read_text(w.echo(text("hello flatbuf")).wait()) == "echo: hello flatbuf"
        print("flatbuf echo('hello flatbuf')  ✓")

        sums = [read_int_reply(w.add(calc_request(i, i * 10)).wait()) for i in range(5)]
        assert sums == [0, 11, 22, 33, 44]
        print(f"flatbuf batch add = {sums}  ✓")

        print("\nAll FlatBuffers tests passed!")
    finally:
        worker.shutdown()
        driver.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="SlimeRPC FlatBuffers loopback")
    ap.add_argument("--ctrl", default="http://127.0.0.1:3000", help="NanoCtrl URL")
    main(ap.parse_args().ctrl)
