"""The service both processes of the SlimeRPC tests import (tags follow sorted names)."""

import ctypes
import hashlib
import json
import os
import selectors
import subprocess
import sys
import threading
import time

from dlslime.rpc import method


class Evil:
    """Creates ``path`` when unpickled: proof that someone ran a pickle (the RPC
    pickle-injection tests)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class ServerProcess:
    """tests/rpc_peer.py serving ``Svc`` over ``transport`` in a child process, with
    ``env`` added to its environment; ``read()`` is its next JSON line, with a deadline."""

    def __init__(self, transport, workers, env):
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen([sys.executable, os.path.join(here, "rpc_peer.py"), transport, str(workers)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=dict(os.environ, **env))
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def read(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sel.select(max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"server exited ({self.proc.poll()})")
                return json.loads(line)
        raise TimeoutError("server said nothing")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
