"""The services of the original SlimeRPC guide (docs/src/guide/slimerpc.md), as written
there, shared by the guide tests' two processes (tags follow sorted method names, so
both sides import the same classes)."""

import ctypes

from dlslime.rpc import method


class CalcService:
    @method
    def add(self, a: int, b: int) -> int:
        return a + b

    @method
    def echo(self, msg: str) -> str:
        return f"echo: {msg}"


class RawEcho:
    @method(raw=True)
    def echo(self, channel, ptr, nbytes):
        request = bytes((ctypes.c_char * nbytes).from_address(ptr))
        return request.upper()


class InplaceService:
    @method(raw=True, inplace=True)
    def echo(self, req_ptr, req_nbytes, resp_ptr, resp_cap) -> int:
        n = min(req_nbytes, resp_cap)
        ctypes.memmove(resp_ptr, req_ptr, n)
        return n


class AllKinds:
    """Typed, raw and in-place methods on one service (one serve() per agent pair)."""

    @method
    def add(self, a: int, b: int) -> int:
        return a + b

    @method(raw=True)
    def upper(self, channel, ptr, nbytes):
        return bytes((ctypes.c_char * nbytes).from_address(ptr)).upper()

    @method(raw=True, inplace=True)
    def copy(self, req_ptr, req_nbytes, resp_ptr, resp_cap) -> int:
        n = min(req_nbytes, resp_cap)
        ctypes.memmove(resp_ptr, req_ptr, n)
        return n
