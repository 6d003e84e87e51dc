"""A transparent HTTP proxy in front of the real registry that counts what passes (to show that a
refused image cost zero layer bytes) and can tamper with chosen manifests (to show that a digest
that does not verify is refused). Everyone - the agent and dockerd - talks to the registry through it."""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Traffic:
    requests: list[tuple[str, str]] = field(default_factory=list)
    blob_bytes: int = 0
    tamper: set[str] = field(default_factory=set)  # manifest references whose body is altered
    lock: threading.Lock = field(default_factory=threading.Lock)

    def blob_requests(self, repo: str | None = None) -> list[str]:
        with self.lock:
            return [p for m, p in self.requests if m == "GET" and "/blobs/" in p and (repo is None or f"/{repo}/" in p)]


class RegistryProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.traffic = Traffic()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.traffic.lock:
                    proxy.traffic.requests.append((self.command, self.path))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", proxy.upstream)
                for k, v in self.headers.items():  # repeated headers (Docker sends one Accept per type) kept
                    if k.lower() not in ("host", "connection"):
                        conn.putheader(k, v)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                if "/blobs/" in self.path and self.command == "GET":
                    with proxy.traffic.lock:
                        proxy.traffic.blob_bytes += len(data)
                if self.command == "GET" and any(self.path.endswith(f"/manifests/{t}") for t in proxy.traffic.tamper):
                    data = data.replace(b'"schemaVersion":2', b'"schemaVersion": 2')
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v.replace(proxy.upstream, f"127.0.0.1:{proxy.port}"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._handler = Handler
        self.port = 0
        self.start()

    def start(self) -> None:
        """Listen (again, on the same port after a stop: an outage that ends)."""
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop listening: connections are refused, as during a registry outage."""
        self.server.shutdown()
        self.server.server_close()
