"""The JSON-lines protocol of the peer processes the tests drive (peer.py,
agent_peer.py, tests_netns/host_agent.py): one command per line on stdin, one reply
per line on stdout."""

import json
import sys

import dlslime


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(handle, errors=(dlslime.DLSlimeError,)):
    """Answers each command with ``handle(cmd)`` until ``{"cmd": "quit"}`` (answered
    too) or the end of stdin; an exception of ``errors`` becomes the reply
    ``{"error": <class name>, "message": ...}``."""
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            out = handle(cmd)
        except errors as e:
            out = {"error": type(e).__name__, "message": str(e)}
        reply(out)
        if cmd["cmd"] == "quit":
            break
