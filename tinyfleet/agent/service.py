"""The agent's life: wake -> read the newest desired document -> reconcile -> report; plus a
housekeeping thread for health messages and the systemd watchdog.

Level-triggered: an MQTT message only stores the payload and wakes the loop; the loop re-reads the
desired and observed state every time, and also resyncs on a timer so drift (a container stopped by
hand, an engine restart) is repaired without any message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog
from tenacity import Retrying, retry_if_result, wait_exponential, wait_random

from tinyfleet import protocol
from tinyfleet.agent import __version__
from tinyfleet.agent.config import AgentConfig
from tinyfleet.agent.errors import ConfigError
from tinyfleet.agent.executor import Engine, Verifier
from tinyfleet.agent.health import HealthProbe
from tinyfleet.agent.intake import intake
from tinyfleet.agent.mqtt import MqttLink
from tinyfleet.agent.reconciler import Outcome, Reconciler, Settings
from tinyfleet.agent.sdnotify import Notifier
from tinyfleet.agent.state import StateStore
from tinyfleet.oci.platform import Platform
from tinyfleet.protocol import HealthPolicy, Status
from tinyfleet.protocol.broker import BrokerAddress

log = structlog.get_logger("agent.service")
STUCK_AFTER_S = 1800  # stop feeding the watchdog if the loop makes no progress this long (longer than a pull)


class PingableEngine(Engine, Protocol):
    def ping(self) -> bool: ...


@dataclass
class _Inbox:
    """The newest desired payload; older unprocessed ones are superseded (level-triggered)."""

    payload: bytes | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one per inbox, not one shared by all

    def put(self, payload: bytes) -> None:
        with self.lock:
            self.payload = payload

    def take(self) -> bytes | None:
        with self.lock:
            payload, self.payload = self.payload, None
            return payload


class Agent:
    def __init__(self, config: AgentConfig, device_id: str, platform: Platform, engine: PingableEngine,
                 verifier: Verifier) -> None:
        if config.controller_key is None and not config.insecure_accept_unsigned:
            raise ConfigError("no controller_key: the agent runs only states its controller signed "
                              "(insecure_accept_unsigned is the explicit opt-out)")
        self.config = config
        self.device_id = device_id
        self.platform = platform
        self.engine = engine
        self.store = StateStore(config.state_dir)
        settings = Settings(default_budget=config.max_image_bytes, min_free_bytes=config.min_free_bytes,
                            default_health=HealthPolicy(config.settle_seconds, config.deadline_seconds),
                            lock_lifetime_s=config.lock_lifetime_seconds)
        self.reconciler = Reconciler(engine, verifier, self.store, device_id, platform, settings)
        self.probe = HealthProbe(device_id, config.state_dir)
        self.notifier = Notifier()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.inbox = _Inbox()
        self._last_report: dict[str, object] | None = None
        self._progress_at = time.monotonic()
        self.link = MqttLink(
            device_id, BrokerAddress.parse(config.broker, config.mqtt_username, config.mqtt_password),
            online_payload=lambda: self._status(True), offline_payload=self._status(False),
            on_desired=self._on_desired, on_connected=self._on_connected, ca_file=config.ca_file)

    # -- callbacks from the MQTT thread: store and wake, nothing else ---------------------------

    def _on_desired(self, payload: bytes) -> None:
        self.inbox.put(payload)
        self.wake.set()

    def _on_connected(self) -> None:
        self._last_report = None  # a (re)connect republishes the current report, whatever the broker lost
        self.wake.set()

    def _status(self, online: bool) -> bytes:
        """Online, also the connect handshake: the generation this board has (the controller answers
        with a newer document if it holds one)."""
        generation = max(self.store.current.accepted_generation, 0) if online else None
        return protocol.encode(Status(self.device_id, online, round(time.time(), 3), __version__, str(self.platform),
                                      generation))

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        key = self.config.controller_key
        log.info("agent starting", device_id=self.device_id, platform=str(self.platform), version=__version__,
                 broker=str(self.link.broker), state_dir=str(self.config.state_dir),
                 controller_key=key.key_id if key else "none: accepting UNSIGNED desired states")
        self.link.start()
        housekeeping = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        housekeeping.start()
        self.notifier.ready(f"device {self.device_id} ({self.platform})")
        try:
            while not self.stopping.is_set():
                outcome = self._converge()
                now = time.time()
                timeout = self.config.heartbeat_seconds
                if outcome.wake_at is not None:
                    timeout = min(timeout, max(0.05, outcome.wake_at - now))
                self._sleep(timeout)
        finally:
            self.notifier.stopping()
            self.link.stop()
            housekeeping.join(timeout=5)
            log.info("agent stopped; containers keep running")

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    # -- driven by a host instead (the fleet simulator runs hundreds of agents on one thread) ------

    def begin(self) -> None:
        """Connect without threads of its own; the host drives the link's socket and calls pump()."""
        self._due: float | None = 0.0
        self._failures = 0
        self.link.start(own_thread=False)

    def pump(self, now: float) -> None:
        """What one turn of run()'s loop does, once, if a message woke the agent or a deadline came:
        reconcile and report, then note when to look again (backing off after a transient error)."""
        if not self.wake.is_set() and (self._due is None or now < self._due):
            return
        self.wake.clear()
        outcome = self._attempt()
        self._failures = self._failures + 1 if outcome.transient else 0
        backoff = min(60.0, 2.0 ** self._failures) if self._failures else None
        candidates = [t for t in (outcome.wake_at, now + backoff if backoff else None,
                                  now + self.config.heartbeat_seconds) if t is not None]
        self._due = min(candidates)

    def beat(self) -> None:
        """One health message (what the housekeeping thread sends every heartbeat)."""
        try:
            self.link.publish_health(protocol.encode(self.probe.sample(self.engine.ping())))
        except Exception:  # noqa: BLE001 - a failed sample must never stop the caller
            log.exception("health sample failed")

    def end(self) -> None:
        self.link.stop()

    def _sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def _converge(self) -> Outcome:
        """Reconcile; on a transient error back off (exponential, jittered) - but wake at once for a new
        desired document - while everything that runs keeps running."""
        retrying = Retrying(retry=retry_if_result(lambda o: o.transient is not None and not self.stopping.is_set()),
                            wait=wait_exponential(multiplier=1, min=1, max=60) + wait_random(0, 1),
                            sleep=self._sleep, reraise=True)
        return retrying(self._attempt)

    def _attempt(self) -> Outcome:
        self._progress_at = time.monotonic()
        # One state write for the new document and the reconcile it starts (each write is an fsync on an
        # SD card). A crash before it loses nothing: the broker delivers the retained document again at
        # the next connection, and nothing was reported that the disk does not hold.
        try:
            with self.store.batch():
                payload = self.inbox.take()
                if payload is not None:
                    self._intake(payload)
                outcome = self.reconciler.reconcile()
        except Exception as exc:  # noqa: BLE001 - a bug, or a state file that cannot be written (a full SD
            # card), must not take the board's reporting down: report it and back off; what runs keeps running
            log.exception("reconcile failed unexpectedly; backing off")
            outcome = Outcome(self.reconciler.last.plan, f"internal error: {type(exc).__name__}: {exc}")
        self._progress_at = time.monotonic()
        self._report(outcome)
        return outcome

    def _intake(self, payload: bytes) -> None:
        verdict = intake(payload, self.store.current, self.device_id, self.config.controller_key)
        if verdict.outcome == "ignored":
            return
        self.store.update(lambda _: verdict.state)
        if verdict.outcome == "accepted":
            desired = verdict.state.desired
            log.info("desired state accepted", generation=verdict.state.accepted_generation,
                     apps=[a.name for a in desired.apps] if desired else [], ignored_fields=verdict.ignored_fields)
        else:
            log.warning("desired state rejected; nothing changes", reason=verdict.reason)

    def _report(self, outcome: Outcome) -> None:
        report = self.reconciler.report(self.store.current, outcome)
        body = replace(report, ts=None).to_dict()
        if body == self._last_report:
            return
        if not self.link.publish_reported(protocol.encode(report)):
            return  # not connected yet: the connection callback wakes the loop to send the report then current
        self._last_report = body
        phases = {a.name: a.phase.value for a in report.apps}
        log.info("reported", generation=report.generation, apps=phases, error=report.error)
        self.notifier.status(f"generation {report.generation}: {phases}")

    # -- housekeeping thread: health messages and the watchdog ---------------------------------

    def _housekeeping(self) -> None:
        interval = self.config.heartbeat_seconds
        if self.notifier.watchdog_s:
            interval = min(interval, self.notifier.watchdog_s / 2)
        next_health = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - self._progress_at < STUCK_AFTER_S:
                self.notifier.watchdog()
            if now >= next_health:
                next_health = now + self.config.heartbeat_seconds
                self.beat()
            self.stopping.wait(min(interval, max(0.1, next_health - time.monotonic())))
