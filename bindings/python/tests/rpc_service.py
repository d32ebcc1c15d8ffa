"""The service both processes of the SlimeRPC tests import (tags follow sorted names)."""

import ctypes
import hashlib
import threading
import time

from dlslime.rpc import method


def pattern(n, seed=0):
    b = bytes((i * 7 + seed) % 251 for i in range(min(n, 251 * 7)))
    reps = n // len(b) + 1 if b else 0
    return (b * reps)[:n]


class Svc:
    @method
    def add(self, a, b=0):
        return a + b

    @method
    def none(self):
        return None

    @method
    def boom(self, msg):
        raise ValueError(msg)

    @method
    def sleep(self, s):
        time.sleep(s)
        return "slept"

    @method(parallel=True)
    def psleep(self, s):
        time.sleep(s)
        return "p"

    @method
    def unpicklable(self):
        return threading.Lock()

    @method(raw=True)
    def echo(self, channel, ptr, nbytes):
        return ctypes.string_at(ptr, nbytes)

    @method(raw=True, inplace=True)
    def echo_inplace(self, req_ptr, req_nbytes, resp_ptr, resp_cap):
        if req_nbytes > resp_cap:
            raise ValueError("reply does not fit")
        ctypes.memmove(resp_ptr, req_ptr, req_nbytes)
        return req_nbytes

    @method(raw=True, inplace=True, in_request=True)
    def upper_in_request(self, req_ptr, req_nbytes, resp_ptr, resp_cap):
        assert resp_ptr == req_ptr and resp_cap == req_nbytes
        data = ctypes.string_at(req_ptr, req_nbytes).upper()
        ctypes.memmove(resp_ptr, data, len(data))
        return len(data)

    @method
    def big(self, n, seed):
        return pattern(n, seed)

    @method
    def digest(self, data):
        return len(data), hashlib.sha256(data).hexdigest()


class ClientSvc(Svc):
    """The client's view: one method the server does not have (sorted last)."""

    @method
    def zzz_missing(self):
        return 1
