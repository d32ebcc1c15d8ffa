"""Package-level checks: the declarations come from the header, errors, import time."""

import os
import re
import subprocess
import sys

import pytest

import dlslime

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HEADER = os.path.join(ROOT, "include", "dlslime.h")


def header_functions():
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    return sorted(set(re.findall(r"^[a-z_][\w *]*?\b(dlslime_[a-z0-9_]+)\(", text, re.M)))


def test_every_header_function_is_bound():
    names = header_functions()
    assert len(names) > 30
    missing = [n for n in names if not hasattr(dlslime.lib, n)]
    assert missing == [], missing


def test_header_constants_and_version():
    assert dlslime.lib.DLSLIME_STATUS_PEER_DISCONNECTED == 405
    assert dlslime.version() == "%d.%d.%d" % (dlslime.lib.DLSLIME_VERSION_MAJOR, dlslime.lib.DLSLIME_VERSION_MINOR,
                                              dlslime.lib.DLSLIME_VERSION_PATCH)
    assert dlslime.lib.dlslime_version_number() == (dlslime.lib.DLSLIME_VERSION_MAJOR << 16 |
                                                    dlslime.lib.DLSLIME_VERSION_MINOR << 8 |
                                                    dlslime.lib.DLSLIME_VERSION_PATCH)


def test_cdef_converter_handles_the_header_and_refuses_unknown_directives():
    sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
    try:
        from dlslime._cdef import HeaderError, header_to_cdef
    finally:
        sys.path.pop(0)
    with open(HEADER, encoding="utf-8") as f:
        cdef = header_to_cdef(f.read())
    assert "extern" not in cdef and "/*" not in cdef and "__cplusplus" not in cdef
    assert "dlslime_endpoint_write(" in cdef
    with pytest.raises(HeaderError):
        header_to_cdef("#if FOO > 1\nint x;\n#endif\n")
    assert header_to_cdef('#ifdef __cplusplus\nextern "C" {\n#endif\nint f(void); // c\n') == "int f(void);\n"


def test_error_hierarchy():
    for status, cls in [(100, dlslime.InvalidArgument), (102, dlslime.UnknownHandle), (103, dlslime.OutOfRange),
                        (202, dlslime.ShutDown), (402, dlslime.Timeout), (404, dlslime.Cancelled),
                        (405, dlslime.PeerDisconnected), (407, dlslime.Truncated), (500, dlslime.IOFailure),
                        (599, dlslime.Panic)]:
        assert dlslime.error_class(status) is cls
        assert cls.status == status
        assert issubclass(cls, dlslime.DLSlimeError) and issubclass(cls, RuntimeError)
    assert issubclass(dlslime.OutOfRange, ValueError)
    assert issubclass(dlslime.PeerDisconnected, ConnectionError)
    assert issubclass(dlslime.Timeout, TimeoutError)
    assert dlslime.error_class(450) is dlslime.OperationError
    assert dlslime.error_class(12345) is dlslime.DLSlimeError


def test_error_classes_follow_the_header():
    # Every status of the header has its class, named in the package and in the stub.
    statuses = {n[len("DLSLIME_STATUS_"):]: getattr(dlslime.lib, n) for n in dir(dlslime.lib)
                if n.startswith("DLSLIME_STATUS_")}
    assert len(statuses) >= 24 and statuses["OK"] == 0 and statuses["PENDING"] == 1
    with open(os.path.join(os.path.dirname(dlslime.__file__), "__init__.pyi"), encoding="utf-8") as f:
        stub = f.read()
    stub_classes = set(re.findall(r"^class (\w+)\((?:[^)]*)\):", stub, re.M))
    exported = set()
    for c_name, number in statuses.items():
        if c_name in ("OK", "PENDING"):
            continue
        cls = dlslime.error_class(number)
        assert cls.status == number and cls.__name__ in dlslime.__all__, c_name
        assert getattr(dlslime, cls.__name__) is cls
        assert cls.__doc__ and ("DLSLIME_STATUS_" + c_name) in cls.__doc__
        exported.add(cls.__name__)
    assert {"Timeout", "IOFailure", "InternalError", "ProtocolError"} <= exported
    errors = {n for n in dlslime.__all__ if isinstance(getattr(dlslime, n), type)
              and issubclass(getattr(dlslime, n), dlslime.DLSlimeError)}
    assert errors == exported | {"DLSlimeError", "StateError", "OperationError", "SystemFailure"}
    assert errors <= stub_classes, errors - stub_classes
    # The classes pickle by name (module-level, as if written out).
    import pickle
    e = pickle.loads(pickle.dumps(dlslime.OutOfRange("x", 103)))
    assert type(e) is dlslime.OutOfRange and e.status == 103 and e.message == "x"


def test_ci_turns_skips_into_failures(tmp_path):
    # This suite's conftest, on a test that skips: a skip (listed as NOT RUN) without CI,
    # a failure with the reason under CI=true.
    import shutil
    shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_needs_redis():\n    pytest.skip('redis-server is missing')\n")
    results = {}
    for ci in ("", "true"):
        env = dict(os.environ, CI=ci)
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        results[ci] = (p.returncode, p.stdout + p.stderr)
    code, out = results[""]
    assert code == 0 and "1 skipped" in out, out
    assert "NOT RUN  test_skips.py::test_needs_redis (redis-server is missing)" in out, out
    code, out = results["true"]
    assert code == 1 and "1 failed" in out, out
    assert "NOT RUN under CI=true: redis-server is missing" in out, out


def test_error_carries_the_c_message():
    pool = dlslime.MemoryPool()
    with pytest.raises(dlslime.UnknownHandle) as ei:
        pool.unregister_memory_region("no-such-region")
    assert "no-such-region" in ei.value.message and ei.value.status == 102


def test_pool_basics():
    pool = dlslime.MemoryPool()
    assert pool.mr_info() == {}
    a, b = bytearray(64), bytearray(32)
    ha = pool.register_memory_region(a, name="a")
    hb = pool.register_memory_region(b)
    assert ha != hb and pool.get_handle("a") == ha
    info = pool.mr_info()
    assert info["a"]["length"] == 64 and info["a"]["addr"] == dlslime.buffer_address(a)
    assert info[f"mr_{hb}"]["length"] == 32
    pool.unregister_memory_region("a")
    assert "a" not in pool.mr_info()
    hc = pool.register_memory_region(bytearray(8))
    assert hc not in (ha, hb)  # handles are never reused


def test_import_is_fast():
    code = "import time; t = time.perf_counter(); import dlslime; print(time.perf_counter() - t)"
    took = float(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert took < 0.5, f"import dlslime took {took:.3f} s"


def test_alloc_shared_bad_length():
    if not hasattr(dlslime.lib, "dlslime_alloc_shared"):
        pytest.skip("library without shared allocations")
    with pytest.raises(dlslime.InvalidArgument):
        dlslime.alloc_shared(0)
    with pytest.raises(ValueError):
        dlslime.alloc_shared(-1)
