"""The warm runner's wire and its client (hiso/warm.py is the server): one length-prefixed JSON message each way,
with the client's stdin/stdout/stderr passed as file descriptors.  The command line (hiso/__main__.py) imports
this module only, and the server imports the command line to run a job, so neither imports the other.

Standard library only: the client must stay cheap.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

SOCKET_ENV = "HISO_WARM_SOCKET"


def _send(conn: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [msg], fds)
    else:
        conn.sendall(msg)


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict | None, list[int]]:
    fds: list[int] = []
    buf = b""
    if with_fds:
        buf, fds, _, _ = socket.recv_fds(conn, 1 << 20, with_fds)
    while len(buf) < 4 or len(buf) < 4 + struct.unpack("!I", buf[:4])[0]:
        chunk = conn.recv(1 << 20)
        if not chunk:
            return None, fds
        buf += chunk
    n = struct.unpack("!I", buf[:4])[0]
    return json.loads(buf[4:4 + n]), fds


def client(argv: list[str]) -> int | None:
    """Run `python -m hiso <argv>` in a child of the warm server; None if no server can take it (run cold)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
        reply, _ = _recv(conn)
    except OSError:
        conn.close()
        return None
    if reply is None or "pid" not in reply:
        if reply and reply.get("cold"):
            print(f"warm runner: running cold ({reply['cold']})", file=sys.stderr)
        conn.close()
        return None
    pid = reply["pid"]

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            done, _ = _recv(conn)
            break
        except InterruptedError:
            continue
    conn.close()
    if done is None:  # the server died under us; the child was its child, so it is gone too
        print("warm runner: the server went away before the run ended", file=sys.stderr)
        return 1
    return int(done["exit"])
