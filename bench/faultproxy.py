"""A TCP proxy in front of a service that can fail on purpose: `up` (forward), `down` (refuse: the
listener closes every connection at once), `stall` (accept and never answer, like a registry whose
disk hangs), `slow` (forward, but the answers at `slow_rate` bytes/s - open connections too, so a
pull under way slows down mid-flight). Every connection is logged with its time and the mode it met,
so a case can show how a client backed off; `delivered` counts the bytes the clients got."""

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
    slow_rate: float = 2 * 2**20
    delivered: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @classmethod
    def in_front_of(cls, host_port: str) -> FaultProxy:
        """A proxy for the service at "HOST:PORT" (a registry host as images name it)."""
        host, port = host_port.rsplit(":", 1)
        return cls((host, int(port)))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, mode: str) -> None:
        if mode not in ("up", "down", "stall", "slow"):
            raise ValueError(f"mode {mode!r} is not up, down, stall or slow")
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
        for a, b, answers in ((conn, upstream, False), (upstream, conn, True)):
            threading.Thread(target=self._pipe, args=(a, b, answers), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while chunk := src.recv(16384):
                dst.sendall(chunk)
                if answers:
                    self.delivered += len(chunk)
                    if self.mode == "slow":
                        time.sleep(len(chunk) / self.slow_rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        self.set("up")

