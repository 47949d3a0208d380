"""A counting TCP proxy on 127.0.0.1: the SuperNodes talk to the SuperLink through it, so every byte the
federation puts on the network (HTTP, headers, polling) is counted, with its time.

    proxy = CountingProxy(target_port); proxy.start()    # SuperNodes connect to proxy.port
    ...; proxy.stop(); proxy.events                       # [(time.time(), "up" | "down", bytes), ...]

"up" is SuperNode -> SuperLink, "down" the reverse.
"""
from __future__ import annotations

import selectors
import socket
import threading
import time


class CountingProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.events: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="counting-proxy", daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        peers: dict[socket.socket, tuple[socket.socket, str]] = {}

        def close(s: socket.socket) -> None:
            other, _ = peers.pop(s, (None, None))
            for x in (s, other):
                if x is not None:
                    try:
                        sel.unregister(x)
                    except (KeyError, ValueError):
                        pass
                    x.close()
                    peers.pop(x, None)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                if key.data is None:  # a new connection: open one to the target and pair them
                    client, _ = self.listener.accept()
                    try:
                        upstream = socket.create_connection(self.target)
                    except OSError:  # the SuperLink is gone (shutting down): refuse this connection
                        client.close()
                        continue
                    peers[client], peers[upstream] = (upstream, "up"), (client, "down")
                    for s in (client, upstream):
                        s.setblocking(False)
                        sel.register(s, selectors.EVENT_READ, "conn")
                    continue
                s = key.fileobj
                if s not in peers:
                    continue
                other, direction = peers[s]
                try:
                    data = s.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    close(s)
                    continue
                self.events.append((time.time(), direction, len(data)))
                try:
                    other.setblocking(True)
                    other.sendall(data)
                    other.setblocking(False)
                except OSError:
                    close(s)
        for s in list(peers):
            close(s)
        self.listener.close()
        sel.close()


def bytes_between(events: list[tuple[float, str, int]], start: float, end: float) -> dict[str, int]:
    """Bytes up and down in the time window [start, end)."""
    out = {"up": 0, "down": 0}
    for t, d, n in events:
        if start <= t < end:
            out[d] += n
    return out
