"""A scripted HTTP peer on loopback for registry-client tests: real sockets and real HTTP, with
answers the test chooses (auth challenges, wrong bytes, 5xx, huge bodies) that a real registry will
not produce on demand."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Route = Callable[[Seen], Answer]


class Peer:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route | Answer] = {}
        self.seen: list[Seen] = []
        self.basic: tuple[str, str] | None = None  # require this user:password on /v2/
        self.bearer: str | None = None  # require this token on /v2/, issued by /token
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def route(self, method: str, path: str, answer: Route | Answer) -> None:
        self.routes[(method, path)] = answer

    def answer(self, seen: Seen) -> Answer:
        auth = seen.headers.get("authorization", "")
        if seen.path.startswith("/token"):
            if self.basic and auth != "Basic " + base64.b64encode(":".join(self.basic).encode()).decode():
                return Answer(401)
            return Answer(200, b'{"token": "%s"}' % (self.bearer or "").encode())
        if self.bearer and auth != f"Bearer {self.bearer}":
            realm = f"http://{self.host}/token"
            return Answer(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="test"'})
        if self.basic and not self.bearer and auth != "Basic " + base64.b64encode(
                ":".join(self.basic).encode()).decode():
            return Answer(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        route = self.routes.get((seen.method, seen.path.split("?")[0]))
        if route is None:
            return Answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        return route(seen) if callable(route) else route


@contextmanager
def serve() -> Iterator[Peer]:
    peer = Peer()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            peer.seen.append(seen)
            ans = peer.answer(seen)
            self.send_response(ans.status)
            for k, v in ans.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(ans.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(ans.body)

        do_GET = do_HEAD = do_PUT = do_POST = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    peer.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
