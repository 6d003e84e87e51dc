"""MQTT -> validated messages -> store, in batches.

The broker's network thread only enqueues (topic, payload, retained, arrival time). One writer thread
drains the queue, validates every message at the edge (`classify`, pure) and writes what survives in
one transaction per batch: thousands of messages per fsync, in arrival order. What does not survive is
counted by reason and dropped; nothing a device sends can stop the writer.

Drop reasons:
    oversized   payload over protocol.MAX_PAYLOAD_BYTES (checked before parsing)
    bad_topic   not tinyfleet/v1/devices/<valid id>/<reported|status|health>
    malformed   not UTF-8 / JSON / the contract, wrong kind for the channel, unknown major version
    forged      the body's device_id is not the device in the topic
    overload    the queue is full: the controller cannot keep up (a sign to scale, not to crash)
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from tinyfleet.controller.metrics import Metrics
from tinyfleet.controller.store import Incoming, Store
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import MAX_PAYLOAD_BYTES, decode
from tinyfleet.protocol.errors import PayloadTooLarge, ProtocolError
from tinyfleet.protocol.messages import Health, ReportedState, Status
from tinyfleet.protocol.topics import Channel

Ack = Callable[[], None]  # tells the broker a QoS 1 delivery is ours now (see controller.mqtt)
log = structlog.get_logger("controller.ingest")
EXPECT = {Channel.REPORTED: ReportedState, Channel.STATUS: Status, Channel.HEALTH: Health}
Message = ReportedState | Status | Health


@dataclass(frozen=True)
class Dropped:
    reason: str
    detail: str


CLEARED = None  # an empty retained payload: the broker deleting a retained message, not a message


def classify(topic: str, payload: bytes) -> Message | Dropped | None:
    """Validate one delivery. Returns the message, a Dropped saying why, or CLEARED."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Dropped("oversized", f"{len(payload)} bytes on {topic[:120]}")
    try:
        device_id, channel = topics.parse(topic)
    except ProtocolError as exc:
        return Dropped("bad_topic", str(exc))
    if channel not in EXPECT:
        return Dropped("bad_topic", f"{topic}: the controller does not read the {channel.value} channel")
    if not payload:
        return CLEARED
    try:
        message = decode(payload, EXPECT[channel])
    except PayloadTooLarge as exc:
        return Dropped("oversized", str(exc))
    except ProtocolError as exc:
        return Dropped("malformed", f"{topic}: {exc}")
    if message.device_id != device_id:  # type: ignore[union-attr]
        return Dropped("forged", f"{topic} carries a message for {message.device_id!r}")  # type: ignore[union-attr]
    return message  # type: ignore[return-value]


class Ingest:
    def __init__(self, store: Store, metrics: Metrics, stale_after: float, *,
                 on_written: Callable[[bool], None] = lambda state_changed: None,
                 on_hello: Callable[[dict[str, int]], None] = lambda announced: None,
                 clock: Callable[[], float] = time.time, max_batch: int = 5000, max_queue: int = 1_000_000) -> None:
        self.store = store
        self.metrics = metrics
        self.stale_after = stale_after
        self.on_written = on_written
        self.on_hello = on_hello  # after the write: {device: generation} that live agents announced on connect
        self.clock = clock
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue[tuple[str, bytes, bool, float, Ack]] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._last_drop_log: dict[str, float] = {}

    def submit(self, topic: str, payload: bytes, retained: bool, ack: Ack = lambda: None) -> None:
        """Called on the broker's network thread: enqueue and return. `ack` is called once the message is
        written (or dropped as invalid): only then may the broker forget it."""
        if self._queue.qsize() >= self.max_queue:
            self.metrics.dropped.labels("overload").inc()
            ack()
            return
        self._queue.put((topic, payload, retained, self.clock(), ack))
        self._idle.clear()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.drain(wait=0.2)
        deadline = time.monotonic() + 10  # bounded: a broken database must not hang the shutdown
        while not self._queue.empty() and time.monotonic() < deadline:
            self.drain(wait=0)  # what arrived before stop is written, not lost

    def drain(self, wait: float = 0.0) -> int:
        """Write one batch (waiting up to `wait` seconds for the first message). Returns messages written."""
        try:
            first = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            self._idle.set()
            return 0
        items = [first]
        while len(items) < self.max_batch:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.metrics.queue_depth.set(self._queue.qsize())
        batch = []
        state_changed = False
        for topic, payload, retained, _, _ in items:
            verdict = classify(topic, payload)
            if verdict is CLEARED:
                continue
            if isinstance(verdict, Dropped):
                self.metrics.dropped.labels(verdict.reason).inc()
                self._log_drop(verdict)
                continue
            batch.append(Incoming(verdict, live=not retained))
            self.metrics.ingested.labels(verdict.kind).inc()
            state_changed = state_changed or not isinstance(verdict, Health)
        if batch:
            started = time.perf_counter()
            try:
                self.store.record(batch, now=items[-1][3], stale_after=self.stale_after)
            except Exception:
                # The batch was validated, so this is the database failing; keep the messages and retry
                # rather than lose them.
                log.exception("writing a batch failed; retrying", size=len(batch))
                for item in items:
                    self._queue.put(item)
                time.sleep(0.5)
                return 0
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for item in items:
            item[4]()
        if batch:
            self.on_written(state_changed)
            announced = {i.message.device_id: i.message.generation for i in batch if i.live
                         and isinstance(i.message, Status) and i.message.online and i.message.generation is not None}
            if announced:
                self.on_hello(announced)
        if self._queue.empty():
            self._idle.set()
        return len(batch)

    def _log_drop(self, dropped: Dropped) -> None:
        # At most one line per reason per second: a device spraying garbage must not flood the log.
        now = time.monotonic()
        if now - self._last_drop_log.get(dropped.reason, -2.0) >= 1.0:
            self._last_drop_log[dropped.reason] = now
            log.warning("message dropped", reason=dropped.reason, detail=dropped.detail[:300])

    def wait_idle(self, timeout: float) -> bool:
        """True once everything submitted so far has been written (for tests and benchmarks)."""
        return self._idle.wait(timeout)
