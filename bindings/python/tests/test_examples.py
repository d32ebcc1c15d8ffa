"""The examples in bindings/python/examples run to completion with their expected output."""

import os
import subprocess
import sys

import pytest

from conftest import TRANSPORTS

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "examples"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_read_write_example(transport):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "read_write.py"), "--transport", transport],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "target saw imm 42" in out.stdout and "target's bytes!!initiator bytes!" in out.stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_send_recv_example(transport):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "send_recv.py"), "--transport", transport],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "b'dlslime from python' -> b'DLSLIME FROM PYTHON'" in out.stdout
