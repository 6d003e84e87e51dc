"""A TCP proxy in front of a service that can fail on purpose: `up` (forward), `down` (refuse: the
listener closes every connection at once), `stall` (accept and never answer, like a registry whose
disk hangs). Every connection is logged with its time and the mode it met, so a case can show how a
client backed off."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Attempt:
    at: float  # time.monotonic()
    mode: str


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    mode: str = "up"
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, mode: str) -> None:
        if mode not in ("up", "down", "stall"):
            raise ValueError(f"mode {mode!r} is not up, down or stall")
        self.mode = mode
        if mode == "up":  # the stalled connections finally fail, as when a hung server is restarted
            with self._lock:
                held, self._held = self._held, []
            for conn in held:
                with contextlib.suppress(OSError):
                    conn.close()

    def attempts_in(self, mode: str) -> list[float]:
        return [a.at for a in self.attempts if a.mode == mode]

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            mode = self.mode
            self.attempts.append(Attempt(time.monotonic(), mode))
            if mode == "down":
                conn.close()
            elif mode == "stall":
                with self._lock:
                    self._held.append(conn)
            else:
                threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            conn.close()
            return
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        self.set("up")


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
