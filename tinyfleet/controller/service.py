"""The controller service, as one object: `Controller(ControllerConfig(...)).start()` ... `.stop()`.

`tinyfleet controller` runs it until SIGTERM; the demo, the tests and the benchmarks run it in-process
(it uses background threads only) or as that command in a subprocess. Threads:

    paho network loop    broker I/O; hands every delivery to ingest (enqueue only)
    ingest writer        validates and writes batches to the store
    engine               bindings, rollout steps, desired-state publishing; woken by reports and commands
    uvicorn              the HTTP API (FastAPI handlers run in its worker threads)
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import uvicorn

from tinyfleet.controller import signing
from tinyfleet.controller.api import ApiContext, create_app
from tinyfleet.controller.apitoken import load_or_create
from tinyfleet.controller.engine import Engine
from tinyfleet.controller.errors import InvalidRequest
from tinyfleet.controller.fleet import Fleet
from tinyfleet.controller.ingest import Ingest
from tinyfleet.controller.lease import Lease
from tinyfleet.controller.metrics import Metrics
from tinyfleet.controller.mqtt import MqttLink
from tinyfleet.controller.publisher import Publisher
from tinyfleet.controller.releases import Releases
from tinyfleet.controller.store import Store
from tinyfleet.oci.registry import Credentials, RegistryClient
from tinyfleet.protocol.broker import BrokerAddress

log = structlog.get_logger("controller.service")


@dataclass(frozen=True)
class ControllerConfig:
    db: Path  # the SQLite database; its directory holds the API token and the signing key either way
    broker: str = "mqtt://127.0.0.1:1883"
    listen: str = "127.0.0.1:8080"  # port 0: pick a free one (see Controller.url)
    token_file: Path | None = None  # default: api-token beside the database
    heartbeat_interval: float = 30.0  # what the agents use; offline after `missed_heartbeats` of them
    missed_heartbeats: int = 3
    tick_interval: float = 1.0  # engine pass when nothing wakes it sooner
    broker_username: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    broker_ca_file: Path | None = None  # mqtts: trust only this CA (PEM) instead of the system's
    registry_credentials: Mapping[str, Credentials] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    registry_timeout: float = 10.0
    database: str | None = field(default=None, repr=False)  # postgresql://... instead of SQLite at `db`
    # Several controllers on one PostgreSQL: subscribe as MQTT shared subscriptions of this group, so they
    # split the reports. Off by default: each member keeps a persistent session, and the broker goes on
    # queueing a stopped member's share for it until it comes back (late, not lost).
    share_group: str | None = None

    @property
    def offline_after(self) -> float:
        return self.heartbeat_interval * self.missed_heartbeats

    @property
    def token_path(self) -> Path:
        return self.token_file or Path(self.db).parent / "api-token"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidRequest(f"--listen {text!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Controller:
    def __init__(self, config: ControllerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.broker = BrokerAddress.parse(config.broker, config.broker_username, config.broker_password,
                                          credentials_in_url=False)
        self.listen = parse_listen(config.listen)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: uvicorn.Server | None = None
        self.url = ""
        self.token = ""

    def start(self) -> Controller:
        """Open the store, bind the API, start the threads, connect in the background. A failure half-way
        stops what was started and re-raises (the port is taken, the database is unusable ...)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        log.info("controller started", api=self.url, broker=str(self.broker), db=self.store.path,
                 offline_after=self.config.offline_after)
        return self

    def _start(self) -> None:
        c = self.config
        self.store = Store(c.database or c.db)
        self.token = load_or_create(c.token_path)
        self.signer = signing.load_or_create(Path(c.db).parent)
        sock = self._bind()  # before any thread: a taken port fails here, cleanly
        client_id = self._client_id()
        shared = self.store.kind == "postgresql"
        self.lease = Lease(self.store.location) if shared else None
        self.metrics = Metrics()
        self.link = MqttLink(self.broker, client_id, on_message=self._deliver, on_connected=self._broker_connected,
                             on_state=lambda up: self.metrics.mqtt_connected.set(int(up)),
                             ca_file=str(c.broker_ca_file) if c.broker_ca_file else None,
                             share_group=c.share_group)
        self.publisher = Publisher(self.store, self.link.publish, self.signer, self.clock,
                                   on_sent=lambda n: self.metrics.desired_published.inc(n))
        self.fleet = Fleet(self.store, c.offline_after, self.clock, changed=lambda: self.engine.wake.set())
        registry = RegistryClient(c.registry_credentials, insecure_hosts=c.insecure_registries,
                                  timeout=c.registry_timeout)
        self.releases = Releases(self.store, registry, self.clock)
        self.engine = Engine(self.store, self.fleet, self.releases, self.publisher, self.clock, lease=self.lease)
        # On PostgreSQL the ingest writer has a connection of its own: the store serialises the use of its
        # connection, and a batch of reports waiting on the server's answers held up the engine sending a
        # rollout's documents (and the reverse). SQLite has one writer per file anyway.
        self._ingest_store = Store(c.database) if shared else self.store
        self.ingest = Ingest(self._ingest_store, self.metrics, c.offline_after, clock=self.clock,
                             on_written=lambda changed: self.engine.wake.set() if changed else None,
                             on_hello=self._answer_hello)
        self.metrics.watch(self.fleet.count, self.store.rollout_states)
        self._spawn("ingest", lambda: self.ingest.run(self._stop))
        self._spawn("engine", lambda: self.engine.run(self._stop, c.tick_interval))
        self._serve_api(sock)
        self.link.start()

    def _deliver(self, topic: str, payload: bytes, retained: bool, ack: Callable[[], None]) -> None:
        self.ingest.submit(topic, payload, retained, ack)  # acknowledged to the broker once written

    def _client_id(self) -> str:
        """The same MQTT session (and the reports the broker queued for it) after a restart: kept in the
        SQLite store, or - on a PostgreSQL store several controllers share - in a file beside `db`, one
        per controller."""
        if self.store.kind != "postgresql":
            client_id = self.store.meta("mqtt_client_id")
            if client_id is None:
                client_id = f"tinyfleet-controller-{secrets.token_hex(6)}"
                self.store.set_meta("mqtt_client_id", client_id)
            return client_id
        path = Path(self.config.db).parent / "mqtt-client-id"
        if path.exists():
            return path.read_text().strip()
        client_id = f"tinyfleet-controller-{secrets.token_hex(6)}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(client_id + "\n")
        return client_id

    def _answer_hello(self, announced: dict[str, int]) -> None:
        """Agents that connected saying which generation they have: a newer stored document goes to each
        again (the same bytes), whether or not the broker still holds it retained."""
        sent = self.publisher.send(self.store.documents_newer_than(announced))
        if sent:
            log.info("desired states sent again to agents that connected behind", documents=sent)

    def _broker_connected(self) -> None:
        self.engine.republish.set()  # the engine thread sends them; never block paho's network thread
        self.engine.wake.set()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"tinyfleet-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _bind(self) -> socket.socket:
        host, port = self.listen
        if not is_loopback(host):
            log.warning("the API listens beyond loopback; the token travels in clear without a TLS proxy in front",
                        listen=self.config.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {self.config.listen}: {exc.strerror}") from exc
        port = sock.getsockname()[1]
        self.url = f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{port}"
        return sock

    def _serve_api(self, sock: socket.socket) -> None:
        app = create_app(ApiContext(self.fleet, self.releases, self.engine, self.metrics, self.token,
                                    token_hint=str(self.config.token_path)))
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                                     lifespan="off", timeout_graceful_shutdown=2))
        self._spawn("api", lambda: self._server.run(sockets=[sock]))  # type: ignore[union-attr]
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start within 15 s")
            time.sleep(0.01)

    @property
    def public_key(self) -> str:
        """The key boards must trust (`controller_key`), as in signing-key.pub."""
        return str(self.signer.public)

    def wait_connected(self, timeout: float = 15.0) -> bool:
        return self.link.connected.wait(timeout)

    def stop(self) -> None:
        """Stop serving, write what was received, disconnect (the broker keeps the session). Safe to call
        on a controller that started only partly."""
        if self._server is not None:
            self._server.should_exit = True
        if hasattr(self, "link"):
            self.link.stop()
        self._stop.set()
        if hasattr(self, "engine"):
            self.engine.wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if getattr(self, "lease", None) is not None:
            self.lease.release()  # type: ignore[union-attr]
        if getattr(self, "_ingest_store", None) not in (None, getattr(self, "store", None)):
            self._ingest_store.close()
        if hasattr(self, "store"):
            self.store.close()
        log.info("controller stopped")

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
